import json
import math

import numpy as np
import pytest

from fineline.analysis import records
import analysis_fixtures as fx


def test_run_directory_gives_one_series_with_training_loss(tmp_path):
  run = fx.write_run(tmp_path / "run-a", fx.make_records(model="tiny"))
  (series,), notes = records.load_series([run])
  assert series.name == "tiny" and series.source == "run-a"
  np.testing.assert_allclose(series.tokens, [s * fx.TOKENS_PER_STEP for s in fx.STEPS])
  assert series.loss_source == "training loss (metrics.jsonl)"
  # Mean of the 5 logged steps up to the checkpoint (logged every 20 steps).
  expected = np.mean([fx.loss_at(fx.STEPS[0] - 20 * i) for i in range(5)])
  assert series.loss[0] == pytest.approx(expected)
  assert sorted(series.tasks) == ["arith_mc", "copy_mc", "facts_gen", "grammar_mc"]
  assert series.groups["facts"] == ["facts_gen"]
  assert notes == []


def test_primary_metric_direction_and_chance(tmp_path):
  record = {"model": "m", "step": 1, "tokens": 1e9, "tasks": {
      "hellaswag": {"acc": 0.30, "acc_norm": 0.35, "acc_norm_stderr": 0.01},
      "gsm8k": {"exact_match": 0.02, "exact_match_stderr": 0.004, "capability": "math"},
      "wikitext": {"perplexity": 20.0, "perplexity_stderr": 1.0},
      "mystery": {"acc": 0.6},
  }}
  path = tmp_path / "one.json"
  path.write_text(json.dumps(record))
  (series,), notes = records.load_series([path])
  hs, gsm, wiki = (series.tasks[t] for t in ("hellaswag", "gsm8k", "wikitext"))
  assert (hs.metric, hs.chance, hs.capability) == ("acc_norm", 0.25, "commonsense_reasoning")
  assert hs.normalized[0] == pytest.approx((0.35 - 0.25) / 0.75)
  assert hs.normalized_stderr[0] == pytest.approx(0.01 / 0.75)
  assert (gsm.metric, gsm.chance, gsm.capability) == ("exact_match", 0.0, "math")
  assert wiki.metric == "perplexity" and not wiki.higher_is_better and wiki.chance is None
  value, err = wiki.oriented()
  assert value[0] == pytest.approx(-math.log(20.0)) and err[0] == pytest.approx(0.05)
  assert np.isnan(wiki.normalized[0])
  # The language-modelling task stands in for the missing training loss.
  assert series.loss_source == "wikitext log-perplexity"
  assert series.loss[0] == pytest.approx(math.log(20.0))
  assert any("mystery" in n and "chance" in n for n in notes)


def test_records_lacking_tokens_take_them_from_training_metrics(tmp_path):
  recs = fx.make_records()
  recs[3]["tokens"] = None
  run = fx.write_run(tmp_path / "run", recs)
  (series,), notes = records.load_series([run])
  assert series.tokens[3] == fx.STEPS[3] * fx.TOKENS_PER_STEP
  assert any("no token count" in n and "metrics.jsonl" in n for n in notes)


def test_released_series_known_only_by_tokens(tmp_path):
  series_dir = tmp_path / "amber"
  series_dir.mkdir()
  for i, rec in enumerate(fx.make_records(model="Amber-7B", with_step=False)):
    rec["checkpoint"] = f"LLM360/Amber@ckpt_{i:03d}"
    (series_dir / f"ckpt_{9 - i:03d}.json").write_text(json.dumps(rec))  # out of order
  (series,), notes = records.load_series([series_dir])
  assert series.name == "Amber-7B" and len(series.tokens) == 10
  assert np.all(np.diff(series.tokens) > 0)
  assert series.steps == [None] * 10
  assert series.checkpoints[0] == "LLM360/Amber@ckpt_000"
  assert series.loss_source is None


