"""`fineline convert` both ways against transformers: lossless, loadable, and strict on bad input."""

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
import transformers
from hf_fixtures import VARIED_TEXTS, hf_logits, make_hf_llama_dir
from safetensors.torch import load_file, save_file

from fineline import checkpointing, cli, fileio
from fineline.convert import hf
from fineline.models import llama
from fineline.tokenizers import load_vocabulary
from gcs_fixtures import gcs_bucket, gcs_emulator  # pylint: disable=unused-import

TOKENS_BxS = np.array([[1, 5, 300, 42, 7, 511, 2, 9]], np.int32)


def convert(*args):
  return cli.main(["convert", *map(str, args)])


def hf_state(directory):
  """Every tensor of an HF directory, read with torch/safetensors (not fineline's reader)."""
  state = {}
  for f in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
    state.update(load_file(f))
  for f in sorted(glob.glob(os.path.join(directory, "*.bin"))):
    state.update(torch.load(f, weights_only=True))
  return state


@pytest.mark.parametrize("fmt,shards,dtype,tie", [
    ("safetensors", 1, torch.float32, False),
    ("safetensors", 3, torch.bfloat16, False),
    ("safetensors", 1, torch.float32, True),
    ("bin", 1, torch.float32, False),
    ("bin", 3, torch.bfloat16, True),
])
def test_round_trip_is_bitwise_identical(tmp_path, fmt, shards, dtype, tie):
  src = make_hf_llama_dir(tmp_path / "src", fmt=fmt, shards=shards, dtype=dtype, tie=tie)
  n_files = len(glob.glob(os.path.join(src, f"*.{fmt}")))
  assert (n_files > 1) == (shards > 1)
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt") == 0
  meta = checkpointing.read_meta(str(tmp_path / "ckpt"))
  assert meta["model_config"]["param_dtype"] == str(dtype).removeprefix("torch.")
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "back") == 0
  before, after = hf_state(src), hf_state(tmp_path / "back")
  assert sorted(after) == sorted(before)
  for name, tensor in before.items():
    assert after[name].dtype == tensor.dtype, name
    assert torch.equal(after[name].view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       tensor.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)), name
  assert sorted(os.listdir(tmp_path)) == ["back", "ckpt", "src"]  # no staging left behind


@pytest.fixture()
def loading_warnings():
  """Warnings transformers logs while loading (its loggers do not propagate to the root)."""
  records = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = records.append
  logger = logging.getLogger("transformers")
  logger.addHandler(handler)
  yield records
  logger.removeHandler(handler)


def _load_hf(directory):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(
      directory, attn_implementation="eager", output_loading_info=True)
  return model.eval(), info


def test_export_loads_in_transformers_without_warnings(tmp_path, loading_warnings):
  src = make_hf_llama_dir(tmp_path / "src", shards=2, num_kv_heads=1, rope_theta=5e5, seed=7)
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt") == 0
  # Small shards so the export writes several files and an index.
  hf.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "back"), max_shard_bytes=200_000)
  assert os.path.isfile(tmp_path / "back" / "model.safetensors.index.json")
  model, info = _load_hf(str(tmp_path / "back"))
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  assert [r.getMessage() for r in loading_warnings] == []
  np.testing.assert_array_equal(hf_logits(model, TOKENS_BxS), hf_logits(src, TOKENS_BxS))
  params, cfg, _ = checkpointing.load_params(str(tmp_path / "ckpt"), as_numpy=True)
  ours = np.asarray(llama.Llama(cfg).apply({"params": params}, TOKENS_BxS))
  np.testing.assert_allclose(ours, hf_logits(model, TOKENS_BxS), atol=1e-4, rtol=0)

  # The same check sees a broken directory: drop a tensor and transformers complains.
  broken = tmp_path / "broken"
  shutil.copytree(tmp_path / "back", broken)
  index = json.loads((broken / "model.safetensors.index.json").read_text())
  fname = index["weight_map"]["model.norm.weight"]
  state = load_file(broken / fname)
  del state["model.norm.weight"]
  save_file(state, broken / fname, metadata={"format": "pt"})
  del index["weight_map"]["model.norm.weight"]
  (broken / "model.safetensors.index.json").write_text(json.dumps(index))
  _, info = _load_hf(str(broken))
  assert "model.norm.weight" in info["missing_keys"]


