import json
import os

import numpy as np
import pytest

import train_fixtures
from fineline.data import pretrain


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  d = train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))
  pretrain.register_local_task("pretrain_test", f"{d}/*.jsonl", f"{d}/tokenizer.model",
                               cache_dir=f"{d}/cache")
  return d


def _data(task="pretrain_test", **kw):
  args = dict(sequence_length=16, global_batch_size=4, seed=3, shuffle_buffer_size=20)
  args.update(kw)
  return pretrain.PretrainData(task, **args)


def test_packs_documents_into_shifted_fixed_length_rows(corpus):
  batch = next(_data())
  assert batch["inputs"].shape == batch["targets"].shape == (4, 16)
  assert batch["inputs"].dtype == np.int32 and batch["weights"].dtype == np.float32
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  assert batch["inputs"][0, 0] == 1  # BOS opens the first document
  flat = batch["targets"].ravel()
  assert (flat == 2).sum() >= 1  # documents end with EOS and run into the next one


def test_same_seed_same_stream_and_restore_is_exact(corpus):
  data = _data()
  for _ in range(3):
    next(data)
  state = json.loads(json.dumps(data.get_state()))  # survives JSON
  expected = [next(data)["inputs"] for _ in range(4)]
  fresh = _data()
  fresh.set_state(state)
  assert fresh.batches == 3
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["inputs"], want)
  replay = _data()
  got = [next(replay)["inputs"] for _ in range(7)][3:]
  for a, b in zip(got, expected):
    np.testing.assert_array_equal(a, b)
  other_seed = next(_data(seed=4))["inputs"]
  assert not np.array_equal(other_seed, next(_data())["inputs"])


def test_hosts_read_disjoint_shards(corpus):
  rows = [next(_data(process_index=i, process_count=2, shuffle_buffer_size=0))["inputs"]
          for i in range(2)]
  assert rows[0].shape == (2, 16)
  assert not np.array_equal(rows[0], rows[1])


def test_bad_jsonl_names_file_and_line(tmp_path, corpus):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "ok"}\n{"txt": "no text field"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON object with a 'text' field"):
    pretrain.register_local_task("bad_task", str(bad), f"{corpus}/tokenizer.model",
                                 cache_dir=str(tmp_path / "cache"))


def test_unknown_task_names_the_registered_ones(corpus):
  with pytest.raises(ValueError, match="unknown task or mixture 'nope'.*pretrain_test"):
    pretrain.get_task("nope")
  with pytest.raises(FileNotFoundError, match="no files match"):
    pretrain.register_local_task("empty", os.path.join(corpus, "*.missing"),
                                 f"{corpus}/tokenizer.model")


def test_tokenizer_json_corpus_resumes_mid_epoch_with_the_same_batches(tmp_path, corpus):
  """A `tokenizer.json` vocabulary cannot tokenise in the graph: its corpus is tokenised
  once into cached id records, and the iterator's checkpoint restores exactly."""
  from hf_fixtures import make_bpe_tokenizer
  from fineline import tokenizers
  tok_dir = make_bpe_tokenizer(tmp_path / "tok")
  cache_dir = tmp_path / "cache"
  pretrain.register_local_task("pretrain_bpe", f"{corpus}/part0.jsonl", tok_dir,
                               cache_dir=str(cache_dir))
  assert [p.name.endswith(".ids.tfrecord") for p in cache_dir.iterdir()] == [True]
  data = _data(task="pretrain_bpe", seed=5)
  first = [next(data)["inputs"] for _ in range(3)]
  state = json.loads(json.dumps(data.get_state()))
  expected = [next(data)["inputs"] for _ in range(4)]
  fresh = _data(task="pretrain_bpe", seed=5)
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["inputs"], want)
  # The ids are the tokenizer's own, documents joined by EOS.
  vocab = tokenizers.load_vocabulary(tok_dir)
  assert set(np.concatenate(first).ravel()) <= set(range(vocab.vocab_size))


def test_old_format_position_skips_forward_with_a_warning(corpus, caplog):
  data = _data()
  for _ in range(3):
    next(data)
  state = {**data.get_state(), "iterator": "b2xkIGZvcm1hdA=="}
  del state["position"]
  fresh = _data()
  with caplog.at_level("WARNING"):
    fresh.set_state(state)
  assert "older format" in caplog.text and "skipping 3 batches" in caplog.text
  assert fresh.batches == 3 and next(fresh)["inputs"].shape == (4, 16)
