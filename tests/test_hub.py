"""Hub series (`fineline eval --hf_repo / --hf_repos`) run offline against a directory laid
out as the Hugging Face cache, read by huggingface_hub itself (HF_HUB_OFFLINE=1)."""

import hashlib
import json
import os
import threading

import pytest
from eval_fixtures import write_eval_data
from hf_fixtures import hf_llama_config, make_hf_llama_dir, make_sentencepiece_tokenizer

from fineline import cli
from fineline.evaluation import hub, series

AMBER_NAMES = [f"ckpt_{i:03d}" for i in range(360)] + ["main"]
SMALL_MODEL = dict(vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1,
                   num_heads=2, num_kv_heads=2)


def add_to_cache(cache_dir, repo, revision, src_dir=None, files=None):
  """Puts a directory's files into the cache as huggingface_hub lays a download out:
  blobs/<sha256>, snapshots/<commit>/<name> → ../../blobs/<sha256>, refs/<revision>.
  Without src_dir/files only the ref is written: a revision the cache cannot serve."""
  storage = os.path.join(cache_dir, "models--" + repo.replace("/", "--"))
  commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
  os.makedirs(os.path.join(storage, "refs"), exist_ok=True)
  with open(os.path.join(storage, "refs", revision), "w") as f:
    f.write(commit)
  entries = dict(files or {})
  for name in sorted(os.listdir(src_dir)) if src_dir else []:
    with open(os.path.join(src_dir, name), "rb") as f:
      entries[name] = f.read()
  if not entries:
    return commit
  snapshot = os.path.join(storage, "snapshots", commit)
  os.makedirs(snapshot, exist_ok=True)
  os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
  for name, data in entries.items():
    blob = hashlib.sha256(data).hexdigest()
    with open(os.path.join(storage, "blobs", blob), "wb") as f:
      f.write(data)
    os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snapshot, name))
  return commit


@pytest.fixture()
def offline(monkeypatch, tmp_path):
  cache = tmp_path / "hf_cache"
  cache.mkdir()
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setattr(hub, "RETRY_DELAYS_S", (0, 0))
  return str(cache)


def test_revision_ranges_and_lists():
  amber = hub.select_revisions("ckpt_000:ckpt_359:10", AMBER_NAMES, "LLM360/Amber")
  assert amber[:3] == ["ckpt_000", "ckpt_010", "ckpt_020"] and amber[-1] == "ckpt_350"
  assert len(amber) == 36
  baichuan = [f"train_{t:05d}B" for t in range(220, 2421, 220)] + ["main"]
  assert hub.select_revisions("train_00220B:train_02420B", baichuan, "b") == baichuan[:-1]
  assert hub.select_revisions("ckpt_003,ckpt_001", AMBER_NAMES, "a") == ["ckpt_003", "ckpt_001"]
  assert hub.select_revisions("ckpt_8:ckpt_10", None, "a") == ["ckpt_8", "ckpt_9", "ckpt_10"]

  with pytest.raises(ValueError) as e:
    hub.select_revisions("ckpt_400:ckpt_500:10", AMBER_NAMES, "LLM360/Amber")
  assert str(e.value) == ("--revisions 'ckpt_400:ckpt_500:10' matched none of LLM360/Amber's "
                          "361 revisions (ckpt_000, ckpt_001, …, ckpt_358, ckpt_359, main)")
  with pytest.raises(ValueError, match=r"step_5 not among LLM360/Amber's revisions"):
    hub.select_revisions("ckpt_001,step_5", AMBER_NAMES, "LLM360/Amber")
  with pytest.raises(ValueError, match="differ only in their number"):
    hub.select_revisions("ckpt_000:train_00220B", AMBER_NAMES, "a")
  with pytest.raises(ValueError, match="STRIDE must be a positive integer"):
    hub.select_revisions("ckpt_000:ckpt_010:0", AMBER_NAMES, "a")


def test_tokens_per_series():
  amber = hub.checkpoint_for("LLM360/Amber", "ckpt_010")
  assert (amber.step, amber.tokens) == (10, round(11 * 1259.13e9 / 360))
  assert hub.checkpoint_for("LLM360/Amber", "ckpt_359").tokens == 1_259_130_000_000
  assert hub.checkpoint_for("m-a-p/Amber-Reproduce-41.94B", None).tokens == 41_940_000_000
  assert hub.checkpoint_for("m-a-p/OpenLLaMA-Reproduce-1933.57B", None).tokens == 1_933_570_000_000
  baichuan = hub.checkpoint_for("baichuan-inc/Baichuan2-7B-Intermediate-Checkpoints",
                                "train_00220B")
  assert (baichuan.step, baichuan.tokens) == (None, 220_000_000_000)
  assert hub.checkpoint_for("LLM360/Amber", "ckpt_010", tokens_per_step=4e6).tokens == 40_000_000
  assert hub.checkpoint_for("someone/run", "step1000", tokens_per_step=2 ** 22).tokens == 1000 * 2 ** 22
  assert hub.checkpoint_for("someone/run", "main").tokens is None
  assert hub.checkpoint_for("01-ai/Yi-34B", None).tokens is None  # a size, not a token count
  assert amber.path == "hf://LLM360/Amber@ckpt_010"