def test_dtype_cast_on_import_and_export(tmp_path):
  src = make_hf_llama_dir(tmp_path / "src")
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt", "--dtype", "bfloat16") == 0
  assert checkpointing.read_meta(str(tmp_path / "ckpt"))["model_config"]["param_dtype"] == "bfloat16"
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "bf16") == 0
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "fp32", "--dtype", "float32") == 0
  before, bf16, fp32 = hf_state(src), hf_state(tmp_path / "bf16"), hf_state(tmp_path / "fp32")
  assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  for name, tensor in before.items():
    want = tensor.to(torch.bfloat16)
    assert bf16[name].dtype == torch.bfloat16 and torch.equal(bf16[name], want), name
    assert fp32[name].dtype == torch.float32 and torch.equal(fp32[name], want.float()), name


def test_scanned_checkpoint_exports_like_unscanned(tmp_path):
  src = make_hf_llama_dir(tmp_path / "src", num_layers=3)
  params, cfg, _ = hf.load_hf_checkpoint(src)
  checkpointing.save_params(str(tmp_path / "ckpt"), llama.scan_layers(params, cfg.num_layers),
                            cfg.replace(scan_layers=True))
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "back") == 0
  before, after = hf_state(src), hf_state(tmp_path / "back")
  assert sorted(before) == sorted(after)
  assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", ["sentencepiece", "bpe"])
def test_tokenizer_travels_with_the_checkpoint(tmp_path, kind):
  src = make_hf_llama_dir(tmp_path / "src", tokenizer=kind)
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt") == 0
  vocab = load_vocabulary(str(tmp_path / "ckpt" / "tokenizer"))
  _, _, tokenizer_dir = hf.load_hf_checkpoint(src)
  assert tokenizer_dir == src
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "back") == 0
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
  for text in VARIED_TEXTS:
    assert ([vocab.bos_id] if vocab.add_bos else []) + list(vocab.encode(text)) == \
        theirs(text).input_ids, text


@pytest.mark.parametrize("form", ["rope_parameters", "rope_theta", "absent"])
def test_config_forms(tmp_path, form):
  src = make_hf_llama_dir(tmp_path / "src", rope_theta=10000.0 if form == "absent" else 250000.0)
  config_path = os.path.join(src, "config.json")
  config = json.load(open(config_path))
  theta = config.pop("rope_parameters")["rope_theta"]
  if form == "rope_parameters":
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
  elif form == "rope_theta":
    config["rope_theta"] = theta
  json.dump(config, open(config_path, "w"))
  params, cfg, _ = hf.load_hf_checkpoint(src)
  assert cfg.rope_theta == theta
  ours = np.asarray(llama.Llama(cfg).apply({"params": params}, TOKENS_BxS))
  np.testing.assert_allclose(ours, hf_logits(src, TOKENS_BxS), atol=1e-4, rtol=0)


# --- bad input: a one-line error naming the problem, and no output at all -------------------


def _rewrite(directory, change):
  """Applies `change(state)` to a single-file safetensors checkpoint."""
  path = os.path.join(directory, "model.safetensors")
  state = load_file(path)
  change(state)
  save_file(state, path, metadata={"format": "pt"})


def _edit_config(directory, **changes):
  path = os.path.join(directory, "config.json")
  config = json.load(open(path))
  config.update(changes)
  json.dump(config, open(path, "w"))


def _drop_up(d):
  _rewrite(d, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))


def _add_q_norm(d):
  _rewrite(d, lambda s: s.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(16)}))


def _bad_k_shape(d):
  _rewrite(d, lambda s: s.update({"model.layers.0.self_attn.k_proj.weight": torch.ones(48, 64)}))


def _truncate(d):
  path = os.path.join(d, "model.safetensors")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garbage_bin(d):
  with open(os.path.join(d, "pytorch_model.bin"), "wb") as f:
    f.write(b"\x00not a pickle" * 100)


class _RunsCode:
  def __reduce__(self):
    return (os.mkdir, ("/tmp/fineline-test-pickle-ran",))


def _pickle_with_code(d):
  path = os.path.join(d, "pytorch_model.bin")
  state = torch.load(path, weights_only=True)
  state["model.norm.weight"] = _RunsCode()
  torch.save(state, path)


def _drop_shard(d):
  os.remove(sorted(glob.glob(os.path.join(d, "model-*.safetensors")))[-1])


