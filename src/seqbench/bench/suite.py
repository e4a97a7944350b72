"""The throughput suite: every model at one size, three modes, ratios to baselines.

Each *entry* is a model at the suite's reference size, timed in up to three
modes with :func:`seqbench.bench.timing.time_compiled`:

* ``train``: one optimizer step (forward + backward + Adam update,
  :func:`bench_optimizer`) of ``mean(y**2)``;
* ``forward``: inference over the whole sequence;
* ``stream``: latency of producing one new output online -- a recurrent
  cell's ``step``; the truncated model's ``k``-step window; a conv net's
  ``stream_step`` with cached past activations.

Rows carry their ratio to the baseline of their family measured in the same
run, at the same batch, length and width: recurrent rows vs ``torch.nn.LSTM``
(cuDNN on GPU) or, without torch, flax's ``OptimizedLSTMCell``; conv rows vs
the PyTorch TCN. ``ratio > 1`` means faster than the baseline. Only the LSTM
and TCN rows compare the same architecture; the others' ratios (GRU, RNN,
LRU vs the LSTM; WaveNet vs the TCN) say which model is faster at that size,
and each row's ``baseline`` names what it was divided by.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import optax

import seqbench as sb
from seqbench.bench.timing import time_compiled


@dataclasses.dataclass(frozen=True)
class SuiteSize:
  """Reference sizes of a suite (named so results say what they measured)."""
  batch: int
  time: int
  input_size: int
  hidden: int
  ks: tuple
  tcn_levels: int
  tcn_kernel: int
  scaling_batch: int
  scaling_times: tuple
  n: int
  #: Per-device batch of the data-parallel (``device_count``) rows; 0: ``batch``.
  device_batch: int = 0


SUITES = {
    # Fits the 10-minute `make bench` budget on a 2-core CPU.
    "default": SuiteSize(batch=16, time=128, input_size=64, hidden=128, ks=(8, 16),
                         tcn_levels=6, tcn_kernel=3, scaling_batch=4,
                         scaling_times=(64, 256, 1024), n=10),
    # The GPU reference size of the performance anchors (B=64, T=256, D=256, H=512).
    "full": SuiteSize(batch=64, time=256, input_size=256, hidden=512, ks=(16, 64),
                      tcn_levels=8, tcn_kernel=3, scaling_batch=32,
                      scaling_times=(64, 256, 1024, 4096), n=20),
    # For tests only (a whole `seqbench bench` in well under a minute on CPU):
    # the numbers mean nothing.
    "tiny": SuiteSize(batch=8, time=16, input_size=8, hidden=16, ks=(4,),
                      tcn_levels=2, tcn_kernel=2, scaling_batch=2,
                      scaling_times=(8, 32), n=2, device_batch=2),
}

# Dense peak TFLOP/s by device kind substring and dtype. float32 is compared
# with the TF32 tensor-core peak, which is what XLA uses for f32 matmuls at
# the default precision on these GPUs.
PEAK_TFLOPS = {
    ("H100", "bfloat16"): 989.0, ("H100", "float32"): 494.5,
    ("H200", "bfloat16"): 989.0, ("H200", "float32"): 494.5,
}


def peak_tflops(device_kind: str, dtype: str) -> Optional[float]:
  for (kind, dt), peak in PEAK_TFLOPS.items():
    if kind in device_kind and dt == dtype:
      return peak
  return None


@dataclasses.dataclass(frozen=True)
class Entry:
  """One model of the suite.

  ``build(size, dtype)`` returns ``(params, apply, stream)``: ``apply(params,
  xs) -> ys`` and ``stream`` a ``(fn, args)`` pair timing one online output,
  or ``None``.
  """
  name: str
  family: str
  executor: str
  k: Optional[int]
  build: Callable


def _cell_entry(name: str, make_cell: Callable, executor: str, k: Optional[int] = None,
                unroll: int = 1) -> Entry:

  def build(size: SuiteSize, dtype, key):
    cell = make_cell(size.hidden, dtype)
    params = cell.init(key, size.input_size)
    if executor == "scan":
      apply = lambda p, xs: sb.unroll.scan(cell, p, xs, unroll=unroll)
    elif executor == "truncated":
      apply = lambda p, xs: sb.unroll.truncated(cell, p, xs, k, unroll=unroll)
    else:
      apply = lambda p, xs: sb.unroll.parallel(cell, p, xs)
    if executor == "truncated":
      # Online, the truncated model recomputes its k-step window per output.
      window = jnp.zeros((size.batch, k, size.input_size), dtype)
      stream = (lambda p, w: sb.unroll.scan(cell, p, w, unroll=unroll)[:, -1], (params, window))
    else:
      x_t = jnp.zeros((size.batch, size.input_size), dtype)
      stream = (cell.step, (params, cell.initial_state((size.batch,)), x_t))
    return params, apply, stream

  label = executor if k is None else f"{executor}(k={k})"
  if executor == "scan" and unroll != 1:
    label = f"scan(unroll={unroll})"
  return Entry(name, "recurrent", label, k, build)


def _conv_entry(name: str, make_net: Callable) -> Entry:

  def build(size: SuiteSize, dtype, key):
    net = make_net(size)
    params = net.init(key, size.input_size, dtype=dtype)
    state = net.init_stream_state(params, (size.batch,))
    x_t = jnp.zeros((size.batch, size.input_size), dtype)
    return params, net.apply, (net.stream_step, (params, state, x_t))

  return Entry(name, "conv", "conv", None, build)


def _flax_lstm_entry() -> Entry:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  def build(size: SuiteSize, dtype, key):
    model = sb.flax_interop.flax_lstm_baseline(size.hidden, dtype=dtype, unroll=1)
    xs = jnp.zeros((size.batch, size.time, size.input_size), dtype)
    # flax's own initial carry is float32 (param_dtype): in a bfloat16 row it
    # would promote the recurrent matmul to float32, so the carry is passed.
    zero_carry = lambda b: tuple(jnp.zeros((b, size.hidden), dtype) for _ in range(2))
    params = jax.tree_util.tree_map(
        lambda a: a.astype(dtype), model.init(key, xs, initial_carry=zero_carry(size.batch)))
    # param_dtype stays float32: flax checks a given parameter's shape by tracing
    # its initializer in param_dtype, and the orthogonal init (a QR) has no
    # bfloat16 form. The parameters passed in are ``dtype`` all the same.
    cell = nn.OptimizedLSTMCell(size.hidden, dtype=dtype, param_dtype=jnp.float32)
    cell_params = {"params": params["params"]["cell"]}
    carry = zero_carry(size.batch)
    x_t = jnp.zeros((size.batch, size.input_size), dtype)
    apply = lambda p, xs: model.apply(p, xs, initial_carry=zero_carry(xs.shape[0]))
    return params, apply, (lambda p, c, x: cell.apply(p, c, x), (cell_params, carry, x_t))

  return Entry("flax OptimizedLSTMCell", "recurrent", "nn.RNN", None, build)


def _rnn(h, dt):
  return sb.cells.RNN(h, dtype=dt)


def _lstm(h, dt):
  return sb.cells.LSTM(h, dtype=dt)


def _gru(h, dt):
  return sb.cells.GRU(h, dtype=dt)


def _lru(h, dt):
  return sb.cells.LRU(h, dtype=dt)


def entries(size: SuiteSize) -> list:
  """The suite's models, in report order."""
  out = [
      _cell_entry("seqbench LSTM", _lstm, "scan"),
      _cell_entry("seqbench LSTM", _lstm, "scan", unroll=8),
      *[_cell_entry("seqbench LSTM", _lstm, "truncated", k=k) for k in size.ks],
      _cell_entry("seqbench RNN", _rnn, "scan", unroll=8),
      _cell_entry("seqbench RNN", _rnn, "truncated", k=16),
      _cell_entry("seqbench GRU", _gru, "scan", unroll=8),
      _cell_entry("seqbench GRU", _gru, "truncated", k=16),
      _cell_entry("seqbench LRU", _lru, "parallel"),
      _cell_entry("seqbench LRU", _lru, "scan", unroll=8),
      _conv_entry("seqbench TCN", lambda s: sb.convnets.TCN(s.hidden, s.tcn_levels, s.tcn_kernel)),
      _conv_entry("seqbench WaveNet",
                  lambda s: sb.convnets.WaveNet(s.hidden, s.tcn_levels, kernel_size=2)),
      _flax_lstm_entry(),
  ]
  return out


