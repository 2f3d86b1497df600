"""Gradient accumulation on a faked 8-device mesh (data=2 × fsdp=4): microbatches are formed
where the batch already lies, and M microbatches give the update of one big batch."""

import subprocess
import sys

import train_fixtures

SCRIPT = r"""
import gin, jax, numpy as np, optax
from fineline import partitioning
from fineline.models import llama, presets
from fineline.training import optim, step as step_lib

assert jax.device_count() == 8
gin.bind_parameter("mesh_axes.data", 2)
gin.bind_parameter("mesh_axes.fsdp", 4)
mesh = partitioning.make_mesh()
rng = np.random.default_rng(0)
tokens = rng.integers(0, 512, (32, 33)).astype(np.int32)
weights = (rng.random((32, 32)) < 0.8).astype(np.float32)  # unequal token counts per row
local = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights}
batch = partitioning.global_batch(mesh, local, 32)

# Forming 4 microbatches moves no data: every device's rows of each microbatch are rows it
# held, and the compiled split has no collective.
split = jax.jit(lambda b: optim.split_microbatches(b, 4, partitioning.microbatch_sharding(mesh)))
hlo = split.lower(batch).compile().as_text()
for op in ("all-to-all", "all-gather", "collective-permute", "all-reduce"):
  assert op not in hlo, op
micro = split(batch)["inputs"]
held = {s.device: {r.tobytes() for r in np.asarray(s.data)} for s in batch["inputs"].addressable_shards}
for s in micro.addressable_shards:
  rows = np.asarray(s.data)
  assert rows.shape == (4, 1, 32)  # 32 rows / 8 devices / 4 microbatches
  assert {r.tobytes() for r in rows.reshape(-1, 32)} <= held[s.device]
np.testing.assert_array_equal(np.asarray(micro)[1], tokens[1::4, :-1])

# With plain SGD at learning rate 1 the update is the gradient itself.
model = llama.Llama(presets.get_preset("tiny"))
results = {}
for m in (1, 4):
  ts = step_lib.make_train_step(model, optax.sgd(1.0), mesh, num_microbatches=m, donate=False)
  state = ts.init(jax.random.key(0))
  new, metrics = ts.step(state, batch)
  grads = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), state["params"], new["params"])
  results[m] = (float(metrics["loss"]), float(metrics["grad_norm"]), grads)
for m in (4,):
  np.testing.assert_allclose(results[m][0], results[1][0], rtol=1e-6)
  np.testing.assert_allclose(results[m][1], results[1][1], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(results[1][2]), jax.tree.leaves(results[m][2])):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
print("LOSSES", results[1][0], results[4][0])
"""


def test_microbatches_stay_in_place_and_sum_to_the_big_batch():
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=train_fixtures.env(8),
                       capture_output=True, text=True, timeout=400)
  assert out.returncode == 0, out.stderr[-4000:]
  assert "LOSSES" in out.stdout
