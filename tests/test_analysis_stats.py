import collections

import numpy as np
import pytest

from fineline.analysis import stats

TOKENS = np.geomspace(1e9, 1e11, 10)


def test_correlation_of_a_monotone_pair_is_one_in_rank():
  x = np.arange(1.0, 9.0)
  result = stats.correlation(x, np.exp(x))
  assert result["spearman"] == pytest.approx(1.0)
  assert result["pearson"] < 0.95  # not linear: Pearson sees the difference
  assert stats.correlation(x, -x ** 3)["spearman"] == pytest.approx(-1.0)


def test_correlation_skips_gaps_and_refuses_too_few_points():
  x = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
  y = np.array([2.0, 4.0, 6.0, np.nan, 10.0])
  assert stats.correlation(x, y)["n"] == 3
  assert stats.correlation(x[:2], y[:2]) is None
  assert stats.correlation(x, np.ones(5)) is None  # constant: undefined


def test_fit_recovers_the_saturating_curve_it_was_built_from():
  rng = np.random.default_rng(1)
  t_ref = TOKENS[-1]
  truth = 0.7 - 0.05 * (TOKENS / t_ref) ** -0.5
  y = truth + rng.normal(0, 0.003, len(TOKENS))
  fit = stats.fit_saturating(TOKENS, y, np.full(len(TOKENS), 0.003))
  assert fit["usable"] and fit["r2"] > 0.98
  assert fit["a"] == pytest.approx(0.7, abs=0.02)
  assert fit["c"] == pytest.approx(0.5, abs=0.1)
  assert stats.predict(fit, 2 * t_ref) == pytest.approx(0.7 - 0.05 * 2 ** -0.5, abs=0.01)
  level = 0.69
  reach = stats.tokens_to_reach(fit, level)
  assert stats.predict(fit, reach) == pytest.approx(level, abs=1e-9)
  assert stats.tokens_to_reach(fit, fit["a"] + 0.01) is None  # above the asymptote


def test_fit_is_refused_when_poor_or_short():
  rng = np.random.default_rng(2)
  noise = stats.fit_saturating(TOKENS, rng.normal(0.5, 0.05, len(TOKENS)))
  assert not noise["usable"] and "R²" in noise["reason"]
  short = stats.fit_saturating(TOKENS[:4], [0.1, 0.2, 0.3, 0.35])
  assert not short["usable"] and "needs 5" in short["reason"]


def test_slope_test_recovers_the_slope_per_decade():
  y = 0.2 + 0.1 * np.log10(TOKENS / TOKENS[0])
  result = stats.slope_test(TOKENS, y + np.array([1, -1] * 5) * 1e-3, np.full(10, 1e-3))
  assert result["slope"] == pytest.approx(0.1, abs=0.005)
  assert result["t"] > 10


def _phase(y, sigma, chance=0.25, **kw):
  return stats.classify_phase(TOKENS, y, sigma, chance, **kw)["phase"]


def _phases_over_draws(truth, sigma, draws=60):
  # The tests are z = 2 tests: a few percent of noisy draws are misread by design, so
  # judge the rate over many draws rather than one chosen draw.
  return collections.Counter(
      _phase(truth + np.random.default_rng(seed).normal(0, sigma, len(truth)),
             np.full(len(truth), sigma)) for seed in range(draws))


def test_phase_of_a_saturated_task_over_many_draws():
  counts = _phases_over_draws(0.8 - 0.5 * (TOKENS / TOKENS[0]) ** -2.0, 0.005)
  assert counts["saturated"] >= 0.85 * 60, counts


def test_phase_of_a_task_at_chance_over_many_draws():
  counts = _phases_over_draws(np.full(10, 0.25), 0.01)
  assert counts["at_chance"] >= 0.85 * 60, counts


def test_phase_of_a_rising_task():
  rng = np.random.default_rng(4)
  y = 0.3 + 0.1 * np.log10(TOKENS / TOKENS[0]) + rng.normal(0, 0.005, 10)
  assert _phase(y, np.full(10, 0.005)) == "rising"


def test_phase_flags_a_regression_from_the_peak():
  y = np.array([0.3, 0.4, 0.5, 0.6, 0.62, 0.63, 0.63, 0.64, 0.52, 0.53])
  assert _phase(y, np.full(10, 0.01)) == "regressing"
  decline = np.linspace(0.7, 0.6, 10)
  assert _phase(decline, np.full(10, 0.005)) == "regressing"


def test_phase_weighs_the_stderr():
  y = 0.5 + 0.02 * np.log10(TOKENS / TOKENS[0])
  assert _phase(y, np.full(10, 0.001)) == "rising"
  assert _phase(y, np.full(10, 0.05)) == "saturated"  # the same rise is within the noise


def test_phase_needs_three_points_and_ignores_gaps():
  assert stats.classify_phase(TOKENS[:2], [0.3, 0.4], None, 0.25)["phase"] is None
  y = 0.3 + 0.1 * np.log10(TOKENS / TOKENS[0])
  y[[2, 5, 8]] = np.nan
  assert _phase(y, np.full(10, 0.002)) == "rising"


def test_phase_without_stderr_uses_the_scatter():
  y = 0.3 + 0.1 * np.log10(TOKENS / TOKENS[0]) + np.array([1, -1] * 5) * 0.002
  assert _phase(y, None) == "rising"


def test_leave_one_task_out_predicts_related_tasks_and_not_unrelated_ones():
  rng = np.random.default_rng(5)
  base = 1 - (TOKENS / TOKENS[0]) ** -0.7
  related = {f"t{i}": 0.1 + (0.5 + 0.2 * i) * base + rng.normal(0, 0.01, 10) for i in range(3)}
  result = stats.leave_one_task_out(related)
  assert all(r["r2"] > 0.9 for r in result.values()), result
  result = stats.leave_one_task_out(dict(related, noise=rng.normal(0.3, 0.05, 10)))
  assert result["noise"]["r2"] < 0.3
  assert stats.leave_one_task_out({"alone": base})["alone"] is None


def test_similarity_of_the_same_shape_on_different_token_ranges():
  t_small, t_big = np.geomspace(1e9, 1e11, 8), np.geomspace(3e9, 3e11, 12)
  curve = lambda t: 0.8 - 0.6 * (t / 1e9) ** -0.4
  same = stats.trajectory_similarity(t_small, curve(t_small), t_big, 0.9 * curve(t_big))
  assert same["pearson"] > 0.99 and same["spearman"] == pytest.approx(1.0)
  assert same["tokens_from"] == pytest.approx(3e9) and same["tokens_to"] == pytest.approx(1e11)
  opposite = stats.trajectory_similarity(t_small, curve(t_small), t_big, -curve(t_big))
  assert opposite["pearson"] < -0.99
  assert stats.trajectory_similarity(t_small, curve(t_small), t_small * 1e3,
                                     curve(t_small)) is None  # no common range
