"""fileio on a local directory and on a bucket of a real Cloud Storage API (the emulator)."""

import json
import os

import pytest

from fineline import fileio
from gcs_fixtures import gcs_bucket, gcs_emulator  # pylint: disable=unused-import


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  return request.getfixturevalue("gcs_bucket")


def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(fileio.resolve("gs://b/run")) == "gs://b/run"
  assert os.fspath(fileio.resolve("run")) == os.path.join(str(tmp_path), "run")


def test_atomic_write_publishes_whole_files_and_directories(root):
  fileio.write_json(f"{root}/out/a.json", {"x": 1})
  assert json.loads(fileio.resolve(f"{root}/out/a.json").read_text()) == {"x": 1}
  with fileio.atomic_output(f"{root}/report") as staged:
    os.makedirs(os.path.join(staged, "plots"))
    for rel in ("report.md", "plots/p.png"):
      with open(os.path.join(staged, rel), "w", encoding="utf-8") as f:
        f.write(rel)
  report = fileio.resolve(f"{root}/report")
  assert (report / "plots" / "p.png").read_text() == "plots/p.png"
  # A second publish replaces the first entirely.
  with fileio.atomic_output(report) as staged:
    os.makedirs(staged)
    with open(os.path.join(staged, "report.md"), "w", encoding="utf-8") as f:
      f.write("new")
  assert sorted(p.name for p in report.iterdir()) == ["report.md"]
  assert (report / "report.md").read_text() == "new"


def test_a_failed_atomic_write_leaves_nothing(root):
  for target in (f"{root}/failed.json", f"{root}/failed_dir"):
    with pytest.raises(RuntimeError, match="broke"):
      with fileio.atomic_output(target) as staged:
        os.makedirs(staged)
        with open(os.path.join(staged, "half"), "w", encoding="utf-8") as f:
          f.write("half")
        raise RuntimeError("broke")
  base = fileio.resolve(root)
  assert not base.exists() or list(base.iterdir()) == []


def test_jsonl_log_reads_back_in_order_across_writers(root):
  path = f"{root}/run/metrics.jsonl"
  first = fileio.JsonlLog(path, min_interval_s=3600)  # on a bucket: one part per flush
  for step in (1, 2, 3):
    first.append({"step": step})
  first.close()
  second = fileio.JsonlLog(path, min_interval_s=3600)  # a resumed run goes on
  second.append({"step": 4})
  second.flush()
  second.append({"step": 5})
  second.close()
  assert [r["step"] for r in fileio.read_jsonl(path)] == [1, 2, 3, 4, 5]
  assert fileio.log_exists(path) and not fileio.log_exists(f"{root}/run/other.jsonl")
  if fileio.is_url(path):  # one immutable part object per flush, none per append
    parts = fileio.resolve(f"{path}{fileio.PARTS_SUFFIX}")
    assert len(list(parts.iterdir())) == 3


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text('{"a": 1}\n{"a": 2')
  assert fileio.read_jsonl(path, repair=True) == [{"a": 1}]
  log = fileio.JsonlLog(path)
  log.append({"a": 3})
  log.close()
  assert fileio.read_jsonl(path) == [{"a": 1}, {"a": 3}]


def test_access_check_names_the_path(tmp_path, gcs_bucket):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(PermissionError, match=r"^MODEL_DIR .*file/run is not writable: "):
    fileio.check_access(str(blocker / "run"), "MODEL_DIR", write=True)
  missing = "gs://no-such-bucket-anywhere/run"
  with pytest.raises(PermissionError) as info:
    fileio.check_access(missing, "MODEL_DIR", write=True)
  assert str(info.value).startswith(f"MODEL_DIR {missing} is not writable: ")
  assert "\n" not in str(info.value)
  fileio.check_access(f"{gcs_bucket}/run", "MODEL_DIR", write=True)  # a bucket that exists
