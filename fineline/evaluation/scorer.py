"""Batched log-likelihood scoring and greedy generation on the (possibly sharded) model.

Scores equal lm-evaluation-harness's (tokenisation in `requests`); the work is arranged for
speed (`packing`):
- requests with the same context share one pass over it: a row holds the context and then
  each continuation (but its last token), every continuation seeing only the context and
  itself, and the context's last position predicts every continuation's first token;
- several such groups share a row, so rows are padded only at their ends, and rows come in
  a few lengths, so each shape compiles once;
- the LM head and log-softmax run only at the positions whose log-probabilities are read,
  and only those leave the device; the next call is dispatched before the previous
  result is read.
With a `mesh`, batches are split over its data axes and the parameters stay where they
are (the training shardings), so scoring runs on the live train state.
Generation (`generate`) prefills a KV cache and decodes from it.
"""

from __future__ import annotations

import functools
import json
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fineline.evaluation import generate as generate_lib
from fineline.evaluation import packing
from fineline.evaluation import placement as placement_lib
from fineline.evaluation import requests as requests_lib
from fineline.models import llama
from fineline.models import target_logprobs
from fineline.models.config import LlamaConfig

Loglikelihood = requests_lib.Loglikelihood
Generate = requests_lib.Generate

# Tokens of a group (a context and its continuations) before it is split, its context
# repeated: the most a row must hold when no single request is longer.
_MAX_PIECE = 1024
# Targets whose log-softmax is computed at once (times the data-parallel size): bounds the
# chunk×V logits, which stay in cache.
_HEAD_CHUNK = 256
# The shortest scoring row: groups shorter than this share rows. Longer rows waste less at
# their ends; they cost little more attention, as the native kernel skips the keys before a
# query block's first piece. A call holds `batch_size` such rows' worth of tokens.
_MIN_ROW = 512


