"""The data-parallel train step on 8 fake CPU devices equals the one-device step.

XLA reads ``--xla_force_host_platform_device_count`` when the CPU backend
starts, and the backend of this pytest process is already up (with one
device), so the 8-device checks run once in a child process (``CHILD``) that
prints its measurements as JSON; the tests below assert on them.
"""

import json
import os
import subprocess
import sys

import pytest

from seqbench.bench import sharding as SH

CHILD = r'''
import json
import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqbench as sb
from seqbench.bench import sharding as SH
from seqbench.bench import suite as S

out = {"device_count": jax.device_count()}
mesh = SH.data_mesh()
out["mesh_axes"] = list(mesh.axis_names)
out["mesh_size"] = int(mesh.devices.size)
B, T, D, H = 16, 12, 5, 8
xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D), jnp.float32)
optimizer = optax.adam(1e-2)


def compare(name, apply, params):
  """Two steps on one device vs two data-parallel steps on 8 devices."""
  single = jax.jit(S.train_step(apply, optimizer), device=jax.devices()[0])
  p1, s1 = params, optimizer.init(params)
  losses1 = []
  for _ in range(2):
    p1, s1, loss = single(p1, s1, xs)
    losses1.append(float(loss))
  step = SH.sharded_train_step(apply, optimizer, mesh)
  p8, s8 = SH.replicate((params, optimizer.init(params)), mesh)
  xs8 = SH.shard_batch(xs, mesh)
  losses8 = []
  for _ in range(2):
    p8, s8, loss = step(p8, s8, xs8)
    losses8.append(float(loss))
  diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), p1, p8))
  scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree_util.tree_leaves(p1))
  out[name] = {
      "losses_single": losses1, "losses_sharded": losses8, "max_param_diff": max(diffs),
      "param_scale": scale,
      "changed": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
                     zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p8))),
      "params_replicated": all(a.sharding.is_fully_replicated
                               for a in jax.tree_util.tree_leaves((p8, s8))),
      "loss_replicated": loss.sharding.is_fully_replicated,
  }
  return step, p8, s8, xs8


cell = sb.cells.LSTM(H)
lstm_params = cell.init(jax.random.PRNGKey(0), D)
seen = {}


def lstm_apply(p, x):
  ys = sb.unroll.scan(cell, p, x)
  jax.debug.inspect_array_sharding(ys, callback=lambda s: seen.__setitem__("ys", s))
  return ys


step, p8, s8, xs8 = compare("lstm_scan", lstm_apply, lstm_params)
tcn = sb.convnets.TCN(H, 2, 2)
compare("tcn", tcn.apply, tcn.init(jax.random.PRNGKey(2), D))

# The batch really is split: the input's shards and the model output inside the step.
out["xs_spec"] = list(xs8.sharding.spec)
out["xs_shard_shapes"] = sorted({tuple(s.data.shape) for s in xs8.addressable_shards})
out["xs_devices"] = len({s.device for s in xs8.addressable_shards})
seen.clear()  # compile the sharded step once more: the callback reports its ys
hlo = jax.jit(step).lower(p8, s8, xs8).compile().as_text()
ys_sharding = seen["ys"]
out["ys_spec"] = (list(ys_sharding.spec)[:1] if hasattr(ys_sharding, "spec")
                  else str(ys_sharding))
out["ys_devices"] = len(ys_sharding.device_set)
out["ys_shard_shape"] = list(ys_sharding.shard_shape((B, T, H)))
out["all_reduce"] = "all-reduce" in hlo

# A batch the mesh cannot split: a clear error before anything runs.
errors = {}
try:
  SH.shard_batch(np.zeros((12, T, D), np.float32), mesh)
except ValueError as e:
  errors["shard_batch"] = str(e)
try:
  step(p8, s8, np.zeros((12, T, D), np.float32))
except ValueError as e:
  errors["step"] = str(e)
out["errors"] = errors

# Throughput rows per device count.
size = S.SUITES["tiny"]
entry = [e for e in S.device_entries(size) if e.family == "conv"][0]
rows = SH.add_device_speedups(list(SH.device_rows(entry, size, jnp.float32, [1, 8])))
out["rows"] = [{k: r[k] for k in ("device_count", "batch", "per_device_batch", "sweep", "mode",
                                  "tokens_per_s", "median_ms", "speedup_vs_1_device",
                                  "scaling_efficiency", "traces")} for r in rows]
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def child():
  env = dict(os.environ)
  flag = "--xla_force_host_platform_device_count=8"
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_eight_fake_devices_in_one_data_mesh(child):
  assert child["device_count"] == 8
  assert child["mesh_axes"] == ["data"] and child["mesh_size"] == 8


@pytest.mark.parametrize("model", ["lstm_scan", "tcn"])
def test_sharded_step_matches_single_device(child, model):
  r = child[model]
  assert r["losses_sharded"] == pytest.approx(r["losses_single"], rel=1e-5, abs=1e-7)
  assert r["losses_single"][1] != r["losses_single"][0]  # the first step did update
  assert r["changed"] > 1e-4  # parameters moved ...
  assert r["max_param_diff"] <= 1e-5 * max(1.0, r["param_scale"])  # ... identically
  assert r["params_replicated"] and r["loss_replicated"]


def test_batch_is_split_over_eight_devices(child):
  assert child["xs_spec"] == ["data"]
  assert child["xs_devices"] == 8 and child["xs_shard_shapes"] == [[2, 12, 5]]
  # Inside the step, the model's output stays split along the batch.
  assert child["ys_devices"] == 8 and child["ys_shard_shape"] == [2, 12, 8]
  assert child["ys_spec"] == ["data"] or "data" in str(child["ys_spec"])
  assert child["all_reduce"]  # gradients are summed across devices


def test_indivisible_batch_is_a_clear_value_error(child):
  for where in ("shard_batch", "step"):
    msg = child["errors"][where]
    assert "batch size 12 is not divisible by the 8 devices" in msg
    assert "multiple of 8" in msg


def test_throughput_rows_per_device_count(child):
  rows = child["rows"]
  assert [r["device_count"] for r in rows] == [1, 8]
  assert [r["batch"] for r in rows] == [2, 16] and {r["per_device_batch"] for r in rows} == {2}
  assert all(r["sweep"] == "devices" and r["mode"] == "train" and r["traces"] == 1 for r in rows)
  assert rows[0]["speedup_vs_1_device"] == pytest.approx(1.0)
  assert rows[1]["speedup_vs_1_device"] == pytest.approx(
      rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"])
  assert rows[1]["scaling_efficiency"] == pytest.approx(rows[1]["speedup_vs_1_device"] / 8)


def test_device_counts():
  assert SH.device_counts(1) == [1]
  assert SH.device_counts(8) == [1, 2, 4, 8]
  assert SH.device_counts(6) == [1, 2, 4, 6]
  with pytest.raises(ValueError, match="max_devices must be >= 1, got 0"):
    SH.device_counts(0)


def test_mesh_of_more_devices_than_present_is_an_error():
  import jax  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="available"):
    SH.data_mesh(count=jax.device_count() + 1)


def test_add_device_speedups_without_a_one_device_row():
  rows = [{"model": "m", "executor": "e", "mode": "train", "dtype": "float32",
           "device_count": 2, "tokens_per_s": 10.0}]
  out = SH.add_device_speedups(rows)
  assert out[0]["speedup_vs_1_device"] is None and out[0]["scaling_efficiency"] is None
