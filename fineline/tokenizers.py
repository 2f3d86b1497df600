"""Tokenizers that give exactly the ids of `transformers`, with or without seqio.

Two kinds of tokenizer files occur in LLaMA-family checkpoints:
- SentencePiece `tokenizer.model` (LLaMA, OpenLLaMA, Amber): `SentencePieceTokenizer`.
- Hugging Face `tokenizer.json` (LLaMA 3, DeepSeek, …): `HfTokenizer`.
`load_tokenizer(path)` gives one of these, without TensorFlow (what the scorer needs);
`load_vocabulary(path)` the same tokenizer as a `seqio.Vocabulary`
(`SentencePieceVocabulary`, `HfTokenizerVocabulary` of `fineline.vocabularies`, which
encode and decode in Python through the objects here), for seqio pipelines.

Contract shared by both: `.encode(text)` gives ids WITHOUT special tokens; `.add_bos` says
whether the Hugging Face tokenizer of the same files prepends BOS by default, so
`([vocab.bos_id] if vocab.add_bos else []) + vocab.encode(text)` equals
`AutoTokenizer.from_pretrained(dir)(text).input_ids`.

transformers tokenizes a SentencePiece model with a `tokenizers` pipeline that differs
from SentencePiece's own normalizer in two ways, mirrored here: the "▁" dummy prefix is
added only when the text does not already start with a space, and the model's
normalization rules (whitespace collapsing, NFKC) are not applied. Baichuan's own
`BaichuanTokenizer` instead calls SentencePiece as it is, the model's normalizer included
(`llama_style=False`).
"""

from __future__ import annotations

import json
import os

import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from fineline import fileio
from fineline.errors import UserError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
"""The files of a Hugging Face tokenizer that travel with a checkpoint."""
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                  "CodeLlamaTokenizerFast")


def __getattr__(name: str):
  if name in ("SentencePieceVocabulary", "HfTokenizerVocabulary"):
    from fineline import vocabularies  # pylint: disable=import-outside-toplevel
    return getattr(vocabularies, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def llama_normalizer() -> sentencepiece_model_pb2.NormalizerSpec:
  """The normalizer overrides that make SentencePiece tokenize as transformers' Llama
  tokenizers do (no dummy prefix, no whitespace collapsing, no NFKC)."""
  return sentencepiece_model_pb2.NormalizerSpec(
      add_dummy_prefix=False, remove_extra_whitespaces=False, name="identity",
      precompiled_charsmap=b"")


class SentencePieceTokenizer:
  """A SentencePiece `tokenizer.model`, tokenized as transformers' LlamaTokenizer does.
  `decode` follows `seqio.Vocabulary.decode` (ids past the vocabulary become UNK, text
  ends at the first EOS)."""

  def __init__(self, model_file: str, add_bos: bool = False, add_eos: bool = False,
               llama_style: bool = True):
    self.model_file = model_file
    self.add_bos, self.add_eos, self.llama_style = add_bos, add_eos, llama_style
    with open(model_file, "rb") as f:
      model = sentencepiece_model_pb2.ModelProto.FromString(f.read())
    if llama_style:  # as seqio applies `normalizer_spec_overrides`
      model.normalizer_spec.MergeFrom(llama_normalizer())
      model.denormalizer_spec.MergeFrom(llama_normalizer())
    self.tokenizer = sentencepiece.SentencePieceProcessor()
    self.tokenizer.LoadFromSerializedProto(model.SerializeToString())

  @property
  def special_ids(self) -> frozenset[int]:
    """Ids Hugging Face's `decode(skip_special_tokens=True)` leaves out: BOS, EOS, UNK."""
    return frozenset(i for i in (self.bos_id, self.eos_id, self.unk_id)
                     if i is not None and i >= 0)

  @property
  def bos_id(self) -> int:
    return self.tokenizer.bos_id()

  @property
  def eos_id(self) -> int:
    return self.tokenizer.eos_id()

  @property
  def unk_id(self) -> int:
    return self.tokenizer.unk_id()

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.GetPieceSize()

  def encode(self, s: str) -> list[int]:
    if self.llama_style and s and not s.startswith(" "):
      s = " " + s  # the dummy prefix, only where the text has no leading space
    return self.tokenizer.EncodeAsIds(s)

  def decode(self, ids) -> str:
    return self.decode_ids(_up_to_eos(ids, self.eos_id))

  def decode_ids(self, ids) -> str:
    """The text of `ids` as they are (seqio's `_decode`)."""
    size, unk = self.vocab_size, self.unk_id
    text = self.tokenizer.DecodeIds([unk if i >= size else int(i) for i in ids])
    if not self.llama_style:
      return text
    return text[1:] if text.startswith(" ") else text  # the dummy prefix's space



class HfTokenizer:
  """A Hugging Face `tokenizer.json` run through the `tokenizers` library."""

  def __init__(self, tokenizer_json: str, *, add_bos: bool | None = None,
               bos_token: str | None = None, eos_token: str | None = None,
               sentencepiece_style: bool = False):
    import tokenizers
    self._path = tokenizer_json
    try:
      self._tok = tokenizers.Tokenizer.from_file(tokenizer_json)
    except Exception as e:
      raise UserError(f"{tokenizer_json}: unreadable tokenizer.json ({e})") from e
    if sentencepiece_style:
      _as_llama_pipeline(self._tok)
    self._bos_id = self._token_id(bos_token)
    self._eos_id = self._token_id(eos_token)
    if add_bos is None:  # what the file's post-processor does
      with_special = self._tok.encode("a", add_special_tokens=True).ids
      plain = self._tok.encode("a", add_special_tokens=False).ids
      add_bos = (self._bos_id is not None and len(with_special) > len(plain)
                 and with_special[0] == self._bos_id)
    self.add_bos = add_bos
    self.add_eos = False

  def _token_id(self, token: str | None) -> int | None:
    if token is None:
      return None
    token_id = self._tok.token_to_id(token)
    if token_id is None:
      raise UserError(f"{self._path}: special token {token!r} is not in the vocabulary")
    return token_id

  @property
  def bos_id(self):
    return self._bos_id

  @property
  def eos_id(self):
    return self._eos_id

  @property
  def unk_id(self):
    return None

  @property
  def special_ids(self) -> frozenset[int]:
    """Ids Hugging Face's `decode(skip_special_tokens=True)` leaves out: BOS, EOS and the
    added tokens the file flags special."""
    added = self._tok.get_added_tokens_decoder()
    return frozenset({i for i in (self._bos_id, self._eos_id) if i is not None}
                     | {i for i, token in added.items() if token.special})

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, s: str) -> list[int]:
    return self._tok.encode(s, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    return self.decode_ids(_up_to_eos(ids, self.eos_id))

  def decode_ids(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def __eq__(self, other):
    return isinstance(other, HfTokenizer) and other._path == self._path


def _up_to_eos(ids, eos_id: int | None) -> list[int]:
  ids = [int(i) for i in ids]
  return ids[:ids.index(eos_id) + 1] if eos_id is not None and eos_id in ids else ids


def _as_llama_pipeline(tok) -> None:
  """The pipeline transformers' LlamaTokenizer builds around a SentencePiece-derived BPE
  vocabulary, whatever normalizer the tokenizer.json itself carries."""
  from tokenizers import decoders, pre_tokenizers
  tok.normalizer = None
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(content=" ", left=1)])