BAD_INPUTS = {
    "missing_tensor": (dict(), _drop_up, ["missing", "model.layers.1.mlp.up_proj.weight"]),
    "extra_tensor": (dict(), _add_q_norm, ["unexpected", "model.layers.0.self_attn.q_norm.weight"]),
    "wrong_shape": (dict(), _bad_k_shape,
                    ["model.layers.0.self_attn.k_proj.weight", "(48, 64)", "expected (32, 64)"]),
    "config_more_layers": (dict(), lambda d: _edit_config(d, num_hidden_layers=3),
                           ["missing", "model.layers.2.", "3 layers"]),
    "config_tied_untied": (dict(), lambda d: _edit_config(d, tie_word_embeddings=True),
                           ["lm_head.weight differs"]),
    "not_llama": (dict(), lambda d: _edit_config(d, model_type="mistral",
                                                 architectures=["MistralForCausalLM"]),
                  ["MistralForCausalLM", "config.json"]),
    "corrupt_safetensors": (dict(), _truncate, ["model.safetensors"]),
    "corrupt_bin": (dict(fmt="bin"), _garbage_bin, ["pytorch_model.bin", "unreadable"]),
    "pickle_with_code": (dict(fmt="bin"), _pickle_with_code,
                         ["pytorch_model.bin", "never unpickled"]),
    "missing_shard": (dict(shards=2), _drop_shard, ["listed in the index is missing", "-of-0000"]),
    "no_config": (dict(), lambda d: os.remove(os.path.join(d, "config.json")), ["config.json"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hf_input_is_refused_and_writes_nothing(tmp_path, capsys, case):
  kw, damage, words = BAD_INPUTS[case]
  src = make_hf_llama_dir(tmp_path / "src", **kw)
  damage(src)
  capsys.readouterr()
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt") == 1
  err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar
  assert err.startswith("fineline convert: error:"), err
  for word in words:
    assert word in err, (word, err)
  assert os.listdir(tmp_path) == ["src"]
  assert not os.path.exists("/tmp/fineline-test-pickle-ran")


def test_existing_output_needs_overwrite(tmp_path, capsys):
  src = make_hf_llama_dir(tmp_path / "src")
  (tmp_path / "ckpt").mkdir()
  (tmp_path / "ckpt" / "keep.txt").write_text("mine")
  capsys.readouterr()
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt") == 1
  assert "already exists" in capsys.readouterr().err
  assert os.listdir(tmp_path / "ckpt") == ["keep.txt"]
  assert convert("--from_hf", src, "--out", tmp_path / "ckpt", "--overwrite") == 0
  assert "keep.txt" not in os.listdir(tmp_path / "ckpt")
  (tmp_path / "back").mkdir()
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "back") == 1
  assert "--overwrite" in capsys.readouterr().err
  assert os.listdir(tmp_path / "back") == []
  assert convert("--to_hf", tmp_path / "ckpt", "--out", tmp_path / "back", "--overwrite") == 0
  assert "config.json" in os.listdir(tmp_path / "back")
  assert sorted(os.listdir(tmp_path)) == ["back", "ckpt", "src"]


def test_failed_export_leaves_nothing(tmp_path, capsys):
  """A checkpoint whose last layer is malformed fails after shards were already written."""
  src = make_hf_llama_dir(tmp_path / "src")
  params, cfg, _ = hf.load_hf_checkpoint(src)
  params["final_norm"]["scale"] = params["final_norm"]["scale"][:10]
  checkpointing.save_params(str(tmp_path / "ckpt"), params, cfg)
  with pytest.raises(ValueError, match="model.norm.weight"):
    hf.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "back"), max_shard_bytes=50_000)
  assert sorted(os.listdir(tmp_path)) == ["ckpt", "src"]
  assert convert("--to_hf", tmp_path / "src", "--out", tmp_path / "back") == 1
  assert "not a fineline checkpoint" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["ckpt", "src"]


def test_round_trip_through_a_bucket(tmp_path, gcs_bucket, capsys):
  src = make_hf_llama_dir(tmp_path / "src", tokenizer="sentencepiece")
  assert convert("--from_hf", src, "--out", f"{gcs_bucket}/ckpt") == 0
  assert checkpointing.read_meta(f"{gcs_bucket}/ckpt")["source"]["hf_dir"] == str(src)
  assert convert("--to_hf", f"{gcs_bucket}/ckpt", "--out", f"{gcs_bucket}/hf") == 0
  capsys.readouterr()
  assert convert("--to_hf", f"{gcs_bucket}/ckpt", "--out", f"{gcs_bucket}/hf") == 1
  assert f"{gcs_bucket}/hf already exists; pass --overwrite" in capsys.readouterr().err
  back = fileio.download(f"{gcs_bucket}/hf")
  assert os.path.isfile(os.path.join(back, "tokenizer.model"))
  before, after = hf_state(src), hf_state(back)
  assert sorted(after) == sorted(before)
  for name, tensor in before.items():
    assert torch.equal(after[name], tensor), name