class Scorer:
  """lm-eval-compatible scoring of one model's parameters.

  `params` is the unscanned or scanned tree matching `model_cfg.scan_layers`; with `mesh`
  and `shardings` (the tree of NamedShardings of `params`) the parameters are placed there
  (a no-op when they already are) and batches are split over the mesh's data axes.
  """

  def __init__(self, model_cfg: LlamaConfig, params, vocab, *, batch_size: int = 16,
               max_length: int | None = None, mesh=None, shardings=None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.cfg = model_cfg
    self.vocab = vocab
    self.batch_size = batch_size
    self.max_length = max_length or model_cfg.max_length
    self.mesh = mesh
    self.shardings = shardings
    self.params = params
    self.placement = placement_lib.Placement(mesh)
    self.fns = _jitted(json.dumps(model_cfg.to_dict(), sort_keys=True),
                       self.placement.replicated())
    self._decoder = generate_lib.Decoder(model_cfg, vocab, self.placement,
                                         batch_size=batch_size, max_length=self.max_length)

  @property
  def params(self):
    return self._params

  @params.setter
  def params(self, params):
    """New parameters (e.g. the next checkpoint) reuse the compiled functions. They go to
    the device once here, not at every call."""
    if self.shardings is not None:
      params = jax.device_put(params, self.shardings)
    else:
      params = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, params)
    self._params = params

  # ---- public API ----------------------------------------------------------------------

  def loglikelihood(self, requests: list[Loglikelihood],
                    progress: bool = False) -> list[tuple[float, bool]]:
    """(sum of continuation log-probabilities, whether every token is the argmax) each."""
    pairs = [requests_lib.encode_pair(self.vocab, r.context, r.continuation, self.max_length)
             for r in requests]
    return self.loglikelihood_tokens(pairs, progress=progress)

  def loglikelihood_rolling(self, texts: list[str], progress: bool = False) -> list[float]:
    """Log-likelihood of each whole text over lm-eval's disjoint rolling windows."""
    windows, owner = [], []
    for i, text in enumerate(texts):
      for window in requests_lib.rolling_windows(self.vocab, text, self.max_length):
        windows.append(window)
        owner.append(i)
    totals = [0.0] * len(texts)
    for i, (logprob, _) in zip(owner, self.loglikelihood_tokens(windows, progress=progress)):
      totals[i] += logprob
    return totals

  def generate(self, requests: list[Generate], progress: bool = False) -> list[str]:
    """Continuations (greedy, or sampled where a request has a temperature), cut at the
    first stop string, EOS or `max_new_tokens`."""
    return self._decoder.generate(self.params, requests, progress=progress)

  def loglikelihood_tokens(self, pairs, progress: bool = False) -> list[tuple[float, bool]]:
    """Scores already-tokenised (context_ids, continuation_ids) pairs."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (context, continuation) in enumerate(pairs):
      if not context or not continuation:
        raise ValueError(f"request {i}: context and continuation need at least one token "
                         f"each, got {len(context)} and {len(continuation)}")
      if len(continuation) > self.max_length:
        raise ValueError(f"request {i}: continuation of {len(continuation)} tokens does not "
                         f"fit the maximum length {self.max_length}")
      keep = self.max_length + 1 - len(continuation)
      groups.setdefault(tuple(context[-keep:]), []).append(i)
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    bar = tqdm.tqdm(total=len(pairs), desc="loglikelihood", disable=not progress)
    pending = None
    pieces = packing.pieces(groups, pairs, _MAX_PIECE)
    chunk = _HEAD_CHUNK * self.placement.row_multiple
    for row_len, all_rows in packing.batches(pieces, _MIN_ROW, self._rows_per_call):
      for rows in self._calls(all_rows):
        num_rows = self._rows(len(rows))
        arrays, num_targets, entries = packing.layout(rows, pairs, num_rows, row_len,
                                                      -(-num_rows * row_len // chunk) * chunk)
        put = self.placement.put
        with self.placement.rules():
          outputs = self.fns.score(self.params, *(put(a) for a in arrays[:4]),
                                   *(put(a, split=False) for a in arrays[4:]),
                                   jnp.int32(-(-num_targets // chunk)), chunk)
        if pending is not None:  # read the previous call's results while this one runs
          self._collect(*pending, results, bar)
        pending = outputs, entries
    if pending is not None:
      self._collect(*pending, results, bar)
    bar.close()
    return results

  # ---- internals ------------------------------------------------------------------------

  def _rows_per_call(self, row_len: int) -> int:
    """Rows of one scoring call: a power of two within `batch_size` × `_MIN_ROW` tokens."""
    rows = max(1, self.batch_size * _MIN_ROW // row_len)
    return self._rows(1 << (rows.bit_length() - 1))

  def _calls(self, rows):
    """The rows in one call, or in two where padding the last, partial batch of rows to
    a compiled size would cost more rows than splitting it (18 → 16 + 2, not 32)."""
    n = len(rows)
    first = 1 << (n.bit_length() - 1)
    if first < n and self._rows(first) + self._rows(n - first) < self._rows(n):
      return [rows[:first], rows[first:]]
    return [rows]

  @staticmethod
  def _collect(outputs, entries, results, bar):
    logprobs_N, greedy_N = (np.asarray(x) for x in outputs)  # replicated: readable anywhere
    for request, start, n in entries:
      results[request] = (float(np.sum(logprobs_N[start:start + n], dtype=np.float64)),
                          bool(np.all(greedy_N[start:start + n])))
    bar.update(len(entries))

  def _rows(self, n: int) -> int:
    return self.placement.rows(n, self.batch_size)


class _Functions(typing.NamedTuple):
  score: typing.Callable


@functools.lru_cache(maxsize=None)
def _jitted(cfg_json: str, replicated) -> _Functions:
  """The jitted scoring function of one model configuration, shared by every Scorer of it
  so that a new checkpoint of the same model reuses the compiled program."""
  model = llama.Llama(LlamaConfig.from_dict(json.loads(cfg_json)))
  return _Functions(
      score=jax.jit(functools.partial(_score_packed, model), static_argnums=(8,),
                    out_shardings=replicated, compiler_options=score_compiler_options()))


def score_compiler_options():
  """XLA options of the scoring function: on CPU, XLA's Eigen matmuls in place of its
  default YNNPACK ones, for the products the native kernels do not take
  (`fineline.models.native`), chosen on the scoring forward's shapes (thousands of tokens
  × the model width); tools/bench/eval_throughput.py --xla_default_matmuls compares."""
  return {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" else None


def _score_packed(model, params, tokens_BxL, positions_BxL, segments_BxL, branches_BxL,
                  gather_N, targets_N, num_chunks, chunk):
  """Log-probabilities and greedy flags of the first num_chunks·chunk targets (N each) of
  packed rows (`packing.layout`); the rest stay 0 and False.

  The LM head and log-softmax run `chunk` targets at a time in a loop of `num_chunks`
  steps, so their cost follows the number of targets while the shapes stay fixed.
  """
  mask_BxLxL = packing.attention_mask(positions_BxL, segments_BxL, branches_BxL)
  hidden_BxLxD = model.apply({"params": params}, tokens_BxL, positions_BxL, return_hidden=True,
                             attention_mask_BxSxT=mask_BxLxL)
  hidden_NxD = hidden_BxLxD.reshape(-1, hidden_BxLxD.shape[-1])

  def step(c, carry):
    logprobs_N, greedy_N = carry
    gather_C = jax.lax.dynamic_slice_in_dim(gather_N, c * chunk, chunk)
    targets_C = jax.lax.dynamic_slice_in_dim(targets_N, c * chunk, chunk)
    hidden_CxD = nn.with_logical_constraint(jnp.take(hidden_NxD, gather_C, axis=0),
                                            ("batch", "embed"))
    logprob_C, greedy_C = target_logprobs.target_logprobs(hidden_CxD, params, model.cfg,
                                                          targets_C)
    return (jax.lax.dynamic_update_slice_in_dim(logprobs_N, logprob_C, c * chunk, 0),
            jax.lax.dynamic_update_slice_in_dim(greedy_N, greedy_C, c * chunk, 0))

  init = (jnp.zeros(gather_N.shape, jnp.float32), jnp.zeros(gather_N.shape, bool))
  return jax.lax.fori_loop(0, num_chunks, step, init)