def test_several_series_from_one_jsonl_and_a_list_file(tmp_path):
  lines = fx.make_records(model="small") + fx.make_records(model="large", seed=1)
  (tmp_path / "both.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
  (tmp_path / "more.json").write_text(json.dumps(fx.make_records(model="xl", seed=2)))
  series, _ = records.load_series([tmp_path / "both.jsonl", tmp_path / "more.json"])
  assert [s.name for s in series] == ["large", "small", "xl"]


def test_gaps_are_nan_and_noted(tmp_path):
  recs = fx.make_records()
  for rec in recs[1::3]:
    del rec["tasks"]["facts_gen"]
  path = tmp_path / "gappy.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in recs))
  (series,), notes = records.load_series([path])
  assert np.isnan(series.tasks["facts_gen"].score).sum() == 3
  assert any("facts_gen (3/10)" in n for n in notes)


def test_bad_lines_and_records_are_skipped_with_a_note(tmp_path):
  good = fx.make_records()[:2]
  path = tmp_path / "mixed.jsonl"
  path.write_text(json.dumps(good[0]) + "\n{not json\n" + json.dumps({"model": "x"}) + "\n"
                  + json.dumps(dict(good[1], tokens="many")) + "\n" + json.dumps(good[1]))
  (series,), notes = records.load_series([path])
  assert len(series.tokens) == 2
  assert any("mixed.jsonl:2: not valid JSON" in n for n in notes)
  assert any("mixed.jsonl:3: no 'tasks'" in n for n in notes)
  assert any("mixed.jsonl:4: 'tokens' is 'many'" in n for n in notes)


def test_no_usable_records_is_an_error_naming_the_input(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing"):
    records.load_series([tmp_path / "missing"])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="holds no result records"):
    records.load_series([empty])
  (tmp_path / "junk.jsonl").write_bytes(b"\xff\xfe\x00garbage")
  with pytest.raises(ValueError, match="no usable result records.*junk.jsonl: unreadable"):
    records.load_series([tmp_path / "junk.jsonl"])


def test_missing_stderr_comes_from_n_and_step_zero_is_kept(tmp_path):
  recs = fx.make_records()
  for rec in recs:
    del rec["tasks"]["copy_mc"]["acc_stderr"]
  recs[0].update(step=0, tokens=0.0)
  path = tmp_path / "r.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in recs))
  (series,), _ = records.load_series([path])
  track = series.tasks["copy_mc"]
  p, n = track.score[3], recs[3]["tasks"]["copy_mc"]["n"]
  assert track.stderr[3] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
  assert series.tokens[0] == 0.0


def test_resumed_run_metrics_count_the_later_line_and_tokens_scale(tmp_path):
  recs = fx.make_records()[:3]
  recs[1]["tokens"] = None
  run = fx.write_run(tmp_path / "run", recs, log_every=30)  # step 400 is not logged
  with (run / "metrics.jsonl").open("a") as f:  # a restart replays step 180 with a new loss
    f.write(json.dumps({"step": 180, "loss": 9.0, "tokens": 180 * fx.TOKENS_PER_STEP}) + "\n")
  (series,), _ = records.load_series([run])
  expected = np.mean([fx.loss_at(s) for s in (60, 90, 120, 150)] + [9.0])
  assert series.loss[0] == pytest.approx(expected)
  assert series.tokens[1] == pytest.approx(400 * fx.TOKENS_PER_STEP)


def test_training_loss_wins_over_record_loss_even_when_the_first_checkpoint_lacks_it(tmp_path):
  recs = fx.make_records()
  for rec in recs:
    rec["loss"] = 7.0
  recs[0].update(step=10, tokens=10.0 * fx.TOKENS_PER_STEP)  # before the first logged step
  (series,), _ = records.load_series([fx.write_run(tmp_path / "run", recs)])
  assert series.loss_source == "training loss (metrics.jsonl)"
  assert np.isnan(series.loss[0]) and series.loss[1] == pytest.approx(
      np.mean([fx.loss_at(400 - 20 * i) for i in range(5)]))


def test_the_records_declared_primary_metric_wins(tmp_path):
  record = {"model": "m", "tokens": 1e9, "tasks": {
      "winogrande": {"acc": 0.6, "acc_norm": 0.55, "primary_metric": "acc"},
      "tiny_lm": {"acc": 0.2, "bits_per_byte": 1.1, "primary_metric": "bits_per_byte",
                  "capability": "language_modeling", "chance": None},
      "odd": {"acc": 0.3, "acc_norm": 0.35, "primary_metric": "f1"},  # not reported: default
  }}
  (tmp_path / "r.json").write_text(json.dumps(record))
  (series,), _ = records.load_series([tmp_path / "r.json"])
  assert series.tasks["winogrande"].metric == "acc"
  assert series.tasks["tiny_lm"].metric == "bits_per_byte"
  assert series.tasks["tiny_lm"].chance is None and not series.tasks["tiny_lm"].higher_is_better
  assert series.tasks["odd"].metric == "acc_norm"
  assert series.loss_source == "tiny_lm bits_per_byte" and series.loss[0] == 1.1


def test_failed_tasks_in_a_record_are_noted(tmp_path):
  recs = fx.make_records()[:3]
  recs[1]["errors"] = {"arith_mc": "out of memory"}
  del recs[1]["tasks"]["arith_mc"]
  recs.append({"model": "demo", "step": 9, "tokens": 1.0, "tasks": {}, "errors": {"x": "boom"}})
  path = tmp_path / "r.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in recs))
  (series,), notes = records.load_series([path])
  assert len(series.tokens) == 3
  assert any("r.jsonl:2: tasks that failed there: arith_mc" in n for n in notes)
  assert any("r.jsonl:4: no scored task (errors: ['x'])" in n for n in notes)
