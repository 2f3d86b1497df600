"""Request tokenisation against transformers' tokenizers and lm-eval's own window helpers."""

from __future__ import annotations

import pytest
import transformers
from lm_eval import utils as lm_eval_utils

from hf_fixtures import make_bpe_tokenizer, make_sentencepiece_tokenizer

from fineline.evaluation import requests
from fineline.tokenizers import load_vocabulary


@pytest.fixture(scope="module", params=["sentencepiece", "bpe"])
def tokenizers(request, tmp_path_factory):
  make = make_sentencepiece_tokenizer if request.param == "sentencepiece" else make_bpe_tokenizer
  directory = make(str(tmp_path_factory.mktemp(request.param)))
  return load_vocabulary(directory), transformers.AutoTokenizer.from_pretrained(directory)


PAIRS = [("Question: What is 12 + 30?\nAnswer:", " 42"),
         ("the quick brown fo", "x jumps over the dog"),  # the border inside a word
         ("Hello world ", "again"),  # trailing space moves to the continuation
         ("trailing spaces   ", "then text"),
         ("café naï", "ve Straße")]


def test_encode_pair_is_joint_encoding_split_at_context_length(tokenizers):
  vocab, hf = tokenizers
  differs_from_separate = False
  for context, continuation in PAIRS:
    context_ids, continuation_ids = requests.encode_pair(vocab, context, continuation)
    stripped = context.rstrip()
    moved = context[len(stripped):] + continuation
    assert context_ids == hf(stripped).input_ids
    assert continuation_ids == hf(stripped + moved).input_ids[len(context_ids):]
    separate = hf(moved, add_special_tokens=False).input_ids
    differs_from_separate |= continuation_ids != separate
  assert context_ids[0] == hf.bos_token_id  # LLaMA-style: BOS by default
  assert differs_from_separate  # the cases above do exercise merges across the border


def test_empty_context_is_conditioned_on_bos(tokenizers):
  vocab, hf = tokenizers
  context_ids, continuation_ids = requests.encode_pair(vocab, "", "Hello world")
  assert context_ids == [hf.bos_token_id]
  assert continuation_ids == hf("Hello world", add_special_tokens=False).input_ids


def test_long_inputs_lose_tokens_on_the_left(tokenizers):
  vocab, _ = tokenizers
  context = " ".join(["the quick brown fox"] * 20)
  full_context, continuation = requests.encode_pair(vocab, context, " jumps over")
  context_ids, continuation_ids = requests.encode_pair(vocab, context, " jumps over", 16)
  assert continuation_ids == continuation
  assert len(context_ids) + len(continuation_ids) == 17  # the model sees the first 16
  assert context_ids == full_context[-len(context_ids):]
  with pytest.raises(ValueError, match="does not fit"):
    requests.encode_pair(vocab, "a", " ".join(["word"] * 40), 8)
  with pytest.raises(ValueError, match="no tokens"):
    requests.encode_pair(vocab, "context", "")


@pytest.mark.parametrize("n_words,max_length", [(3, 8), (40, 8), (40, 16), (200, 32)])
def test_rolling_windows_match_lm_eval(tokenizers, n_words, max_length):
  vocab, hf = tokenizers
  text = " ".join(["evaluation benchmark capability"] * n_words)
  tokens = hf(text).input_ids
  expected = [lm_eval_utils.make_disjoint_window(w) for w in lm_eval_utils.get_rolling_token_windows(
      token_list=tokens, prefix_token=hf.bos_token_id, max_seq_len=max_length, context_len=1)]
  windows = requests.rolling_windows(vocab, text, max_length)
  assert windows == [(list(c), list(x)) for c, x in expected]
  assert sum((x for _, x in windows), []) == tokens  # every token predicted once
  assert all(len(c) + len(x) <= max_length + 1 for c, x in windows)


def test_prompt_leaves_room_for_new_tokens(tokenizers):
  vocab, hf = tokenizers
  context = " ".join(["Q: question answer"] * 30)
  prompt = requests.encode_prompt(vocab, context, max_length=32, max_new_tokens=10)
  assert prompt == hf(context).input_ids[-22:]
  with pytest.raises(ValueError, match="no room"):
    requests.encode_prompt(vocab, context, max_length=32, max_new_tokens=32)


def test_cut_at_stop_keeps_text_before_the_first_stop():
  assert requests.cut_at_stop("A: 42.\n\nQ: next", ("Q:", "\n\n")) == "A: 42."
  assert requests.cut_at_stop("no stop here", ("Q:", "")) == "no stop here"
  assert requests.cut_at_stop("Q: at start", ("Q:",)) == ""
