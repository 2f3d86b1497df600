import json

import pytest

import analysis_fixtures as fx
from fineline.analysis import findings
from fineline.analysis import records


def _analyze(tmp_path, recs, **kw):
  run = fx.write_run(tmp_path / "run", recs)
  series, notes = records.load_series([run])
  return findings.analyze(series, notes, **kw)


def test_known_dynamics_get_their_phases_and_the_verdict_says_so(tmp_path):
  result = _analyze(tmp_path, fx.make_records())
  tasks = result["series"]["demo"]["tasks"]
  assert {t: r["phase"] for t, r in tasks.items()} == {
      "copy_mc": "saturated", "arith_mc": "at_chance", "facts_gen": "rising",
      "grammar_mc": "regressing"}
  verdict = result["series"]["demo"]["verdict"]
  assert verdict["improving"] == ["facts"] and verdict["stalled"] == ["copying"]
  assert verdict["regressed"] == ["grammar"] and verdict["at_chance"] == ["arithmetic"]
  assert any(w.startswith("facts_gen (rising") for w in verdict["watch"])
  assert any(w.startswith("grammar_mc (regressing") for w in verdict["watch"])
  assert result["series"]["demo"]["groups"]["grammar"]["phase"] == "regressing"


def test_loss_correlation_and_fit_of_a_task(tmp_path):
  result = _analyze(tmp_path, fx.make_records(), budget_tokens=3e9)
  facts = result["series"]["demo"]["tasks"]["facts_gen"]
  # Loss falls while the score rises: rank correlation near -1.
  assert facts["loss_spearman"] < -0.9 and facts["loss_pearson"] < -0.9
  copy = result["series"]["demo"]["tasks"]["copy_mc"]
  fit = copy["fit"]
  assert fit["usable"] and fit["r2"] > 0.95
  assert fit["a"] == pytest.approx((0.9 - 0.25) / 0.75, abs=0.02)  # normalised asymptote
  assert fit["budget_tokens"] == 3e9
  assert fit["predicted_at_budget"] == pytest.approx(fit["a"], abs=0.02)
  assert fit["target"] == pytest.approx(0.9 * fit["a"])
  assert fit["tokens_to_target"] < fx.STEPS[-1] * fx.TOKENS_PER_STEP  # already reached


def test_fits_refuse_to_extrapolate_when_they_would_guess(tmp_path):
  result = _analyze(tmp_path, fx.make_records())
  tasks = result["series"]["demo"]["tasks"]
  assert tasks["arith_mc"]["fit"]["predicted_at_budget"] is None
  assert "R²" in tasks["arith_mc"]["fit"]["reason"]
  # A straight line in log tokens has no identified asymptote: no tokens-to-target.
  facts = tasks["facts_gen"]["fit"]
  assert facts["tokens_to_target"] is None and "asymptote" in facts["reason"]
  far = _analyze(tmp_path / "far", fx.make_records(), budget_tokens=1e15)
  assert "budget beyond" in far["series"]["demo"]["tasks"]["copy_mc"]["fit"]["reason"]


def test_default_budget_is_twice_the_last_checkpoint(tmp_path):
  result = _analyze(tmp_path, fx.make_records())
  assert result["series"]["demo"]["budget_tokens"] == 2 * fx.STEPS[-1] * fx.TOKENS_PER_STEP


def test_one_checkpoint_gives_no_dynamics_and_says_why(tmp_path):
  result = _analyze(tmp_path, fx.make_records()[:1])
  entry = result["series"]["demo"]
  assert all(r["phase"] is None and r["fit"] is None for r in entry["tasks"].values())
  assert "no verdict" in entry["verdict"]["text"][0]
  assert any("tables only" in n for n in result["notes"])


def test_similarity_across_sizes(tmp_path):
  series = []
  sizes = (("small", fx.TOKENS_PER_STEP), ("big", 2 * fx.TOKENS_PER_STEP))
  for i, (model, tps) in enumerate(sizes):
    path = tmp_path / f"{model}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in fx.make_records(
        model=model, seed=i, tokens_per_step=tps)))
    series += records.load_series([path])[0]
  result = findings.analyze(series, [])
  pairs = {s.get("task") or s["capability"]: s for s in result["similarity"]}
  assert pairs["facts_gen"]["pearson"] > 0.95 and pairs["facts_gen"]["level"] == "task"
  assert pairs["facts"]["level"] == "group" and pairs["facts"]["pearson"] > 0.95
  assert {pairs["copy_mc"]["a"], pairs["copy_mc"]["b"]} == {"small", "big"}
