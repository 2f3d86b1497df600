"""Tokenizers and vocabularies give exactly the ids of transformers' AutoTokenizer for the
same files."""

import json
import os
import random

import pytest
import seqio
import tensorflow as tf
import transformers
from hf_fixtures import VARIED_TEXTS, make_bpe_tokenizer, make_sentencepiece_tokenizer

from fineline.tokenizers import (HfTokenizer, HfTokenizerVocabulary, SentencePieceTokenizer,
                                 SentencePieceVocabulary, load_tokenizer, load_vocabulary)


def _random_texts(n=150, seed=0):
  rng = random.Random(seed)
  alphabet = list(" ab\nc1é🙂日x,.") + ["  ", "the", " the", "42", "\t"]
  return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(n)]


TEXTS = list(VARIED_TEXTS) + _random_texts()


def _with_special(vocab, text):
  return ([vocab.bos_id] if vocab.add_bos else []) + list(vocab.encode(text))


def _assert_parity(directory, vocab):
  theirs = transformers.AutoTokenizer.from_pretrained(str(directory))
  mismatches = [(t, _with_special(vocab, t), theirs(t).input_ids) for t in TEXTS
                if _with_special(vocab, t) != theirs(t).input_ids]
  assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("kind,cls", [("sentencepiece", SentencePieceVocabulary),
                                      ("bpe", HfTokenizerVocabulary)])
def test_ids_equal_transformers(tmp_path, kind, cls):
  make = make_sentencepiece_tokenizer if kind == "sentencepiece" else make_bpe_tokenizer
  directory = make(tmp_path)
  vocab = load_vocabulary(str(directory))
  assert isinstance(vocab, cls)
  assert vocab.add_bos and vocab.bos_id == 1 and vocab.eos_id == 2
  _assert_parity(directory, vocab)
  if kind == "sentencepiece":  # where SentencePiece's own dummy prefix and transformers differ
    plain = seqio.SentencePieceVocabulary(os.path.join(directory, "tokenizer.model"))
    assert plain.encode(" leading space") != vocab.encode(" leading space")


@pytest.mark.parametrize("add_bos_token", [False, None])
def test_bos_follows_the_tokenizer_config(tmp_path, add_bos_token):
  directory = make_sentencepiece_tokenizer(tmp_path, add_bos_token=add_bos_token)
  vocab = load_vocabulary(str(directory))
  assert not vocab.add_bos
  _assert_parity(directory, vocab)


def test_sentencepiece_normalizer_is_not_applied_as_in_transformers(tmp_path):
  directory = make_sentencepiece_tokenizer(tmp_path, normalize=True)
  vocab = load_vocabulary(str(directory))
  _assert_parity(directory, vocab)
  plain = seqio.SentencePieceVocabulary(os.path.join(directory, "tokenizer.model"))
  for text in ("full-width ＡＢＣ１２３", "multiple   inner    spaces"):
    assert plain.encode(text) != vocab.encode(text)


def test_llama_class_tokenizer_json_without_model_file(tmp_path):
  """A LLaMA tokenizer saved by transformers as tokenizer.json only."""
  make_sentencepiece_tokenizer(tmp_path / "sp")
  transformers.AutoTokenizer.from_pretrained(str(tmp_path / "sp")).save_pretrained(tmp_path / "js")
  if os.path.exists(tmp_path / "js" / "tokenizer.model"):
    os.remove(tmp_path / "js" / "tokenizer.model")
  vocab = load_vocabulary(str(tmp_path / "js"))
  assert isinstance(vocab, HfTokenizerVocabulary) and vocab.add_bos
  _assert_parity(tmp_path / "js", vocab)


def test_bpe_without_bos_post_processor(tmp_path):
  directory = make_bpe_tokenizer(tmp_path)
  with open(os.path.join(directory, "tokenizer.json")) as f:
    spec = json.load(f)
  spec["post_processor"] = None
  with open(os.path.join(directory, "tokenizer.json"), "w") as f:
    json.dump(spec, f)
  vocab = load_vocabulary(directory)
  assert not vocab.add_bos
  _assert_parity(directory, vocab)