def _weights_only(tmp_path, name, seed):
  """A tiny HF LLaMA checkpoint with Amber's ckpt_NNN contents: fp32 .bin shards with their
  index and config.json, no tokenizer."""
  return make_hf_llama_dir(tmp_path / "src" / name, fmt="bin", shards=2, seed=seed, **SMALL_MODEL)


def test_prefetch_delete_and_disk_bound(offline, tmp_path, monkeypatch):
  names = [f"ckpt_{i:03d}" for i in range(4)]
  for i, name in enumerate(names):
    add_to_cache(offline, "LLM360/Amber", name, _weights_only(tmp_path, name, i))
  started, deleted, scored = [], [], []
  next_started = {name: threading.Event() for name in names}
  download, delete = hub.Client.download, hub.Client.delete

  def recording_download(self, repo, revision, patterns):
    if patterns != hub.SMALL_FILES:  # the weights: what takes the disk
      assert len(started) - len(deleted) < 2, "a third checkpoint on disk"
      started.append(revision)
      next_started[revision].set()
    return download(self, repo, revision, patterns)

  def recording_delete(self, repo, revision):
    deleted.append(revision)
    return delete(self, repo, revision)

  monkeypatch.setattr(hub.Client, "download", recording_download)
  monkeypatch.setattr(hub.Client, "delete", recording_delete)
  monkeypatch.setattr(hub.Client, "is_cached", lambda *_: False)  # as if fetched from the Hub

  def score(snapshot, ckpt):
    later = names.index(ckpt.revision) + 1
    if later < len(names):  # the next download runs while this one is scored
      assert next_started[names[later]].wait(60), f"{names[later]} not prefetched"
    assert os.path.isfile(os.path.join(snapshot, "pytorch_model.bin.index.json"))
    scored.append(ckpt.revision)
    return {"tasks": {"t": {"acc": 0.5}}, "step": ckpt.step, "tokens": ckpt.tokens}

  client = hub.Client()
  assert client.offline and client.cache_dir == offline
  plan = hub.plan(client, repo="LLM360/Amber", revisions="ckpt_000:ckpt_003")
  output = str(tmp_path / "out.jsonl")
  assert hub.evaluate(plan, output, score, client=client, progress=False) == 4
  assert scored == started == deleted == names
  from huggingface_hub import scan_cache_dir
  assert not scan_cache_dir(offline).repos  # snapshots, blobs and refs gone
  blobs = os.path.join(offline, "models--LLM360--Amber", "blobs")
  assert not os.path.isdir(blobs) or not os.listdir(blobs)
  records = series.read_records(output)
  assert [r["checkpoint"] for r in records] == [f"hf://LLM360/Amber@{n}" for n in names]
  assert [r["tokens"] for r in records] == [round((i + 1) * 1259.13e9 / 360) for i in range(4)]


@pytest.mark.parametrize("why", ["cached_before_the_run", "keep"])
def test_cached_before_or_kept_is_not_deleted(offline, tmp_path, monkeypatch, why):
  add_to_cache(offline, "LLM360/Amber", "ckpt_000", _weights_only(tmp_path, "ckpt_000", 0))
  add_to_cache(offline, "LLM360/Amber", "ckpt_001", _weights_only(tmp_path, "ckpt_001", 1))
  if why == "keep":
    monkeypatch.setattr(hub.Client, "is_cached", lambda *_: False)
  client = hub.Client()
  plan = hub.plan(client, repo="LLM360/Amber", revisions="ckpt_000,ckpt_001")
  score = lambda snapshot, ckpt: {"tasks": {}}
  assert hub.evaluate(plan, str(tmp_path / "a.jsonl"), score, client=client,
                      keep=why == "keep", progress=False) == 2
  from huggingface_hub import scan_cache_dir
  (repo,) = scan_cache_dir(offline).repos
  assert len(repo.revisions) == 2


