"""Batched log-likelihood scoring and greedy generation on the (possibly sharded) model.

Scores equal lm-evaluation-harness's (tokenisation in `requests`); the work is arranged for
speed:
- requests with the same context share one forward pass over it: the context fills a KV
  cache, whose rows are then gathered once per continuation, and the continuations attend
  to it at each row's own offset instead of recomputing the context per choice;
- the LM head and log-softmax run on continuation positions only (the context pass's
  logits are dead code that XLA drops), and only per-request sums and greedy flags leave
  the device;
- batches are sorted by length and padded to a few static shapes (`bucket`), so each
  jitted function compiles a bounded number of times.
With a `mesh`, batches are split over its data axes and the parameters stay where they
are (the training shardings), so scoring runs on the live train state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import typing

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fineline.evaluation import generate as generate_lib
from fineline.evaluation import requests as requests_lib
from fineline.models import llama
from fineline.models.config import LlamaConfig

Loglikelihood = requests_lib.Loglikelihood
Generate = requests_lib.Generate

# Padded tokens per prefill or scoring call: bounds the activations and B×S×V logits.
_TOKENS_PER_CALL = 2048
# Batches of requests whose contexts are prefilled together before their continuations
# are re-sorted by length: more pack tighter, at the cost of a larger cache.
_WINDOW_BATCHES = 4


def bucket(n: int, minimum: int = 16) -> int:
  """The padded size for `n`: the next of minimum·{1, 1.5, 2, 3, 4, 6, 8, …} at or above
  n (at most a third wasted; every distinct shape is a compile)."""
  size = minimum
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 and size >= 2 else (
        size * 4 // 3 if size >= 2 else 2)
  return size


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
    self._row_multiple = 1
    replicated = None
    if mesh is not None:
      from fineline import partitioning  # pylint: disable=import-outside-toplevel
      replicated = partitioning.replicated(mesh)
      self._row_multiple = partitioning.data_parallel_size(mesh)
    self.fns = _jitted(json.dumps(model_cfg.to_dict(), sort_keys=True), replicated)
    self._decoder = generate_lib.GreedyDecoder(self)

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
    """Greedy continuations, cut at the first stop string, EOS or `max_new_tokens`."""
    return self._decoder.generate(requests, progress=progress)

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
    if not pairs:
      return results
    # One cache size per call: prefill then compiles once per context shape and scoring
    # once per continuation shape, not once per combination.
    slots = (bucket(max(len(c) for c in groups) - 1, 16)
             + bucket(max(len(c) for _, c in pairs), 8))
    bar = tqdm.tqdm(total=len(pairs), desc="loglikelihood", disable=not progress)
    for window in self._windows(groups, slots):
      for i, result in self._score_window(window, pairs, slots):
        results[i] = result
      bar.update(sum(len(idx) for _, idx in window))
    bar.close()
    return results

  # ---- internals (also used by generation) ---------------------------------------------

  def _windows(self, groups, slots):
    """Runs of (context, [request indices]), longest contexts first, of at most
    `_WINDOW_BATCHES` batches of rows and a bounded cache. Within a window, contexts are
    prefilled in length order and continuations scored in length order, so both are
    padded tightly."""
    windows, current, rows = [], [], 0
    limit = _WINDOW_BATCHES * self.batch_size
    max_contexts = max(1, limit * 256 // slots)
    for context, idx in sorted(groups.items(), key=lambda kv: (-len(kv[0]), kv[1][0])):
      for start in range(0, len(idx), limit):
        piece = idx[start:start + limit]
        if current and (rows + len(piece) > limit or len(current) == max_contexts):
          windows.append(current)
          current, rows = [], 0
        current.append((context, piece))
        rows += len(piece)
    if current:
      windows.append(current)
    return windows

  def _score_window(self, window, pairs, slots):
    """Yields (request index, (log-likelihood, is_greedy)) for one window."""
    # Each context minus its last token goes through the cache; that last token starts
    # each continuation chunk, whose logits then predict exactly the continuation tokens.
    caches, cache_row, offset, start = [], [], 0, 0
    while start < len(window):  # contexts come longest first
      n = min(self.batch_size, max(1, _TOKENS_PER_CALL // bucket(len(window[start][0]), 16)))
      contexts = [context for context, _ in window[start:start + n]]
      caches.append(self._prefill(contexts, slots))
      cache_row += range(offset, offset + len(contexts))
      offset += int(caches[-1]["end"].shape[0])
      start += n
    cache = caches[0] if len(caches) == 1 else self.fns.concat(caches)
    rows = sorted(((cache_row[g], context[-1], i) for g, (context, idx) in enumerate(window)
                   for i in idx), key=lambda r: (-len(pairs[r[2]][1]), r[2]))
    start = 0
    while start < len(rows):
      cont_len = bucket(len(pairs[rows[start][2]][1]), 8)
      n = max(1, min(self.batch_size, _TOKENS_PER_CALL // cont_len, len(rows) - start))
      batch = rows[start:start + n]
      sums, greedy = self._score_rows(cache, batch, pairs, cont_len)
      for (_, _, i), s, g in zip(batch, sums, greedy):
        yield i, (float(s), bool(g))
      start += n

  def _score_rows(self, cache, batch, pairs, cont_len):
    b_rows = self._rows(len(batch))
    row_cache_Bk = np.zeros((b_rows,), np.int32)
    inputs_BkxSk = np.zeros((b_rows, cont_len), np.int32)
    targets_BkxSk = np.zeros((b_rows, cont_len), np.int32)
    lengths_Bk = np.zeros((b_rows,), np.int32)
    for r, (cache_row, last_context_token, i) in enumerate(batch):
      continuation = pairs[i][1]
      n = len(continuation)
      row_cache_Bk[r], lengths_Bk[r] = cache_row, n
      inputs_BkxSk[r, :n] = [last_context_token] + continuation[:-1]
      targets_BkxSk[r, :n] = continuation
    with self._activation_rules():
      rows_cache = self.fns.take_rows(cache, self._put(row_cache_Bk))
      args = [self._put(x) for x in (inputs_BkxSk, targets_BkxSk, lengths_Bk)]
      sums_Bk, greedy_Bk = self.fns.score(self.params, rows_cache, *args)
    return np.asarray(sums_Bk)[:len(batch)], np.asarray(greedy_Bk)[:len(batch)]

  def _rows(self, n: int) -> int:
    """Padded batch rows: a power of two (or `batch_size`), a multiple of the data axes."""
    size = 1 << max(0, n - 1).bit_length()
    if size > self.batch_size >= n:
      size = self.batch_size
    return -(-size // self._row_multiple) * self._row_multiple

  def _prefill(self, sequences, slots: int):
    """A KV cache holding each sequence but its last token (padded rows stay empty)."""
    rows = self._rows(len(sequences))
    prefix_BxS = np.zeros((rows, bucket(max(len(s) - 1 for s in sequences), 16)), np.int32)
    prefix_len_B = np.zeros((rows,), np.int32)
    for b, seq in enumerate(sequences):
      prefix_BxS[b, :len(seq) - 1] = seq[:-1]
      prefix_len_B[b] = len(seq) - 1
    with self._activation_rules():
      return self.fns.prefill(self.params, self._put(prefix_BxS), self._put(prefix_len_B),
                              slots)

  def _put(self, x_np: np.ndarray):
    """Host batch → device, split over the data axes when there is a mesh."""
    if self.mesh is None:
      return jnp.asarray(x_np)
    from fineline import partitioning  # pylint: disable=import-outside-toplevel
    from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
    spec = P("batch", *([None] * (x_np.ndim - 1)))
    sharding = NamedSharding(self.mesh, partitioning.logical_to_mesh(spec))
    return jax.make_array_from_callback(x_np.shape, sharding, lambda index: x_np[index])

  def _activation_rules(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    from fineline import partitioning  # pylint: disable=import-outside-toplevel
    return partitioning.activation_rules(self.mesh)


class _Functions(typing.NamedTuple):
  prefill: typing.Callable
  concat: typing.Callable
  take_rows: typing.Callable
  score: typing.Callable
  decode: typing.Callable


@functools.lru_cache(maxsize=None)
def _jitted(cfg_json: str, replicated) -> _Functions:
  """The jitted functions of one model configuration, shared by every Scorer of it so
  that a new checkpoint of the same model reuses the compiled programs."""
  model = llama.Llama(LlamaConfig.from_dict(json.loads(cfg_json)))
  return _Functions(
      prefill=jax.jit(functools.partial(_prefill, model), static_argnums=(3,)),
      concat=jax.jit(functools.partial(concat_caches, scanned=model.cfg.scan_layers)),
      # Apart from scoring, so that scoring compiles per continuation shape only.
      take_rows=jax.jit(functools.partial(take_cache_rows, scanned=model.cfg.scan_layers)),
      score=jax.jit(functools.partial(_score_continuations, model), out_shardings=replicated),
      decode=generate_lib.jit_decode(model))


def concat_caches(caches, scanned: bool):
  """Caches of the same size stacked along their batch rows."""
  axis = 1 if scanned else 0
  cat = lambda *xs: jnp.concatenate(xs, axis=axis)
  return {"k": jax.tree.map(cat, *[c["k"] for c in caches]),
          "v": jax.tree.map(cat, *[c["v"] for c in caches]),
          "end": jnp.concatenate([c["end"] for c in caches])}


def take_cache_rows(cache, rows_B, scanned: bool):
  """The cache rows `rows_B` (a context's cache once per continuation that uses it)."""
  axis = 1 if scanned else 0
  take = lambda x: jnp.take(x, rows_B, axis=axis)
  return {"k": jax.tree.map(take, cache["k"]), "v": jax.tree.map(take, cache["v"]),
          "end": cache["end"][rows_B]}


def _prefill(model, params, prefix_BxS, prefix_len_B, slots):
  """The cache after `prefix_BxS` (row b's first prefix_len_B[b] tokens count); the
  logits are unused, so XLA drops the LM head."""
  cache = llama.init_cache(model.cfg, prefix_BxS.shape[0], slots)
  _, cache = model.apply({"params": params}, prefix_BxS, cache=cache, lengths_B=prefix_len_B)
  return cache


def _score_continuations(model, params, cache, inputs_BkxSk, targets_BkxSk, lengths_Bk):
  """Summed target log-probabilities and all-greedy flags of each continuation row, each
  row attending to its own (context's) cache row."""
  logits_BkxSkxV, _ = model.apply({"params": params}, inputs_BkxSk, cache=cache,
                                  lengths_B=lengths_Bk)
  logprobs_BkxSkxV = jax.nn.log_softmax(logits_BkxSkxV, axis=-1)
  target_logprob_BkxSk = jnp.take_along_axis(logprobs_BkxSkxV, targets_BkxSk[..., None],
                                             axis=-1)[..., 0]
  valid_BkxSk = jnp.arange(inputs_BkxSk.shape[1])[None, :] < lengths_Bk[:, None]
  sums_Bk = jnp.sum(jnp.where(valid_BkxSk, target_logprob_BkxSk, 0.0), axis=-1)
  greedy_BkxSk = jnp.argmax(logits_BkxSkxV, axis=-1) == targets_BkxSk
  return sums_Bk, jnp.all(greedy_BkxSk | ~valid_BkxSk, axis=-1)
