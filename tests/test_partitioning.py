import gin
import jax
import pytest
from jax.sharding import PartitionSpec as P

from fineline import partitioning
from fineline.models import llama, presets


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_minus_one_takes_the_remaining_devices():
  gin.bind_parameter("mesh_axes.data", -1)
  gin.bind_parameter("mesh_axes.fsdp", 4)
  gin.bind_parameter("mesh_axes.tensor", 2)
  assert partitioning.mesh_shape(64) == {"data": 8, "fsdp": 4, "tensor": 2}
  assert partitioning.devices_needed() is None


def test_mesh_that_does_not_fit_names_the_sizes():
  gin.bind_parameter("mesh_axes.fsdp", 3)
  with pytest.raises(ValueError, match="do not split"):
    partitioning.mesh_shape(8)
  gin.bind_parameter("mesh_axes.data", 2)
  with pytest.raises(ValueError, match="needs 6 devices"):
    partitioning.mesh_shape(8)


def test_rules_shard_params_over_fsdp_and_tensor_and_batch_over_data_axes():
  as_mesh = lambda *names: partitioning.logical_to_mesh(P(*names))
  assert as_mesh("embed", "heads", "head_dim") == P("fsdp", "tensor", None)
  assert as_mesh("vocab", "embed") == P("tensor", "fsdp")
  assert as_mesh("mlp", "embed") == P("tensor", "fsdp")
  assert as_mesh("norm") == P(None)
  # An activation's embed axis stays whole once the batch took fsdp.
  assert as_mesh("batch", "length", "embed") == P(("data", "fsdp"), None, None)


def test_param_shardings_cover_every_parameter():
  mesh = partitioning.make_mesh(jax.devices()[:1])
  cfg = presets.get_preset("tiny")
  shardings = partitioning.param_shardings(mesh, llama.abstract_params(cfg))
  q = shardings["layers_0"]["attn"]["q"]
  assert q.spec == P("fsdp", "tensor", None)
  assert len(jax.tree.leaves(shardings)) == len(jax.tree.leaves(llama.init_params(cfg, jax.random.key(0))))


def test_parse_mesh_fills_left_out_axes_and_names_what_is_wrong():
  assert partitioning.parse_mesh("data=2,fsdp=4") == {"data": 2, "fsdp": 4, "tensor": 1}
  assert partitioning.parse_mesh("fsdp=-1, tensor=2") == {"data": 1, "fsdp": -1, "tensor": 2}
  with pytest.raises(ValueError, match=r"--mesh data=-1,fsdp=-1: at most one axis may be -1"):
    partitioning.parse_mesh("data=-1,fsdp=-1")
  with pytest.raises(ValueError, match=r"unknown axis 'model'; the axes are data, fsdp, tensor"):
    partitioning.parse_mesh("model=2")
  with pytest.raises(ValueError, match=r"'fsdp=0' needs a positive size or -1"):
    partitioning.parse_mesh("fsdp=0")


def test_fallback_to_the_plain_device_order_says_why(monkeypatch, caplog):
  from jax.experimental import mesh_utils

  def refuse(*args, **kwargs):
    raise NotImplementedError("no physical layout for these devices")
  monkeypatch.setattr(mesh_utils, "create_device_mesh", refuse)
  with caplog.at_level("WARNING"):
    mesh = partitioning.make_mesh(jax.devices()[:1])
  assert mesh.size == 1
  assert "no topology-aware device order" in caplog.text
  assert "NotImplementedError: no physical layout for these devices" in caplog.text
