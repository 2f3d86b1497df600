import importlib.util
import json
import re

import gin
import pytest

import train_fixtures
from fineline import cli

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install 'fineline[tpu]'; tools/test.sh installs it)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_plan_prints_memory_and_flops_for_a_faked_pod_mesh(corpus, tmp_path):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), BATCH_SIZE=8)
  out = train_fixtures.fineline(["plan", f"--gin_file={gin_path}", "--gin_file=mesh/tpu_v4_8.gin",
                                 f"--gin.MODEL_DIR='{tmp_path}/unused'", "--chip=TPU v4",
                                 "--mfu=0.5"])
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1} (4 devices)" in text
  for label in ("parameters", "optimizer state", "activations/temp", "6N + attention formula",
                "compiled (per device)", "step time at 50% MFU on TPU v4"):
    assert label in text
  # tiny: 0.2M fp32 params split 4 ways; AdamW keeps two moments of the same size.
  params_mib = float(re.search(r"parameters\s+([\d.]+) MiB", text).group(1))
  opt_mib = float(re.search(r"optimizer state\s+([\d.]+) MiB", text).group(1))
  assert 0.1 < params_mib < 0.3 and opt_mib == pytest.approx(2 * params_mib, rel=0.05)
  assert not (tmp_path / "unused").exists()  # planning writes nothing


@pytest.fixture
def plan_here(capsys):
  """`fineline plan ARGS` in this process (TPU targets need no faked CPU devices): (status,
  stdout, stderr); gin is cleared after."""
  def run(*args):
    status = cli.main(["plan", *args])
    out = capsys.readouterr()
    return status, out.out, out.err
  yield run
  gin.clear_config()


@needs_libtpu
def test_plan_compiles_tiny_for_a_tpu_v4_slice_with_splash_attention(corpus, tmp_path, plan_here):
  """The real TPU compiler on this CPU machine: libtpu describes a v4-8 (4 chips)."""
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), BATCH_SIZE=8,
                                    SEQUENCE_LENGTH=128)
  status, out, err = plan_here(f"--gin_file={gin_path}", "--gin_file=mesh/tpu_v4_8.gin",
                               f"--gin.MODEL_DIR='{tmp_path}/unused'", "--target=tpu-v4-8",
                               "--json")
  assert status == 0, err[-3000:]
  report = json.loads(out.strip().splitlines()[-1])
  assert report["target"] == "tpu-v4-8" and report["devices"] == 4
  assert report["device_kind"] == "TPU v4" and report["hbm_bytes"] == 32 * 2**30
  assert report["fits"] is True
  # The compiled program holds the sharded state (params + two moments) and its activations.
  state = report["param_bytes_per_device"] + report["optimizer_bytes_per_device"]
  assert state <= report["argument_bytes_per_device"] < state + 2**20
  assert report["per_device_bytes"] >= report["argument_bytes_per_device"] + report[
      "temp_bytes_per_device"]
  assert report["per_device_bytes"] < 64 * 2**20
  assert report["flops_per_step"] > report["compiled_flops_per_device"] > 0
  assert report["attention"] == "splash"
  assert {"splash_mqa_fwd_residuals", "splash_mqa_dq_no_residuals",
          "splash_mqa_dkv_no_residuals"} <= set(report["tpu_kernels"])
  assert not (tmp_path / "unused").exists()


def test_an_unknown_target_lists_the_known_ones(corpus, tmp_path, plan_here):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  status, _, err = plan_here(f"--gin_file={gin_path}", "--target=tpu-v9-8",
                             f"--gin.MODEL_DIR='{tmp_path}/unused'")
  assert status == 1
  assert "--target 'tpu-v9-8' is unknown; use one of tpu-v4-8, tpu-v4-32" in err
  assert "or cpu for faked CPU devices" in err


@needs_libtpu
def test_a_mesh_that_does_not_match_the_target_says_what_to_change(corpus, tmp_path, plan_here):
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  status, _, err = plan_here(f"--gin_file={gin_path}", "--gin_file=mesh/tpu_v4_8.gin",
                             "--target=tpu-v4-32", f"--gin.MODEL_DIR='{tmp_path}/unused'")
  assert status == 1
  assert ("the mesh {'data': 1, 'fsdp': 4, 'tensor': 1} needs 4 devices but --target tpu-v4-32 "
          "has 16 chips; pass the target's mesh file") in err


@needs_libtpu
def test_a_plan_that_does_not_fit_says_what_to_change(corpus, tmp_path, plan_here):
  """tiny with 16,384 sequences of 256 tokens per chip: its float32 logits and their
  gradients alone (16,384 × 256 × 512 × 4 bytes = 8 GiB each) overflow a v4 chip's HBM."""
  gin_path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"), BATCH_SIZE=65536,
                                    SEQUENCE_LENGTH=256)
  status, out, err = plan_here(f"--gin_file={gin_path}", "--gin_file=mesh/tpu_v4_8.gin",
                               "--target=tpu-v4-8", f"--gin.MODEL_DIR='{tmp_path}/unused'")
  assert status == 1, err[-3000:]
  assert "DOES NOT FIT" in out
  # The TPU compiler itself refuses the program and says by how much.
  assert re.search(r"the TPU compiler says 'RESOURCE_EXHAUSTED: Ran out of memory .*HBM.*', but "
                   r"a TPU v4 chip has 32 GiB of HBM: lower train.batch_size or raise "
                   r"train.num_microbatches", err)