@pytest.mark.parametrize("kind", ["sentencepiece", "bpe"])
def test_tf_encoding_and_decoding_agree_with_python(tmp_path, kind):
  make = make_sentencepiece_tokenizer if kind == "sentencepiece" else make_bpe_tokenizer
  vocab = load_vocabulary(make(tmp_path))
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for text in VARIED_TEXTS:
    ids = list(vocab.encode(text))
    assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids, text
    assert vocab.decode(ids) == theirs.decode(ids), text


@pytest.mark.parametrize("kind,cls", [("sentencepiece", SentencePieceTokenizer),
                                      ("bpe", HfTokenizer)])
def test_tokenizer_without_tensorflow_equals_the_vocabulary(tmp_path, kind, cls):
  make = make_sentencepiece_tokenizer if kind == "sentencepiece" else make_bpe_tokenizer
  directory = make(tmp_path)
  tokenizer, vocab = load_tokenizer(str(directory)), load_vocabulary(str(directory))
  assert isinstance(tokenizer, cls)
  assert (tokenizer.add_bos, tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (
      vocab.add_bos, vocab.bos_id, vocab.eos_id, vocab.vocab_size)
  _assert_parity(directory, tokenizer)
  for text in VARIED_TEXTS:
    ids = list(vocab.encode(text))
    assert tokenizer.encode(text) == ids, text
    # Decoding as seqio does: text up to the first EOS.
    assert tokenizer.decode(ids + [vocab.eos_id] + ids) == vocab.decode(ids + [vocab.eos_id]
                                                                       + ids), text


def test_load_vocabulary_from_a_file_and_errors(tmp_path):
  make_sentencepiece_tokenizer(tmp_path)
  vocab = load_vocabulary(os.path.join(tmp_path, "tokenizer.model"))
  assert isinstance(vocab, SentencePieceVocabulary) and vocab.add_bos
  assert vocab.vocab_size == 400
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="empty: no tokenizer.model or tokenizer.json"):
    load_vocabulary(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="missing.model"):
    load_vocabulary(str(tmp_path / "missing.model"))


def test_deepseek_tokenizer_json_only(tmp_path):
  """DeepSeek ships a byte-level BPE tokenizer.json and no tokenizer.model; its config names
  LlamaTokenizerFast and BOS as an AddedToken dict with add_bos_token true."""
  from arch_fixtures import make_deepseek_tokenizer
  directory = make_deepseek_tokenizer(tmp_path)
  assert not os.path.exists(os.path.join(directory, "tokenizer.model"))
  vocab = load_vocabulary(directory)
  assert isinstance(vocab, HfTokenizerVocabulary) and vocab.add_bos
  assert vocab.decode([vocab.bos_id]) == "<｜begin▁of▁sentence｜>"
  assert vocab.decode([vocab.eos_id]) == "<｜end▁of▁sentence｜>"
  _assert_parity(directory, vocab)


def test_baichuan_tokenizer_is_sentencepiece_as_it_is(tmp_path):
  """Baichuan's own BaichuanTokenizer (remote code, not in transformers) calls
  `SentencePieceProcessor.encode` on the text and adds no BOS (add_bos_token false)."""
  import sentencepiece as spm
  from arch_fixtures import make_plain_sentencepiece
  model_file = make_plain_sentencepiece(tmp_path)
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump({"tokenizer_class": "BaichuanTokenizer", "add_bos_token": False,
               "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>"}, f)
  vocab = load_vocabulary(str(tmp_path))
  assert not vocab.add_bos
  sp = spm.SentencePieceProcessor(model_file=model_file)
  mismatches = [t for t in TEXTS if list(vocab.encode(t)) != sp.encode(t)]
  assert not mismatches, mismatches[:3]
  assert all(vocab.decode(sp.encode(t)) == sp.decode(sp.encode(t)) for t in VARIED_TEXTS)
  # Read as LLaMA's it would gain a dummy "▁" prefix: the distinction matters.
  as_llama = SentencePieceVocabulary(model_file)
  assert any(list(as_llama.encode(t)) != sp.encode(t) for t in VARIED_TEXTS)
