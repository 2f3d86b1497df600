"""The run builder shared by `fineline train` and `fineline plan`."""

import gin
import pytest

from fineline import ginconf
from fineline.errors import UserError
from fineline.training import run as run_lib
from fineline.training import trainer


@pytest.fixture
def tiny_config():
  ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/unused'", "train.z_loss = 0.25"])
  yield
  gin.clear_config()


def test_configured_arguments_are_trains_defaults_and_bindings(tiny_config):
  settings = run_lib.configured_arguments(trainer.train, run_lib.BUILD_SETTINGS)
  assert settings["preset"] == "tiny"  # a macro in the run file, resolved
  assert settings["z_loss"] == 0.25  # bound on the command line
  assert settings["remat_policy"] == "none"  # train's own default
  run = run_lib.build(**settings)
  assert run.cfg.num_layers == run.model.cfg.num_layers and run.mesh.size >= 1


def test_bad_settings_name_the_binding(tiny_config):
  settings = run_lib.configured_arguments(trainer.train, run_lib.BUILD_SETTINGS)
  with pytest.raises(UserError, match="train.sequence_length=100000 exceeds"):
    run_lib.build(**{**settings, "sequence_length": 100000})
  with pytest.raises(UserError, match="train.attention_impl: .*splash.* does not run on cpu"):
    run_lib.build(**{**settings, "attention_impl": "splash"})


def test_an_unbound_required_setting_is_named():
  gin.clear_config()
  with pytest.raises(UserError, match="train.preset"):
    run_lib.configured_arguments(trainer.train, ["preset"])
