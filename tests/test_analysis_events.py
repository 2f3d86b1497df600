import json
import math

import pytest

import analysis_fixtures as fx
from fineline import cli
from fineline.analysis import events

STEPS = [100 * i for i in range(1, 31)]
DROP_STEP = 1550  # between the checkpoints at 1500 and 1600


def _rows(rates, losses=None):
  return [{"step": 10 * i, "tokens": 10 * i * 1e6, "learning_rate": r,
           **({"loss": losses[i]} if losses else {})} for i, r in enumerate(rates)]


def test_rate_drops_are_found_and_a_cosine_decay_is_not():
  steps = [3e-4] * 10 + [3e-5] * 10
  (drop,) = events.from_metrics(_rows(steps))
  assert drop["kind"] == "lr_drop" and drop["step"] == 100 and drop["tokens"] == 100e6
  cosine = [3e-4 * (0.55 + 0.45 * math.cos(math.pi * i / 200)) for i in range(200)]
  assert events.from_metrics(_rows(cosine)) == []


def test_a_loss_spike_is_one_event():
  losses = [3.0 - 0.001 * i for i in range(60)]
  losses[40] = losses[41] = 6.0
  found = events.from_metrics(_rows([3e-4] * 60, losses))
  assert [(e["kind"], e["step"]) for e in found] == [("loss_spike", 400)]


def test_schedule_file_is_read_and_bad_entries_are_named(tmp_path):
  path = tmp_path / "deepseek.json"
  path.write_text('[{"tokens": 1.8e12, "label": "lr x0.1"}, {"tokens": 1.6e12}]')
  assert [e["tokens"] for e in events.read_schedule(path)] == [1.6e12, 1.8e12]
  path.write_text('[{"tokens": 1.6e12}, {"tokens": "soon"}]')
  with pytest.raises(ValueError, match=r"deepseek.json: entry 1 needs a positive number"):
    events.read_schedule(path)
  with pytest.raises(FileNotFoundError, match="nope.json"):
    events.read_schedule(tmp_path / "nope.json")


def _kinked_records():
  # Every group's score rises faster once the rate drops (an annealing gain).
  t_drop = DROP_STEP * fx.TOKENS_PER_STEP
  t0 = STEPS[0] * fx.TOKENS_PER_STEP
  curve = lambda t: (0.3 + 0.15 * math.log10(t / t0)
                     + 1.2 * max(0.0, math.log10(t / t_drop)))
  flat = lambda t: 0.3 + 0.15 * math.log10(t / t0)
  return fx.make_records(tasks={"kinked": (curve, "annealed", 0.25, "acc"),
                                "steady": (flat, "unmoved", 0.25, "acc")},
                         steps=STEPS, n=20000)


def _tests(report_dir):
  analysis = json.loads((report_dir / "analysis.json").read_text())
  return {t["capability"]: t for t in analysis["series"]["demo"]["studies"]["event_tests"]}


def test_slope_change_at_a_rate_drop_read_from_metrics(tmp_path):
  run = fx.write_run(tmp_path / "run", _kinked_records(), log_every=50,
                     learning_rate=lambda step: 3e-4 if step < DROP_STEP else 3e-5)
  assert cli.main(["analyze", "--results", str(run), "--output", str(tmp_path / "rep")]) == 0
  tests = _tests(tmp_path / "rep")
  assert tests["annealed"]["tokens"] == DROP_STEP * fx.TOKENS_PER_STEP  # logged at the drop
  assert tests["annealed"]["significant"] and tests["annealed"]["change"] > 0
  assert tests["annealed"]["result"].startswith("slope changes at the event")
  assert not tests["unmoved"]["significant"]
  assert "Slope change at each learning-rate drop" in (tmp_path / "rep" / "report.md").read_text()


def test_slope_change_at_a_rate_drop_from_a_schedule_file(tmp_path):
  records = tmp_path / "released.jsonl"
  records.write_text("\n".join(json.dumps(r) for r in _kinked_records()))
  schedule = tmp_path / "schedule.json"
  schedule.write_text(json.dumps([{"tokens": DROP_STEP * fx.TOKENS_PER_STEP,
                                   "label": "lr x0.316"}]))
  assert cli.main(["analyze", "--results", str(records), "--output", str(tmp_path / "rep"),
                   "--schedule", str(schedule)]) == 0
  tests = _tests(tmp_path / "rep")
  assert tests["annealed"]["significant"] and tests["annealed"]["event"] == "lr x0.316"
  assert not tests["unmoved"]["significant"]
