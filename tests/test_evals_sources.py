"""Where evaluation documents come from: user copies, the offline Arrow copies, oe-eval
request files, prepared TFDS datasets, and the error when none has them."""

import gzip
import json
import os

import pytest

from eval_fixtures import make_docs, write_jsonl, write_saved_arc

from evals import multiple_choice, sources

ARC = multiple_choice.TASKS[1].dataset  # arc_easy's spec


def test_user_jsonl_copy_comes_first(tmp_path):
  docs = make_docs("arc_easy", "validation", 3)
  write_jsonl(tmp_path / "arc_easy" / "validation.jsonl", docs)
  write_saved_arc(tmp_path, n=7)
  assert sources.load_split(ARC, "validation", str(tmp_path)) == docs


def test_offline_arrow_copy_and_saved_dataset_dict(tmp_path):
  import datasets
  write_saved_arc(tmp_path, n=7)
  docs = sources.load_split(ARC, "validation", str(tmp_path))
  assert docs == make_docs("arc_easy", "validation", 7)
  assert sources.available_splits(ARC, ["test", "validation"], str(tmp_path)) == ["validation"]
  piqa = multiple_choice.TASKS[3].dataset
  rows = make_docs("piqa", "train", 4)
  datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
      str(tmp_path / "piqa"))
  assert sources.load_split(piqa, "train", str(tmp_path)) == rows


def test_a_limit_reads_only_the_first_documents(tmp_path):
  write_saved_arc(tmp_path, n=7)
  whole = sources.load_split(ARC, "validation", str(tmp_path))
  assert sources.load_split(ARC, "validation", str(tmp_path), limit=3) == whole[:3]
  assert sources.load_split(ARC, "validation", str(tmp_path), limit=50) == whole
  docs = make_docs("arc_easy", "validation", 5)
  write_jsonl(tmp_path / "arc_easy" / "validation.jsonl", docs)
  assert sources.load_split(ARC, "validation", str(tmp_path), limit=2) == docs[:2]


def test_request_file_docs(tmp_path):
  spec = sources.DatasetSpec("lambada_x", request_file="lambada/x/requests.jsonl.gz")
  path = tmp_path / "oe_eval_tasks" / "lambada" / "x" / "requests.jsonl.gz"
  os.makedirs(path.parent)
  with gzip.open(path, "wt") as f:
    for doc_id in (0, 0, 1):  # one line per request, several per document
      f.write(json.dumps({"doc_id": doc_id, "doc": {"query": f"q{doc_id}"}}) + "\n")
  assert sources.load_split(spec, "test", str(tmp_path)) == [{"query": "q0"}, {"query": "q1"}]


def test_prepared_tfds_dataset(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds
  docs = make_docs("arc_easy", "validation", 3)

  class FinelineTestArc(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "id": tfds.features.Text(), "question": tfds.features.Text(),
          "choices": tfds.features.Sequence({"text": tfds.features.Text(),
                                             "label": tfds.features.Text()}),
          "answerKey": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"validation": self._generate_examples()}

    def _generate_examples(self):
      for i, doc in enumerate(docs):
        yield i, doc

  FinelineTestArc(data_dir=str(tmp_path / "tfds")).download_and_prepare()
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  spec = sources.DatasetSpec("arc_tfds_test", tfds_name="fineline_test_arc",
                             tfds_splits=(("validation", "validation"),),
                             from_tfds=multiple_choice._arc_tfds)
  got = sources.load_split(spec, "validation", str(tmp_path / "data"))
  # TFDS stores examples in its own (key-hash) order.
  assert sorted(got, key=lambda d: d["id"]) == docs


def test_missing_dataset_names_task_directory_and_places(tmp_path):
  with pytest.raises(sources.MissingDataError) as e:
    sources.load_split(ARC, "test", str(tmp_path), task="arc_easy")
  message = str(e.value)
  assert "'arc_easy'" in message and str(tmp_path) in message
  assert "hf_datasets/ai2_arc/ARC-Easy/test/" in message and "get_eval_data.sh" in message
