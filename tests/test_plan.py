import re

import pytest

import train_fixtures


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
