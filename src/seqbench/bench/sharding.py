"""Data-parallel training over all devices with ``jax.sharding``.

One 1-D :class:`jax.sharding.Mesh` with axis ``"data"``: the batch (axis 0 of
``xs``) is split over it, ``P('data')``, and parameters and optimizer state
are replicated, ``P()``. The step itself is the single-device
:func:`seqbench.bench.suite.train_step` of any model ``apply(params, xs)``;
XLA's SPMD partitioner turns the batch mean of the loss into an all-reduce of
the gradients, so the loss and the updated parameters are those of one device
running the whole batch (up to float summation order).

Usage::

    mesh = data_mesh()                      # all devices
    step = sharded_train_step(apply, optax.adam(1e-3), mesh)
    params, opt_state = replicate((params, optimizer.init(params)), mesh)
    params, opt_state, loss = step(params, opt_state, shard_batch(xs, mesh))

:func:`device_rows` times that step for 1, 2, 4, ... devices (rows carry
``device_count``); ``seqbench bench --devices`` adds them to the suite.

Multi-host (``seqbench bench --distributed``, untested here: this project has
no multi-host machine): after ``jax.distributed.initialize()`` the mesh spans
every process's devices and :func:`shard_batch` assembles the global batch from
each process's local part with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

#: Name of the mesh axis the batch is split over.
AXIS = "data"


def device_counts(max_devices: int) -> list:
  """1, 2, 4, ... up to ``max_devices`` (which is included even if not a power of 2)."""
  if max_devices < 1:
    raise ValueError(f"max_devices must be >= 1, got {max_devices}")
  counts, n = [], 1
  while n < max_devices:
    counts.append(n)
    n *= 2
  return counts + [max_devices]


def data_mesh(devices: Optional[Sequence[Any]] = None, count: Optional[int] = None) -> Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all devices), or their first ``count``."""
  devices = list(jax.devices() if devices is None else devices)
  if count is not None:
    if not 1 <= count <= len(devices):
      raise ValueError(f"asked for {count} devices, but {len(devices)} are available")
    devices = devices[:count]
  return Mesh(np.array(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Axis 0 split over the ``data`` axis."""
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(batch: int, mesh: Mesh) -> None:
  """A clear error for a batch the mesh cannot split evenly."""
  n = mesh.shape[AXIS]
  if batch % n:
    lower, upper = batch // n * n, -(-batch // n) * n
    raise ValueError(
        f"batch size {batch} is not divisible by the {n} devices of the '{AXIS}' mesh: "
        f"data-parallel training gives each device an equal share of axis 0, so use a "
        f"batch that is a multiple of {n} (e.g. {lower or upper} or {upper}) or fewer devices")


def shard_batch(xs: Any, mesh: Mesh) -> Any:
  """Put a batch (a pytree of arrays, batch on axis 0) on ``mesh`` split as ``P('data')``.

  With several processes each passes its *local* part; the global batch is
  their concatenation in process order.
  """
  sharding = batch_sharding(mesh)
  leaves = jax.tree_util.tree_leaves(xs)
  if not leaves:
    raise ValueError("shard_batch needs at least one array")
  for leaf in leaves:
    if np.ndim(leaf) < 1:
      raise ValueError(f"batch arrays need a batch axis 0, got shape {np.shape(leaf)}")
  if jax.process_count() == 1:
    for leaf in leaves:
      check_divisible(np.shape(leaf)[0], mesh)
    return jax.device_put(xs, sharding)
  local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
  for leaf in leaves:
    if np.shape(leaf)[0] % local:
      raise ValueError(f"local batch {np.shape(leaf)[0]} is not divisible by this process's "
                       f"{local} devices of the '{AXIS}' mesh")
  return jax.tree_util.tree_map(
      lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), xs)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Put a pytree (parameters, optimizer state) on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


def sharded_train_step(apply: Callable, optimizer: optax.GradientTransformation,
                       mesh: Mesh) -> Callable:
  """The data-parallel ``step(params, opt_state, xs) -> (params, opt_state, loss)``.

  A ``jax.jit`` of :func:`seqbench.bench.suite.train_step` with ``xs`` sharded
  ``P('data')`` and everything else replicated. A batch the mesh cannot split
  raises :class:`ValueError` (at trace time, also when the step is jitted again
  by a caller such as :func:`seqbench.bench.timing.time_compiled`).
  """
  from seqbench.bench.suite import train_step  # pylint: disable=g-import-not-at-top

  rep, data = replicated(mesh), batch_sharding(mesh)
  jitted = jax.jit(train_step(apply, optimizer), in_shardings=(rep, rep, data),
                   out_shardings=(rep, rep, rep))

  def step(params, opt_state, xs):
    check_divisible(xs.shape[0], mesh)
    return jitted(params, opt_state, xs)

  step.mesh = mesh
  return step


def device_rows(entry, size, dtype, counts: Sequence[int], *,
                devices: Optional[Sequence[Any]] = None) -> Iterator[dict]:
  """Train rows of one suite entry on 1, 2, 4, ... devices (weak scaling).

  Each device keeps the suite's per-device batch (``size.device_batch``, or
  ``size.batch``), so the global batch is ``per_device_batch * device_count``.
  Rows are the suite's rows plus ``device_count``, ``per_device_batch``,
  ``sweep="devices"``; :func:`add_device_speedups` adds the speed-ups.
  """
  from seqbench.bench import suite as S  # pylint: disable=g-import-not-at-top
  from seqbench.bench.timing import time_compiled  # pylint: disable=g-import-not-at-top

  per_device = size.device_batch or size.batch
  devices = list(jax.devices() if devices is None else devices)
  dtype_name = jnp.dtype(dtype).name
  for count in counts:
    mesh = data_mesh(devices, count)
    batch = per_device * count
    run_size = dataclasses.replace(size, batch=batch)
    params, apply, _ = entry.build(run_size, dtype, jax.random.PRNGKey(0))
    optimizer = S.bench_optimizer()
    state = (params, optimizer.init(params))
    local_batch, key = batch, jax.random.PRNGKey(1)
    if jax.process_count() > 1:  # each process brings its share of the batch
      state = jax.device_get(state)
      local_batch = batch // jax.process_count()
      key = jax.random.fold_in(key, jax.process_index())
    xs = jax.random.normal(key, (local_batch, size.time, size.input_size), dtype)
    params, opt_state = replicate(state, mesh)
    xs = shard_batch(xs, mesh)
    timing = time_compiled(sharded_train_step(apply, optimizer, mesh), params, opt_state, xs,
                           n=size.n)
    make_row = S._row  # pylint: disable=protected-access
    row = make_row(entry, "train", run_size, size.time, batch, timing, dtype_name,
                   devices[0].device_kind, device_count=count)
    yield {**row, "optimizer": S.bench_optimizer_name(), "per_device_batch": per_device,
           "sweep": "devices"}


def add_device_speedups(rows: list) -> list:
  """``speedup_vs_1_device`` and ``scaling_efficiency`` (= speedup / device_count).

  Speed-up is tokens/s over the same model and executor's 1-device row (None
  without one); with a fixed per-device batch, perfect scaling is
  ``speedup == device_count``.
  """
  out = []
  for row in rows:
    one = [r for r in rows if r.get("device_count") == 1 and r["model"] == row["model"]
           and r["executor"] == row["executor"] and r["mode"] == row["mode"]
           and r["dtype"] == row["dtype"]]
    speedup = row["tokens_per_s"] / one[0]["tokens_per_s"] if one else None
    out.append({**row, "speedup_vs_1_device": speedup,
                "scaling_efficiency": None if speedup is None else speedup / row["device_count"]})
  return out
