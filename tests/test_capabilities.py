import pytest

from fineline import capabilities
from fineline.analysis import records


def test_families_cover_subtasks_but_not_lookalikes():
  assert capabilities.lookup("mmlu_anatomy") == (capabilities.EXAMINATION, 0.25)
  assert capabilities.lookup("arc_challenge") == (capabilities.COMMONSENSE, 0.25)
  assert capabilities.lookup("humaneval") == (capabilities.CODE, 0.0)
  assert capabilities.lookup("mathqa") is None  # not MATH's family
  with pytest.raises(KeyError, match="fineline/capabilities.py"):
    capabilities.capability("nope")


def test_every_row_names_a_known_group_and_a_probability():
  for task, (group, chance) in capabilities.TASKS.items():
    assert group in capabilities.GROUPS, task
    assert chance is None or 0.0 <= chance < 1.0, task


def test_analysis_falls_back_on_the_same_table(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_text('{"model": "m", "tokens": 1e9, "tasks": {"cmmlu_law": {"acc": 0.3}, '
                  '"mbpp": {"exact_match": 0.1}}}\n')
  (series,), _ = records.load_series([path])
  assert series.tasks["cmmlu_law"].capability == capabilities.EXAMINATION
  assert series.tasks["cmmlu_law"].chance == 0.25
  assert series.tasks["mbpp"].capability == capabilities.CODE
