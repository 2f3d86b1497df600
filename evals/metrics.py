"""lm-evaluation-harness's metrics as seqio metric functions.

Score metrics receive `targets` (dicts: the example's meta plus `text`) and `scores`
(N×2: summed log-likelihood, is_greedy); prediction metrics receive the generated
strings. Every mean comes with `<metric>_stderr`, the sample standard error as lm-eval
computes it; perplexities get a delta-method standard error (lm-eval bootstraps them).
"""

from __future__ import annotations

import collections
import math
import re
import string
from typing import Sequence

import numpy as np


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
  n = len(values)
  mu = float(np.mean(values)) if n else float("nan")
  if n < 2:
    return mu, None
  sd = math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1))
  return mu, sd / math.sqrt(n)


def _with_stderr(out: dict, name: str, values) -> None:
  out[name], out[f"{name}_stderr"] = mean_and_stderr(values)


def _group_by_doc(targets, scores):
  docs = collections.OrderedDict()
  for target, score in zip(targets, np.asarray(scores, dtype=np.float64).reshape(-1, 2)):
    docs.setdefault(target["doc"], []).append((target, float(score[0]), bool(score[1])))
  return docs


def multiple_choice(metrics: Sequence[str] = ("acc", "acc_norm"), *, report_chance=False):
  """acc (argmax of summed log-likelihood), acc_norm (divided by the choice's length in
  characters), acc_bytes (in UTF-8 bytes), as lm-eval's multiple_choice output type;
  `report_chance` adds acc_chance, uniform guessing's expected acc on these documents."""
  def metric_fn(targets, scores):
    per = {m: [] for m in metrics}
    guess = []
    for rows in _group_by_doc(targets, scores).values():
      guess.append(1.0 / len(rows))
      rows.sort(key=lambda r: r[0]["choice"])
      lls = np.array([r[1] for r in rows])
      gold = rows[0][0]["gold"]
      nchars = np.array([float(r[0]["nchars"]) for r in rows])
      nbytes = np.array([float(r[0]["nbytes"]) for r in rows])
      preds = {"acc": np.argmax(lls), "acc_norm": np.argmax(lls / nchars),
               "acc_bytes": np.argmax(lls / nbytes)}
      for m in metrics:
        per[m].append(1.0 if preds[m] == gold else 0.0)
    out = {"n": len(per[metrics[0]])}
    for m in metrics:
      _with_stderr(out, m, per[m])
    if report_chance:
      out["acc_chance"] = float(np.mean(guess))
    return out
  return metric_fn


def truthfulqa_mc2(targets, scores):
  """lm-eval's truthfulqa_mc2 acc: the probability mass of the true answers once the
  choices' likelihoods are normalised to sum to one (each target's meta has the document's
  `mc2_labels`, 1 for a true answer); acc_chance is that mass under uniform guessing."""
  values, guess = [], []
  for rows in _group_by_doc(targets, scores).values():
    rows.sort(key=lambda r: r[0]["choice"])
    lls = np.array([r[1] for r in rows])
    true = np.array(rows[0][0]["mc2_labels"]) == 1
    # Shifted by the maximum: the same ratios as lm-eval's exp(ll), without underflow.
    probs = np.exp(lls - lls.max())
    values.append(float(probs[true].sum() / probs.sum()))
    guess.append(float(true.mean()))
  out = {"n": len(values)}
  _with_stderr(out, "acc", values)
  out["acc_chance"] = float(np.mean(guess)) if guess else float("nan")
  return out


def loglikelihood(targets, scores):
  """lm-eval's `loglikelihood` output type (LAMBADA): perplexity = exp(-mean ll) and
  acc = the continuation is the greedy one."""
  scores = np.asarray(scores, dtype=np.float64).reshape(-1, 2)
  lls, greedy = scores[:, 0], scores[:, 1]
  out = {"n": int(len(lls))}
  _with_stderr(out, "acc", list(greedy))
  mean_ll, se_ll = mean_and_stderr(list(lls))
  out["perplexity"] = math.exp(-mean_ll)
  out["perplexity_stderr"] = None if se_ll is None else out["perplexity"] * se_ll
  return out


def rolling(targets, scores):
  """lm-eval's `loglikelihood_rolling` metrics over whole documents: word_perplexity,
  byte_perplexity and bits_per_byte (document-weighted sums, as lm-eval aggregates)."""
  lls = np.asarray(scores, dtype=np.float64).reshape(-1, 2)[:, 0]
  nbytes = np.array([t["nbytes"] for t in targets], dtype=np.float64)
  nwords = np.array([t["nwords"] for t in targets], dtype=np.float64)
  out = {"n": int(len(lls))}
  out["word_perplexity"] = math.exp(-lls.sum() / nwords.sum())
  out["byte_perplexity"] = math.exp(-lls.sum() / nbytes.sum())
  out["bits_per_byte"] = -lls.sum() / nbytes.sum() / math.log(2)
  # Ratio estimator's standard error over documents (lm-eval bootstraps instead).
  if len(lls) > 1:
    per_doc = -lls / math.log(2) - out["bits_per_byte"] * nbytes
    var = float(np.sum(per_doc ** 2)) / (len(lls) - 1)
    out["bits_per_byte_stderr"] = math.sqrt(var * len(lls)) / nbytes.sum()
  else:
    out["bits_per_byte_stderr"] = None
  return out


def exact_match_score(prediction: str, reference: str, *, regexes_to_ignore=(),
                      ignore_case=False, ignore_punctuation=False) -> float:
  """lm-eval's exact_match (HF evaluate's): strip the regexes from both, then compare."""
  for pattern in regexes_to_ignore:
    prediction = re.sub(pattern, "", prediction)
    reference = re.sub(pattern, "", reference)
  if ignore_case:
    prediction, reference = prediction.lower(), reference.lower()
  if ignore_punctuation:
    table = str.maketrans("", "", string.punctuation)
    prediction, reference = prediction.translate(table), reference.translate(table)
  return float(prediction == reference)


def regex_extract(text: str, pattern: str, group_select: int = 0,
                  fallback: str = "[invalid]") -> str:
  """lm-eval's `regex` filter followed by take_first."""
  matches = re.findall(pattern, text)
  if not matches:
    return fallback
  match = matches[group_select]
  if isinstance(match, tuple):
    match = [m for m in match if m]
    match = match[0] if match else fallback
  return match.strip()


def generation(filters: dict, **match_kw):
  """exact_match per filter: `filters` maps a metric name to a function of the generated
  text (identity, strip, regex extraction); a document scores 1 if any gold answer
  matches, as lm-eval does for multiple targets."""
  def metric_fn(targets, predictions):
    out = {"n": len(predictions)}
    for name, extract in filters.items():
      scores = []
      for target, prediction in zip(targets, predictions):
        answer = extract(prediction)
        scores.append(max(exact_match_score(answer, gold, **match_kw)
                          for gold in target["answers"]))
      _with_stderr(out, name, scores)
    return out
  return metric_fn