def load_tokenizer(path: str) -> SentencePieceTokenizer | HfTokenizer:
  """The tokenizer of a `tokenizer.model`, a `tokenizer.json`, or a directory holding one
  (with its `tokenizer_config.json`, which says whether BOS is added)."""
  kind, kwargs = _tokenizer_spec(path)
  return (HfTokenizer if kind == "json" else SentencePieceTokenizer)(**kwargs)


def load_vocabulary(path: str):
  """`load_tokenizer(path)` as a `seqio.Vocabulary` (imports seqio and TensorFlow)."""
  from fineline import vocabularies  # pylint: disable=import-outside-toplevel
  kind, kwargs = _tokenizer_spec(path)
  cls = vocabularies.HfTokenizerVocabulary if kind == "json" else (
      vocabularies.SentencePieceVocabulary)
  return cls(**kwargs)


def _tokenizer_spec(path: str) -> tuple[str, dict]:
  """("json" | "sentencepiece", the tokenizer's constructor arguments); local or a URL."""
  path = fileio.download(path)
  if os.path.isdir(path):
    directory, model_file, json_file = path, None, None
    if os.path.isfile(os.path.join(path, "tokenizer.model")):
      model_file = os.path.join(path, "tokenizer.model")
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      json_file = os.path.join(path, "tokenizer.json")
    if not (model_file or json_file):
      raise FileNotFoundError(f"{path}: no tokenizer.model or tokenizer.json")
  elif os.path.isfile(path):
    directory = os.path.dirname(path)
    model_file = path if not path.endswith(".json") else None
    json_file = path if path.endswith(".json") else None
  else:
    raise FileNotFoundError(f"{path}: no such tokenizer file or directory")
  config = _tokenizer_config(directory)
  is_llama_class = config.get("tokenizer_class") in _LLAMA_CLASSES
  # transformers prefers tokenizer.json; for its LLaMA class both files give the same ids.
  if json_file and not (is_llama_class and model_file):
    sp_style = is_llama_class and _byte_fallback_bpe(json_file)
    return "json", dict(tokenizer_json=json_file, add_bos=config.get("add_bos_token"),
                        bos_token=_token_str(config.get("bos_token")),
                        eos_token=_token_str(config.get("eos_token")),
                        sentencepiece_style=sp_style)
  # transformers adds BOS to a bare SentencePiece model only when the config asks for it.
  return "sentencepiece", dict(
      model_file=model_file, add_bos=bool(config.get("add_bos_token", False)),
      add_eos=bool(config.get("add_eos_token", False)),
      llama_style=config.get("tokenizer_class") != "BaichuanTokenizer")


def tokenizer_files(directory) -> list[str]:
  """The `TOKENIZER_FILES` present in `directory` (none when it does not exist)."""
  directory = fileio.resolve(directory)
  if not directory.is_dir():
    return []
  return [f for f in TOKENIZER_FILES if (directory / f).is_file()]


def find_tokenizer_dir(ckpt) -> str | None:
  """A checkpoint's tokenizer: `<ckpt>/tokenizer`, or for a run's checkpoint
  (MODEL_DIR/checkpoints/<step>) `MODEL_DIR/tokenizer`; None when neither has one. Local
  or a URL."""
  ckpt = fileio.resolve(ckpt)
  for candidate in (ckpt / "tokenizer", ckpt.parent.parent / "tokenizer"):
    if tokenizer_files(candidate):
      return os.fspath(candidate)
  return None


def _tokenizer_config(directory: str) -> dict:
  path = os.path.join(directory, "tokenizer_config.json")
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from e


def _token_str(token) -> str | None:
  return token.get("content") if isinstance(token, dict) else token


def _byte_fallback_bpe(json_file: str) -> bool:
  with open(json_file) as f:
    model = json.load(f).get("model", {})
  return model.get("type") == "BPE" and bool(model.get("byte_fallback"))