def test_eval_hf_repo_end_to_end(offline, tmp_path, capsys, monkeypatch):
  """Amber-like repository: ckpt_NNN revisions with weights only, the tokenizer on main,
  one revision of another architecture and one the cache cannot serve."""
  repo = "LLM360/Amber"
  for i in range(3):
    name = f"ckpt_{i:03d}"
    add_to_cache(offline, repo, name, _weights_only(tmp_path, name, i))
  add_to_cache(offline, repo, "main", make_sentencepiece_tokenizer(tmp_path / "tok"))
  mistral = dict(json.loads(hf_llama_config(**SMALL_MODEL).to_json_string()),
                 architectures=["MistralForCausalLM"], model_type="mistral")
  add_to_cache(offline, repo, "ckpt_003", files={"config.json": json.dumps(mistral).encode()})
  add_to_cache(offline, repo, "ckpt_004")  # listed, but its download fails
  data_dir = write_eval_data(tmp_path / "data", tasks=("arc_easy",), n=4)
  output = tmp_path / "amber.jsonl"
  fetched = {}
  download = hub.Client.download
  monkeypatch.setattr(hub.Client, "download", lambda self, repo, revision, patterns: (
      fetched.setdefault(revision, []).append(patterns), download(self, repo, revision,
                                                                  patterns))[1])
  args = ["eval", "--quiet", "--hf_repo", repo, "--revisions", "ckpt_000:ckpt_004:1",
          "--tasks", "arc_easy", "--data_dir", data_dir, "--output", str(output),
          "--batch_size", "4"]
  assert cli.main(args) == 0
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r["revision"] for r in records] == [f"ckpt_{i:03d}" for i in range(5)]
  for i, r in enumerate(records[:3]):
    assert (r["model"], r["step"], r["tokens"]) == (repo, i, round((i + 1) * 1259.13e9 / 360))
    assert r["tasks"]["arc_easy"]["n"] == 4 and not r.get("errors")
  assert records[3]["tasks"] == {} and "MistralForCausalLM" in records[3]["errors"]["checkpoint"]
  assert fetched["ckpt_003"] == [hub.SMALL_FILES]  # its weights were never asked for
  assert fetched["ckpt_000"] == [hub.SMALL_FILES, ["pytorch_model*.bin"]]
  assert "download failed 3 times" in records[4]["errors"]["download"]

  # A restart skips what is done and tries the failed download again, now served.
  add_to_cache(offline, repo, "ckpt_004", _weights_only(tmp_path, "ckpt_004", 4))
  capsys.readouterr()
  assert cli.main(args) == 0
  assert "evaluated 1 checkpoint(s)" in capsys.readouterr().out
  last = json.loads(output.read_text().splitlines()[-1])
  assert last["revision"] == "ckpt_004" and last["tasks"]["arc_easy"]["n"] == 4

  # A range that matches nothing says what the repository has, and writes nothing.
  assert cli.main([*args[:5], "ckpt_100:ckpt_200", *args[6:]]) == 1
  err = capsys.readouterr().err
  assert "matched none of LLM360/Amber's 6 revisions (ckpt_000, ckpt_001, …, ckpt_003, " \
         "ckpt_004, main)" in err
  assert len(output.read_text().splitlines()) == 6


def test_eval_hf_repos_pattern_with_a_tokenizer_repository(offline, tmp_path):
  for i, tokens in enumerate(("88.08", "41.94")):
    add_to_cache(offline, f"m-a-p/Amber-Reproduce-{tokens}B", "main",
                 make_hf_llama_dir(tmp_path / "src" / tokens, seed=i, **SMALL_MODEL))
  add_to_cache(offline, "m-a-p/Amber-Reproduce-hkg_amber_hf", "main",
               make_sentencepiece_tokenizer(tmp_path / "tok"))
  data_dir = write_eval_data(tmp_path / "data", tasks=("arc_easy",), n=3)
  output = tmp_path / "repro.jsonl"
  assert cli.main(["eval", "--quiet", "--hf_repos", "m-a-p/Amber-Reproduce-*B",
                   "--tokenizer", "m-a-p/Amber-Reproduce-hkg_amber_hf", "--tasks", "arc_easy",
                   "--data_dir", data_dir, "--output", str(output), "--batch_size", "4",
                   "--samples", str(tmp_path / "samples.jsonl")]) == 0
  records = [json.loads(line) for line in output.read_text().splitlines()]
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  assert {s["checkpoint"] for s in samples} == {r["checkpoint"] for r in records}
  assert [(r["repo"], r["tokens"]) for r in records] == [
      ("m-a-p/Amber-Reproduce-41.94B", 41_940_000_000),
      ("m-a-p/Amber-Reproduce-88.08B", 88_080_000_000)]
  assert all(r["tasks"]["arc_easy"]["n"] == 3 for r in records)
