"""Evaluation requests, tokenised exactly as lm-evaluation-harness (0.4.13, HF backend) does.

Scores are only comparable with lm-eval's when every request sees the same tokens, so this
module reproduces its choices one by one:
- trailing spaces of a context move to the front of the continuation;
- context+continuation are encoded together and the continuation is the tail of that
  encoding past the length of the context's own encoding (merges across the border);
- the tokenizer's default special tokens apply (LLaMA: BOS); an empty context is
  conditioned on the prefix token (BOS, else EOS);
- sequences longer than the model's window lose tokens on the left;
- rolling (perplexity) windows and generation prompts follow lm-eval's recipes.

`vocab` is a tokenizer from `fineline.tokenizers.load_tokenizer` (or the same as a
`seqio.Vocabulary`, `load_vocabulary`): `.encode` gives ids without special tokens,
`.add_bos` says whether the Hugging Face tokenizer prepends BOS by default, `.bos_id` /
`.eos_id` name the special ids.
"""

from __future__ import annotations

import dataclasses

Tokens = list[int]


@dataclasses.dataclass(frozen=True)
class Loglikelihood:
  """lm-eval's `loglikelihood` request: score `continuation` given `context`."""
  context: str
  continuation: str


@dataclasses.dataclass(frozen=True)
class Generate:
  """lm-eval's `generate_until` request: text after `context`, cut at the first of the
  `until` strings, at EOS or after `max_new_tokens` tokens. Greedy unless `temperature`
  > 0: then sampled (nucleus `top_p`) from a stream fixed by `seed`."""
  context: str
  until: tuple[str, ...] = ()
  max_new_tokens: int = 256
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0


def prefix_token_id(vocab) -> int:
  """The token an empty context (and the first rolling window) is conditioned on."""
  bos = getattr(vocab, "bos_id", None)
  return bos if bos is not None and bos >= 0 else vocab.eos_id


def tok_encode(vocab, text: str) -> Tokens:
  """`text` with the tokenizer's default special tokens, as HF's `tokenizer.encode`."""
  ids = [int(i) for i in vocab.encode(text)]
  return [prefix_token_id(vocab)] + ids if getattr(vocab, "add_bos", False) else ids


def encode_pair(vocab, context: str, continuation: str,
                max_length: int | None = None) -> tuple[Tokens, Tokens]:
  """(context_ids, continuation_ids) of one log-likelihood request.

  With `max_length`, the context loses tokens on the left so that context + continuation
  is at most `max_length + 1` tokens (the model sees all but the last), as lm-eval cuts.
  """
  if context == "":
    continuation_ids = [int(i) for i in vocab.encode(continuation)]
    prefix = prefix_token_id(vocab)
    if continuation_ids and continuation_ids[0] == prefix:
      context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
    else:
      context_ids = [prefix]
  else:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
      context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole_ids = tok_encode(vocab, context + continuation)
    context_ids = tok_encode(vocab, context)
    continuation_ids = whole_ids[len(context_ids):]
  if not continuation_ids:
    raise ValueError(f"continuation {continuation!r} encodes to no tokens after context "
                     f"{context[-40:]!r}; nothing to score")
  if max_length is not None:
    if len(continuation_ids) > max_length:
      raise ValueError(f"continuation of {len(continuation_ids)} tokens does not fit the "
                       f"maximum length {max_length}: {continuation[:40]!r}…")
    keep = max_length + 1 - len(continuation_ids)
    context_ids = context_ids[-keep:]
  return context_ids, continuation_ids


def rolling_windows(vocab, text: str, max_length: int) -> list[tuple[Tokens, Tokens]]:
  """lm-eval's disjoint rolling windows over `text` (context length 1): every token of the
  encoding (special tokens included) is predicted exactly once, the first window
  conditioned on the prefix token, later ones on up to `max_length` preceding tokens."""
  tokens = tok_encode(vocab, text)
  windows = []
  if not tokens:
    return windows
  first = min(max_length, len(tokens))
  windows.append(([prefix_token_id(vocab)], tokens[:first]))
  predicted = first
  while predicted < len(tokens):
    pred_len = min(len(tokens) - predicted, max_length)
    end = predicted + pred_len
    # lm-eval's window is tokens[end - max_length - 1 : end - 1]; the disjoint context is
    # its part before the predicted tokens.
    start = max(end - max_length - 1, 0)
    context = tokens[start:end - pred_len]
    windows.append((context, tokens[end - pred_len:end]))
    predicted = end
  return windows


def encode_prompt(vocab, context: str, max_length: int, max_new_tokens: int) -> Tokens:
  """A generation prompt, left-truncated to leave room for `max_new_tokens`."""
  room = max_length - max_new_tokens
  if room <= 0:
    raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in "
                     f"the maximum length {max_length}")
  return tok_encode(vocab, context)[-room:]


def cut_at_stop(text: str, until) -> str:
  """The text before the first occurrence of any stop string ('' strings are ignored)."""
  for stop in until:
    if stop:
      text = text.split(stop)[0]
  return text
