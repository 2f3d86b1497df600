"""The tokenizers of `fineline.tokenizers` as `seqio.Vocabulary` objects, for seqio
pipelines (pretraining tasks tokenize in TensorFlow). Python encoding and decoding go
through those tokenizers, so both give the same ids; `encode_tf` agrees with them.
"""

from __future__ import annotations

import seqio
import tensorflow as tf

from fineline import tokenizers


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePiece `tokenizer.model`, tokenized as transformers' LlamaTokenizer does."""

  tf_native = True  # encode_tf is TensorFlow ops (tf_text's SentencePiece kernel)

  def __init__(self, model_file: str, add_bos: bool = False, add_eos: bool = False,
               llama_style: bool = True):
    super().__init__(model_file, extra_ids=0,
                     normalizer_spec_overrides=tokenizers.llama_normalizer() if llama_style
                     else None)
    self.add_bos = add_bos
    self.add_eos = add_eos
    self.llama_style = llama_style
    self._python = None

  @property
  def python(self) -> tokenizers.SentencePieceTokenizer:
    """The same tokenizer without TensorFlow (what `_encode` and `_decode` use)."""
    if getattr(self, "_python", None) is None:
      self._python = tokenizers.SentencePieceTokenizer(
          self.sentencepiece_model_file, self.add_bos, self.add_eos, self.llama_style)
    return self._python

  def _encode(self, s: str):
    return self.python.encode(s)

  def encode_tf(self, s):
    if not self.llama_style:
      return super().encode_tf(s)
    # The dummy prefix, only where the text has no leading space (as `python.encode`).
    keep = tf.strings.regex_full_match(s, r"(?s)( .*)?")
    return super().encode_tf(tf.where(keep, s, tf.strings.join([" ", s])))

  def _decode(self, ids):
    return self.python.decode_ids(ids)

  @property
  def special_ids(self) -> frozenset[int]:
    return self.python.special_ids

  def __getstate__(self):
    return {**super().__getstate__(), "add_bos": self.add_bos, "add_eos": self.add_eos,
            "llama_style": self.llama_style}

  def __setstate__(self, state):
    self.add_bos, self.add_eos = state.pop("add_bos"), state.pop("add_eos")
    self.llama_style = state.pop("llama_style", True)
    self._python = None
    super().__setstate__(state)


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizer.json` (`fineline.tokenizers.HfTokenizer`).

  `encode_tf` wraps the library in a `py_function`: fine for evaluation data, but a
  checkpointed training pipeline cannot hold one, so pretraining corpora for such a
  vocabulary are tokenised beforehand (`fineline.data.pretokenize`).
  """

  tf_native = False

  def __init__(self, tokenizer_json: str, *, add_bos: bool | None = None,
               bos_token: str | None = None, eos_token: str | None = None,
               sentencepiece_style: bool = False):
    self.python = tokenizers.HfTokenizer(tokenizer_json, add_bos=add_bos, bos_token=bos_token,
                                         eos_token=eos_token,
                                         sentencepiece_style=sentencepiece_style)
    self.add_bos = self.python.add_bos
    self.add_eos = False
    super().__init__(extra_ids=0)

  @property
  def special_ids(self) -> frozenset[int]:
    return self.python.special_ids

  @property
  def bos_id(self):
    return self.python.bos_id

  @property
  def eos_id(self):
    return self.python.eos_id

  @property
  def unk_id(self):
    return None

  @property
  def _base_vocab_size(self):
    return self.python.vocab_size

  def _encode(self, s: str):
    return self.python.encode(s)

  def _decode(self, ids):
    return self.python.decode_ids(ids)

  def _encode_tf(self, s):
    ids = tf.py_function(lambda t: tf.constant(self._encode(t.numpy().decode("utf-8")), tf.int32),
                         [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids):
    text = tf.py_function(lambda t: tf.constant(self._decode(t.numpy().tolist())), [ids], tf.string)
    text.set_shape([])
    return text

  def __eq__(self, other):
    return isinstance(other, HfTokenizerVocabulary) and other.python == self.python
