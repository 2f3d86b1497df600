"""Generation with the KV cache, equal to lm-eval's `generate_until` (HF backend).

The prompt minus its last token fills the cache in one pass (its logits are dead code),
then a jitted loop feeds one token per step, starting with the prompt's last token, for
up to `_STEPS_PER_CALL` steps or until every row has produced EOS. Stop strings are text,
so the host checks them between calls on the decoded tokens; the final text is the decode
of the tokens before EOS (special tokens skipped, as lm-eval decodes) cut at the first stop
string. Generating past a stop string does not change that cut, so stopping at the next
check gives lm-eval's text.

Requests with a temperature (pass@k's samples) are batched apart from greedy ones and
decoded by the same loop with a sampling step: logits / temperature, then the nucleus
(the most likely tokens whose probabilities sum to `top_p`, as transformers' top-p
warper keeps), then a draw with a key from the request's seed and the token's index, so
a request's text does not depend on its batch.
"""

from __future__ import annotations

import functools
import json
import typing

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fineline.evaluation import packing
from fineline.evaluation import requests as requests_lib
from fineline.models import llama
from fineline.models.config import LlamaConfig

_STEPS_PER_CALL = 32


class Decoder:
  """Generation for one model configuration: its jitted prefill and decoding loops, on
  `placement`'s devices, `batch_size` prompts at a time; prompts are cut to `max_length`
  minus the tokens to generate. `generate(params, requests)` takes the parameters of the
  call, so one decoder serves a series of checkpoints."""

  def __init__(self, cfg, vocab, placement, *, batch_size: int, max_length: int):
    self.cfg, self.vocab, self.placement = cfg, vocab, placement
    self.batch_size, self.max_length = batch_size, max_length
    self.eos_id = int(cfg.eos_token_id)  # what HF generate stops at
    self.skip_ids = special_ids(vocab)
    self.fns = _jitted(json.dumps(cfg.to_dict(), sort_keys=True))

  def generate(self, params, requests, progress: bool = False) -> list[str]:
    prompts = [requests_lib.encode_prompt(self.vocab, r.context, self.max_length,
                                          r.max_new_tokens)
               for r in requests]
    results: list[str | None] = [None] * len(requests)
    if not requests:
      return results
    # One cache size per call, so prefill compiles per prompt shape and decoding once.
    slots = (packing.bucket(max(len(p) for p in prompts) - 1, 16)
             + packing.bucket(max(r.max_new_tokens for r in requests) + 1, 16))
    order = sorted(range(len(requests)), key=lambda i: (-len(prompts[i]), i))
    bar = tqdm.tqdm(total=len(requests), desc="generate", disable=not progress)
    greedy = [i for i in order if requests[i].temperature <= 0]
    sampled = [i for i in order if requests[i].temperature > 0]
    for group in (greedy, sampled):
      for start in range(0, len(group), self.batch_size):
        idx = group[start:start + self.batch_size]
        texts = self._generate_batch(params, [prompts[i] for i in idx],
                                     [requests[i] for i in idx], slots)
        for i, text in zip(idx, texts):
          results[i] = text
        bar.update(len(idx))
    bar.close()
    return results

  def _prefill(self, params, sequences, slots: int):
    """A KV cache holding each sequence but its last token (padded rows stay empty)."""
    rows = self.placement.rows(len(sequences), self.batch_size)
    prefix_BxS = np.zeros((rows, packing.bucket(max(len(s) - 1 for s in sequences), 16)), np.int32)
    prefix_len_B = np.zeros((rows,), np.int32)
    for b, seq in enumerate(sequences):
      prefix_BxS[b, :len(seq) - 1] = seq[:-1]
      prefix_len_B[b] = len(seq) - 1
    return self.fns.prefill(params, self.placement.put(prefix_BxS),
                            self.placement.put(prefix_len_B), slots)

  def _generate_batch(self, params, prompts, requests, slots) -> list[str]:
    put = self.placement.put
    n = len(prompts)
    with self.placement.rules():
      cache = self._prefill(params, prompts, slots)
    b_rows = cache["end"].shape[0]
    last_B = np.full((b_rows,), self.eos_id, np.int32)
    last_B[:n] = [p[-1] for p in prompts]
    done_B = np.arange(b_rows) >= n  # padding rows count as finished
    max_new = max(r.max_new_tokens for r in requests)
    generated = [[] for _ in range(n)]
    finished = [False] * n
    steps = 0
    sampling = requests[0].temperature > 0  # a batch is all greedy or all sampled
    if sampling:
      temperature_B = np.ones((b_rows,), np.float32)
      top_p_B = np.ones((b_rows,), np.float32)
      seed_B = np.zeros((b_rows,), np.int32)
      temperature_B[:n] = [r.temperature for r in requests]
      top_p_B[:n] = [r.top_p for r in requests]
      seed_B[:n] = [r.seed & 0x7FFFFFFF for r in requests]
    with self.placement.rules():
      token_B, done_dev_B = put(last_B), put(done_B)
      if sampling:
        sample_args = tuple(put(a) for a in (temperature_B, top_p_B, seed_B))
      while steps < max_new and not all(finished):
        limit = min(_STEPS_PER_CALL, max_new - steps)
        if sampling:
          out_BxC, token_B, done_dev_B, cache = self.fns.sample(
              params, cache, token_B, done_dev_B, jnp.int32(limit), *sample_args,
              jnp.int32(steps))
        else:
          out_BxC, token_B, done_dev_B, cache = self.fns.decode(
              params, cache, token_B, done_dev_B, jnp.int32(limit))
        out_BxC = self.placement.fetch(out_BxC)[:, :limit]
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
    text = decode_like_hf(self.vocab, self._visible(tokens, request))
    return any(stop and stop in text for stop in request.until)

  def _text(self, tokens, request) -> str:
    text = decode_like_hf(self.vocab, self._visible(tokens, request))
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
  """Ids that lm-eval's decode (`skip_special_tokens=True`) leaves out of generated text:
  the vocabulary's `special_ids` (fineline's tokenizers), else its BOS, EOS and UNK."""
  ids = getattr(vocab, "special_ids", None)
  if ids is None:
    ids = {getattr(vocab, name, None) for name in ("bos_id", "eos_id", "unk_id")}
  return {int(i) for i in ids if i is not None and i >= 0}


