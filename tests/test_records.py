"""The result record shared by every evaluation path."""

from fineline.evaluation import records


def test_record_lists_errors_only_when_a_task_failed():
  ok = records.make_record({"piqa": {"acc": 0.5}}, model="m", checkpoint="c", step=1, tokens=2)
  assert ok == {"model": "m", "checkpoint": "c", "step": 1, "tokens": 2,
                "tasks": {"piqa": {"acc": 0.5}}}
  failed = records.make_record({}, model="m", checkpoint="c", step=1, tokens=2,
                               errors={"piqa": "OSError: gone"})
  assert failed["errors"] == {"piqa": "OSError: gone"}
