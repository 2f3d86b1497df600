"""The report's methods text, written from the constants it describes so the two cannot drift."""

from __future__ import annotations

from fineline.analysis import dynamics as d
from fineline.analysis import events as ev
from fineline.analysis import findings as f
from fineline.analysis import forecast as fc
from fineline.analysis import records as r
from fineline.analysis import scaling as sc
from fineline.analysis import stats as st


def _pct(x: float) -> str:
  return f"{x:.0%}"


def methods(settings: dict) -> list[str]:
  """One paragraph per method; `settings` is analysis.json's settings (window, fit R²)."""
  window, min_r2 = settings["window"], settings["fit_min_r2"]
  return [
      "Primary metric per task: the record's primary_metric when it names a reported number; "
      f"else {', else '.join(r.PRIMARY_METRICS)} (lower is better for "
      f"{', '.join(r.LOWER_IS_BETTER)}; negated, perplexity as -log, where a direction "
      "matters). Capability group and chance level: the record's own, else the table in "
      "fineline/capabilities.py. Normalised score = (score - chance) / (1 - chance); "
      "capability aggregate = mean normalised score of the group's tasks, only at "
      "checkpoints where all of them were evaluated, stderr propagated.",
      f"Training loss per checkpoint: mean of the last {r.LOSS_WINDOW_STEPS} logged training "
      "losses at or before its step (metrics.jsonl); else the record's own loss; else a "
      "language-modelling task's bits per byte or log-perplexity. The source used is named "
      "per series.",
      "Loss correlation: Spearman and Pearson (scipy.stats) between the training loss and the "
      "task's score over the checkpoints where both are known (3 or more).",
      f"Phase: over the last {window} checkpoints, weighted least-squares slope of the score "
      "against log10(tokens) with weights 1/stderr², its error propagated (inflated by "
      f"sqrt(χ²/dof) when the points scatter more). At chance: the recent weighted mean is "
      f"within {st.PHASE_Z:g} stderr of chance and no earlier point rose significantly above "
      f"it. Regressing: slope t < -{st.PHASE_Z:g}, or the last two points {st.DROP_Z:g} "
      f"combined stderr below the earlier peak. Rising: slope t > {st.PHASE_Z:g}. Saturated: "
      "otherwise. Groups are judged the same way on their aggregate (chance = 0), else by "
      "their most telling task phase.",
      "Saturating fit: score = a - b·(tokens/t_ref)^(-c), b ≥ 0, 0.01 ≤ c ≤ 3, "
      "scipy.optimize.curve_fit weighted by stderr, on normalised scores (a ≤ 1). Predictions "
      f"need {st.FIT_MIN_POINTS}+ points and R² ≥ {min_r2:g}, stay within "
      f"{f.MAX_EXTRAPOLATION:g}x the last checkpoint's tokens and, for the default target "
      "(90% of the asymptote), need an identified asymptote; otherwise they are refused with "
      "the reason.",
      f"Similarity across series: trajectories interpolated in log(tokens) (or log FLOPs = "
      f"{sc.FLOPS_PER_PARAMETER_TOKEN:g}·parameters·tokens, when both sizes are known) onto "
      f"{st.SIMILARITY_POINTS} log-spaced points over the range both cover; Pearson and "
      "Spearman correlation of the resampled values.",
      "Task-to-task prediction: least squares of a task's normalised curve on the mean of its "
      "group's other tasks. Within a series, R² is leave-one-task-out and "
      f"leave-one-checkpoint-out (PRESS), with {st.LOTO_MIN_POINTS}+ shared checkpoints; "
      "across series, the line fitted on one series predicts the task in another.",
      "Lead-lag: the two groups' aggregates on a uniform token grid (median checkpoint "
      "spacing), differenced, cross-correlated at lags up to "
      f"{d.LEAD_LAG_SHARE:.2g} of the grid's steps either way; the peak's lag × step is the "
      f"lead (positive: the first group rises first). {_pct(d.INTERVAL)} interval: peak lags of {d.LEAD_BOOTSTRAP} "
      f"curves redrawn from their stderrs; p: peak correlation against "
      f"{d.LEAD_PERMUTATIONS} shuffles of the second group's differences. Needs "
      f"{d.LEAD_MIN_POINTS}+ shared checkpoints.",
      "Emergence: a broken stick in log10(tokens), flat then rising, fitted by weighted least "
      "squares up to the first checkpoint halfway from chance to the best score; the kink is "
      f"the emergence point; its {_pct(d.INTERVAL)} interval holds every onset whose χ² is "
      f"within the χ²(1) {_pct(d.INTERVAL)} quantile of the best (likelihood ratio). A task "
      f"has emerged when its last two scores are {d.EMERGENCE_Z:g}+ stderr above chance.",
      f"Training events: a logged learning rate below {ev.LR_DROP_RATIO:g} of the previous "
      f"one after {ev.LR_DROP_SPAN} steady logged rates is a rate drop (a cosine's smooth "
      "decay is not); "
      f"a loss {ev.LOSS_SPIKE_MADS:g} median deviations above the median of the previous "
      f"{ev.LOSS_WINDOW} logged losses is a spike; --schedule adds published events. At each "
      f"rate drop, over up to {d.EVENT_WINDOW} checkpoints each side, each group's aggregate "
      "is fitted with one slope in log10(tokens) and with a slope that changes at the event "
      f"(continuous kink); the change's t-test decides, significant at p < {d.EVENT_ALPHA:g}. "
      "Because a curve rising into saturation bends by itself, the same test runs at placebo "
      "points (checkpoint midpoints with no event nearby); a change is credited to the event "
      "only when no placebo reaches its |t|, or at most a share "
      f"{d.PLACEBO_ALPHA:g} of them (counting the event) does. The guard is partial: a "
      "curve whose one sharp bend happens to fall at the event cannot be told apart from an "
      "effect of the event.",
      "Early prediction, back-tested: each task's normalised curve is fitted on its first "
      f"{', '.join(_pct(x) for x in fc.FRACTIONS)} of checkpoints by "
      f"{' and '.join(fc.METHODS)} fits and predicts the last checkpoint's score with a "
      f"{_pct(fc.INTERVAL)} interval (fit covariance plus the last score's stderr). Pooled "
      "over every task of every series: median absolute error and the share of intervals "
      f"that hold the real score. A method is refused at a fraction when that coverage is "
      f"below {fc.COVERAGE_FLOOR:g} or fewer than {fc.MIN_BACKTESTS} predictions back it.",
      "Same score across sizes: per task shared by 2+ series, the level "
      f"{_pct(sc.SHARED_LEVEL_FRACTION)} of the lowest series' best normalised score, and the "
      "tokens (and FLOPs) at which each series first reaches it, interpolated in log tokens.",
  ]