class _Functions(typing.NamedTuple):
  prefill: typing.Callable
  decode: typing.Callable
  sample: typing.Callable


@functools.lru_cache(maxsize=None)
def _jitted(cfg_json: str) -> _Functions:
  """The jitted functions of one model configuration, shared by every Decoder of it so
  that a new checkpoint of the same model reuses the compiled programs."""
  model = llama.Llama(LlamaConfig.from_dict(json.loads(cfg_json)))
  return _Functions(prefill=jax.jit(functools.partial(_prefill, model), static_argnums=(3,)),
                    decode=jit_decode(model), sample=jit_sample(model))


def _prefill(model, params, prefix_BxS, prefix_len_B, slots):
  """The cache after `prefix_BxS` (row b's first prefix_len_B[b] tokens count); the
  logits are unused, so XLA drops the LM head."""
  cache = llama.init_cache(model.cfg, prefix_BxS.shape[0], slots)
  _, cache = model.apply({"params": params}, prefix_BxS, cache=cache, lengths_B=prefix_len_B)
  return cache


def jit_decode(model):
  return jax.jit(functools.partial(_decode_steps, model, model.cfg.eos_token_id, _greedy),
                 donate_argnums=(1,))


def jit_sample(model):
  """As `jit_decode`, with extra arguments temperature_B, top_p_B, seed_B (int32) and the
  index of the first token this call generates."""
  return jax.jit(functools.partial(_decode_steps, model, model.cfg.eos_token_id, _sample),
                 donate_argnums=(1,))


def _greedy(logits_BxV, i):
  del i
  return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)


def _sample(logits_BxV, i, temperature_B, top_p_B, seed_B, offset):
  logits_BxV = logits_BxV.astype(jnp.float32) / temperature_B[:, None]
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # A token stays when the tokens more likely than it hold less than top_p.
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  keep_B = jnp.maximum(jnp.sum(mass_before_BxV < top_p_B[:, None], axis=-1), 1)
  threshold_B = jnp.take_along_axis(sorted_BxV, (keep_B - 1)[:, None], axis=-1)
  logits_BxV = jnp.where(logits_BxV >= threshold_B, logits_BxV, -jnp.inf)
  keys_B = jax.vmap(lambda seed: jax.random.fold_in(jax.random.PRNGKey(seed), offset + i))(
      seed_B)
  return jax.vmap(jax.random.categorical)(keys_B, logits_BxV).astype(jnp.int32)


def _decode_steps(model, eos_id, pick, params, cache, token_B, done_B, limit, *pick_args):
  """Up to `limit` (≤ _STEPS_PER_CALL) steps, each token chosen by `pick(logits, i,
  *pick_args)`; stops early once every row has seen EOS. Unfilled columns of the result
  hold EOS."""
  out_BxC = jnp.full((token_B.shape[0], _STEPS_PER_CALL), eos_id, jnp.int32)

  def cond(carry):
    i, _, _, done_B, _ = carry
    return (i < limit) & ~jnp.all(done_B)

  def body(carry):
    i, cache, token_B, done_B, out_BxC = carry
    logits_Bx1xV, cache = model.apply({"params": params}, token_B[:, None], cache=cache)
    next_B = pick(logits_Bx1xV[:, 0], i, *pick_args)
    out_BxC = jax.lax.dynamic_update_slice_in_dim(out_BxC, next_B[:, None], i, axis=1)
    return i + 1, cache, next_B, done_B | (next_B == eos_id), out_BxC

  _, cache, token_B, done_B, out_BxC = jax.lax.while_loop(
      cond, body, (jnp.int32(0), cache, token_B, done_B, out_BxC))
  return out_BxC, token_B, done_B, cache