def bench_loss(apply: Callable) -> Callable:
  """The benchmark's loss, ``mean(y**2)`` in float32, of ``apply(params, xs)``."""

  def loss_fn(params, xs):
    return jnp.mean(jnp.square(apply(params, xs).astype(jnp.float32)))

  return loss_fn


#: How each backend's ``train`` rows apply Adam (lr 1e-3), as the rows record it.
BENCH_OPTIMIZERS = {
    "cpu": "adam(lr=1e-3), per leaf",
    "accelerator": "adam(lr=1e-3) on one raveled buffer (optax.flatten)",
}


def _optimizer_kind(backend: Optional[str]) -> str:
  return "cpu" if (backend or jax.default_backend()) == "cpu" else "accelerator"


def bench_optimizer_name(backend: Optional[str] = None) -> str:
  """What :func:`bench_optimizer` applies on ``backend`` (default: JAX's)."""
  return BENCH_OPTIMIZERS[_optimizer_kind(backend)]


def bench_optimizer(backend: Optional[str] = None) -> optax.GradientTransformation:
  """The optimizer of every ``train`` row: Adam, lr 1e-3.

  On GPU/TPU it runs over one raveled vector (:func:`optax.flatten`): Adam is
  elementwise, so that is the same update (to rounding) as per-leaf Adam, in
  a few large kernels instead of a few small ones per leaf -- the analogue of
  the multi-tensor (``foreach``) Adam that the PyTorch baselines get by
  default on CUDA. Measured, train step, float32: NVIDIA H100, suite ``full``
  TCN (50 leaves) 11.02 vs 12.16 ms per leaf
  (``benchmarks/results/nvidia-h100/profile_f32_bfbde61``). On the 2-core CPU
  (suite ``default``, unloaded, 2026-11-28) raveling gained nothing for the
  conv nets and cost the LSTM scan ~15 % (23.7 vs 20.6 ms: the concatenation
  of the gradients and the slicing of the update are extra passes there), so
  the CPU keeps per-leaf Adam.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; default JAX's default backend.
  """
  if _optimizer_kind(backend) == "cpu":
    return optax.adam(1e-3)
  return optax.flatten(optax.adam(1e-3))


