"""Greedy generation with the KV cache, equal to lm-eval's `generate_until` (HF backend).

The prompt minus its last token fills the cache in one pass (its logits are dead code),
then a jitted loop feeds one token per step, starting with the prompt's last token, for
up to `_STEPS_PER_CALL` steps or until every row has produced EOS. Stop strings are text,
so the host checks them between calls on the decoded tokens; the final text is the decode
of the tokens before EOS (special tokens skipped, as lm-eval decodes) cut at the first stop
string. Generating past a stop string does not change that cut, so stopping at the next
check gives lm-eval's text.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fineline.evaluation import packing
from fineline.evaluation import requests as requests_lib

_STEPS_PER_CALL = 32


class GreedyDecoder:
  """Generation for a `Scorer` (its jitted functions, params, vocab, batch size, mesh)."""

  def __init__(self, scorer):
    self.scorer = scorer
    self.eos_id = int(scorer.cfg.eos_token_id)  # what HF generate stops at
    self.skip_ids = special_ids(scorer.vocab)

  def generate(self, requests, progress: bool = False) -> list[str]:
    s = self.scorer
    prompts = [requests_lib.encode_prompt(s.vocab, r.context, s.max_length, r.max_new_tokens)
               for r in requests]
    results: list[str | None] = [None] * len(requests)
    if not requests:
      return results
    # One cache size per call, so prefill compiles per prompt shape and decoding once.
    slots = (packing.bucket(max(len(p) for p in prompts) - 1, 16)
             + packing.bucket(max(r.max_new_tokens for r in requests) + 1, 16))
    order = sorted(range(len(requests)), key=lambda i: (-len(prompts[i]), i))
    bar = tqdm.tqdm(total=len(requests), desc="generate", disable=not progress)
    for start in range(0, len(order), s.batch_size):
      idx = order[start:start + s.batch_size]
      texts = self._generate_batch([prompts[i] for i in idx], [requests[i] for i in idx], slots)
      for i, text in zip(idx, texts):
        results[i] = text
      bar.update(len(idx))
    bar.close()
    return results

  def _generate_batch(self, prompts, requests, slots) -> list[str]:
    s = self.scorer
    n = len(prompts)
    cache = s._prefill(prompts, slots)  # pylint: disable=protected-access
    b_rows = cache["end"].shape[0]
    last_B = np.full((b_rows,), self.eos_id, np.int32)
    last_B[:n] = [p[-1] for p in prompts]
    done_B = np.arange(b_rows) >= n  # padding rows count as finished
    max_new = max(r.max_new_tokens for r in requests)
    generated = [[] for _ in range(n)]
    finished = [False] * n
    steps = 0
    with s._activation_rules():  # pylint: disable=protected-access
      token_B, done_dev_B = s._put(last_B), s._put(done_B)  # pylint: disable=protected-access
      while steps < max_new and not all(finished):
        limit = min(_STEPS_PER_CALL, max_new - steps)
        out_BxC, token_B, done_dev_B, cache = s.fns.decode(
            s.params, cache, token_B, done_dev_B, jnp.int32(limit))
        out_BxC = _fetch(out_BxC)[:, :limit]
        steps += limit
        for b in range(n):
          if not finished[b]:
            generated[b].extend(int(t) for t in out_BxC[b])
            finished[b] = self._finished(generated[b], requests[b])
    return [self._text(tokens, r) for tokens, r in zip(generated, requests)]

  def _visible(self, tokens, request):
    tokens = tokens[:request.max_new_tokens]
    if self.eos_id in tokens:
      tokens = tokens[:tokens.index(self.eos_id)]
    return [t for t in tokens if t not in self.skip_ids]

  def _finished(self, tokens, request) -> bool:
    if self.eos_id in tokens or len(tokens) >= request.max_new_tokens:
      return True
    text = decode_like_hf(self.scorer.vocab, self._visible(tokens, request))
    return any(stop and stop in text for stop in request.until)

  def _text(self, tokens, request) -> str:
    text = decode_like_hf(self.scorer.vocab, self._visible(tokens, request))
    return requests_lib.cut_at_stop(text, request.until)


def decode_like_hf(vocab, ids) -> str:
  """`vocab.decode(ids)`, except that a SentencePiece model decodes as transformers'
  LlamaTokenizer does: a run of byte-fallback pieces that is not valid UTF-8 becomes one
  U+FFFD per byte (SentencePiece itself keeps the valid parts). Models rarely emit such
  runs once trained; random ones often do."""
  sp = getattr(vocab, "tokenizer", None)
  if sp is None or not hasattr(sp, "id_to_piece"):
    return vocab.decode(ids)
  parts, pending = [], bytearray()

  def flush():
    if pending:
      try:
        parts.append(pending.decode("utf-8"))
      except UnicodeDecodeError:
        parts.append("\ufffd" * len(pending))
      pending.clear()

  for i in ids:
    if sp.is_byte(i):
      pending.append(int(sp.id_to_piece(i)[3:5], 16))
    else:
      flush()
      parts.append(sp.id_to_piece(i).replace("\u2581", " "))
  flush()
  text = "".join(parts)
  return text[1:] if text.startswith(" ") else text


def special_ids(vocab) -> set[int]:
  """Ids that lm-eval's decode (`skip_special_tokens=True`) leaves out of generated text."""
  ids = getattr(vocab, "special_ids", None)
  if ids is None:
    ids = {getattr(vocab, name, None) for name in ("bos_id", "eos_id", "unk_id")}
    # A `tokenizers`-backed vocabulary: its added tokens flagged special are skipped too.
    added = getattr(getattr(vocab, "_tok", None), "get_added_tokens_decoder", None)
    if added is not None:
      ids |= {i for i, token in added().items() if token.special}
  return {int(i) for i in ids if i is not None and i >= 0}


def _fetch(x) -> np.ndarray:
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def jit_decode(model):
  return jax.jit(functools.partial(_decode_steps, model, model.cfg.eos_token_id),
                 donate_argnums=(1,))


def _decode_steps(model, eos_id, params, cache, token_B, done_B, limit):
  """Up to `limit` (≤ _STEPS_PER_CALL) greedy steps; stops early once every row has seen
  EOS. Unfilled columns of the result hold EOS."""
  out_BxC = jnp.full((token_B.shape[0], _STEPS_PER_CALL), eos_id, jnp.int32)

  def cond(carry):
    i, _, _, done_B, _ = carry
    return (i < limit) & ~jnp.all(done_B)

  def body(carry):
    i, cache, token_B, done_B, out_BxC = carry
    logits_Bx1xV, cache = model.apply({"params": params}, token_B[:, None], cache=cache)
    next_B = jnp.argmax(logits_Bx1xV[:, 0], axis=-1).astype(jnp.int32)
    out_BxC = jax.lax.dynamic_update_slice_in_dim(out_BxC, next_B[:, None], i, axis=1)
    return i + 1, cache, next_B, done_B | (next_B == eos_id), out_BxC

  _, cache, token_B, done_B, out_BxC = jax.lax.while_loop(
      cond, body, (jnp.int32(0), cache, token_B, done_B, out_BxC))
  return out_BxC, token_B, done_B, cache