def train_step(apply: Callable, optimizer) -> Callable:
  """``step(params, opt_state, xs) -> (params, opt_state, loss)``: one optimizer step.

  The data-parallel step of :mod:`seqbench.bench.sharding` wraps this very
  function, so one- and many-device rows time the same computation.
  """
  loss_fn = bench_loss(apply)

  def step(params, opt_state, xs):
    loss, grads = jax.value_and_grad(loss_fn)(params, xs)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


_train_step = train_step  # the name earlier code used


def _row(entry: Entry, mode: str, size: SuiteSize, time_len: int, batch: int, timing,
         dtype_name: str, device_kind: str, device_count: int = 1) -> dict:
  tokens = batch * (1 if mode == "stream" else time_len)
  row = {"model": entry.name, "family": entry.family, "framework": "jax",
         "executor": entry.executor, "k": entry.k, "mode": mode, "batch": batch,
         "time": time_len, "input_size": size.input_size, "hidden": size.hidden,
         "dtype": dtype_name, "device_count": device_count,
         "tokens_per_s": tokens / (timing.median_ms / 1e3), **timing.to_json()}
  # XLA's cost analysis of an SPMD program counts one device's share.
  peak = peak_tflops(device_kind, dtype_name)
  if timing.flops and peak:
    row["pct_peak"] = 100 * timing.flops / (timing.median_ms / 1e3) / (peak * 1e12)
  return row


def run_entry(entry: Entry, size: SuiteSize, dtype, *, modes=("train", "forward", "stream"),
              time_len: Optional[int] = None, batch: Optional[int] = None) -> Iterator[dict]:
  """Time one entry in each mode; yields one row per mode."""
  time_len = time_len or size.time
  batch = batch or size.batch
  run_size = dataclasses.replace(size, time=time_len, batch=batch)
  key = jax.random.PRNGKey(0)
  params, apply, stream = entry.build(run_size, dtype, key)
  xs = jax.random.normal(jax.random.PRNGKey(1), (batch, time_len, size.input_size), dtype)
  dtype_name = jnp.dtype(dtype).name
  kind = jax.devices()[0].device_kind
  # The dtype the model computes its outputs in: a baseline whose float32
  # state promotes a "bfloat16" row is then visible in the row itself.
  output_dtype = jnp.dtype(jax.eval_shape(apply, params, xs).dtype).name
  for mode in modes:
    if mode == "train":
      optimizer = bench_optimizer()
      timing = time_compiled(train_step(apply, optimizer), params, optimizer.init(params), xs,
                             n=size.n)
    elif mode == "forward":
      timing = time_compiled(apply, params, xs, n=size.n)
    elif mode == "stream":
      if stream is None:
        continue
      fn, args = stream
      timing = time_compiled(fn, *args, n=size.n)
    else:
      raise ValueError(f"unknown mode {mode!r}")
    row = _row(entry, mode, run_size, time_len, batch, timing, dtype_name, kind)
    if mode != "stream":
      row["output_dtype"] = output_dtype
    if mode == "train":
      row["optimizer"] = bench_optimizer_name()
    yield row


def torch_rows(size: SuiteSize, dtype_name: str) -> Iterator[dict]:
  """Rows for the PyTorch baselines, if torch is importable."""
  try:
    from seqbench.bench import torch_baselines as tb  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  base = {"framework": "torch", "k": None, "batch": size.batch, "time": size.time,
          "input_size": size.input_size, "hidden": size.hidden, "dtype": dtype_name,
          "device_count": 1,
          "torch_version": tb.version(), "torch_device": tb.device_kind(),
          "torch_matmul_precision": tb.matmul_precision()}
  lstm = tb.lstm_rows(size.batch, size.time, size.input_size, size.hidden, dtype_name, size.n)
  # torch.optim.Adam picks its multi-tensor (foreach) implementation for CUDA
  # tensors unless told otherwise; the baselines leave it at that default.
  train_optimizer = {"optimizer": "torch.optim.Adam(lr=1e-3), default implementation"}
  for mode, t in lstm.items():
    tokens = size.batch * (1 if mode == "stream" else size.time)
    yield {**base, "model": "torch nn.LSTM", "family": "recurrent", "executor": "cuDNN" if
           "cuda" in str(tb.device()) else "aten", "mode": mode,
           "tokens_per_s": tokens / (t["median_ms"] / 1e3), **t,
           "torch_module_mode": "train" if mode == "train" else "eval",
           **(train_optimizer if mode == "train" else {})}
  tcn = tb.tcn_rows(size.batch, size.time, size.input_size, size.hidden, size.tcn_levels,
                    size.tcn_kernel, dtype_name, size.n)
  for mode, t in tcn.items():
    yield {**base, "model": "torch TCN", "family": "conv", "executor": "Conv1d", "mode": mode,
           "tokens_per_s": size.batch * size.time / (t["median_ms"] / 1e3), **t,
           "torch_module_mode": "eval" if mode == "forward" else "train",
           **(train_optimizer if mode == "train" else {})}


#: The baseline of each family, in order of preference.
FAMILY_BASELINES = {
    "recurrent": ("torch nn.LSTM", "flax OptimizedLSTMCell"),
    "conv": ("torch TCN",),
}


def add_ratios(rows: list) -> list:
  """Each row's throughput ratio to its family's baseline in the same run.

  ``ratio = baseline_median_ms / row_median_ms`` for the same mode, size,
  dtype and device count (> 1: faster than the baseline); the first baseline
  of :data:`FAMILY_BASELINES` present wins. Rows without a baseline get
  ``None``.
  """
  out = []
  for row in rows:
    ratio, base_name = None, None
    for candidate in FAMILY_BASELINES.get(row["family"], ()):
      match = [b for b in rows if b["model"] == candidate and b["mode"] == row["mode"] and
               b["time"] == row["time"] and b["batch"] == row["batch"] and
               b["dtype"] == row["dtype"] and
               b.get("device_count", 1) == row.get("device_count", 1)]
      if match:
        ratio = match[0]["median_ms"] / row["median_ms"]
        base_name = candidate
        break
    out.append({**row, "baseline": base_name, "ratio_to_baseline": ratio})
  return out


def scaling_entries(size: SuiteSize) -> list:
  """The headline plot: tokens/s vs T for the four ways to model a sequence."""
  return [
      _cell_entry("seqbench LSTM", _lstm, "scan", unroll=8),
      _cell_entry("seqbench LSTM", _lstm, "truncated", k=16),
      _conv_entry("seqbench TCN", lambda s: sb.convnets.TCN(s.hidden, s.tcn_levels, s.tcn_kernel)),
      _cell_entry("seqbench LRU", _lru, "parallel"),
  ]


def device_entries(size: SuiteSize) -> list:
  """Models of the data-parallel sweep (train rows per device count)."""
  del size
  return [
      _cell_entry("seqbench LSTM", _lstm, "scan", unroll=8),
      _cell_entry("seqbench LSTM", _lstm, "truncated", k=16),
      _conv_entry("seqbench TCN", lambda s: sb.convnets.TCN(s.hidden, s.tcn_levels, s.tcn_kernel)),
  ]


def crossover(rows: list, a: str, b: str) -> Optional[int]:
  """Smallest T at which executor ``b`` beats ``a`` (train tokens/s), if any."""
  by_t = {}
  for r in rows:
    by_t.setdefault(r["time"], {})[r["executor"]] = r["tokens_per_s"]
  for t in sorted(by_t):
    if a in by_t[t] and b in by_t[t] and by_t[t][b] > by_t[t][a]:
      return t
  return None


def geometric_mean(xs) -> float:
  xs = [x for x in xs if x]
  return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
