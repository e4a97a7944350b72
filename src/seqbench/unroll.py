r"""Executors: run any cell over a sequence.

Three ways to turn a cell's ``step`` into a sequence model, all with inputs
``xs`` of shape ``(..., T, D)`` (any leading batch dims, time on axis -2) and
outputs of shape ``(..., T, H)``:

* :func:`scan` -- the recurrent model, :math:`h_t = \phi(h_{t-1}, x_t)`,
  with ``lax.scan``;
* :func:`truncated` -- the k-step truncated model of Miller & Hardt (2019,
  Sec. 3): :math:`y^k_t` is computed from :math:`x_{t-k+1..t}` alone, starting
  from the zero state (a depth-k, weight-tied feed-forward network);
* :func:`parallel` -- linear cells only, with ``lax.associative_scan``
  (depth :math:`O(\log T)`).

All executors first apply the cell's ``input_map`` to the whole sequence at
once (one large matmul, hoisted out of the time loop), then iterate only the
state-dependent part. Cells and ``k``/``unroll``/``chunk_size`` are hashable, so
``jax.jit(scan, static_argnums=0, static_argnames="unroll")`` and friends work.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Optional

import jax
import jax.numpy as jnp
from jax import lax

from seqbench.cells import Cell

Array = jax.Array

#: Memory budget of one truncated chunk, in array elements, where the device
#: does not report its memory (the CPU): 2**25 elements is 128 MiB in float32.
DEFAULT_WINDOW_ELEMENTS = 2**25

#: On devices that report their memory, a chunk may use this fraction of it.
#: Chunks that are too small make each of the k steps a small matmul (a GPU
#: then idles: on an H200, 49 chunks of 21 output times ran the k=16 LSTM at
#: B=32, T=1024 2.5x slower than one chunk), so the budget follows the device.
#: At 1/16 an H100 cut that case into 2 chunks (each rematerialised) and took
#: 85 ms in f32 where an H200 with one chunk took 44 ms; 1/8 makes it one.
DEVICE_MEMORY_FRACTION = 1 / 8


def default_window_elements() -> int:
  """The chunk budget of :func:`truncated` on the default device."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # backends without stats
    stats = {}
  limit = stats.get("bytes_limit")
  if not limit:
    return DEFAULT_WINDOW_ELEMENTS
  return max(DEFAULT_WINDOW_ELEMENTS, int(limit * DEVICE_MEMORY_FRACTION) // 4)


def _check_sequence(name: str, xs: Array) -> None:
  if xs.ndim < 2:
    raise ValueError(
        f"{name} expects inputs of shape (..., T, D) with a time axis at -2, "
        f"got shape {tuple(xs.shape)}")


def _leaf_width(tree) -> int:
  return sum(int(a.shape[-1]) for a in jax.tree_util.tree_leaves(tree))


def _hoist_by_default() -> bool:
  # Measured (benchmarks/results): hoisting the input projection wins on GPU
  # (one large matmul instead of T small ones) but on XLA:CPU the hoisted
  # LSTM ran 2.4x slower at B=16, T=128, H=128 than computing x_t @ W inside
  # the loop, so the CPU default keeps it in the loop.
  return jax.default_backend() != "cpu"


#: ``lax.scan`` unroll factor of :func:`scan` on accelerators. Measured on an
#: H200 (benchmarks/results/nvidia-h200, B=64, T=256, H=512): the LSTM train
#: step took 12.2 ms with unroll 1 and 8.0 ms with 8 (fewer loop iterations,
#: hence fewer kernel launches per time step). On XLA:CPU unroll 8 was slower
#: (benchmarks/results/cpu/scan_vs_truncated_cpu_float32.md: the LSTM fwd+bwd
#: at B=8, T=1024, H=256 took 1.02 s vs 0.79 s), so the CPU keeps 1.
ACCELERATOR_SCAN_UNROLL = 8


def default_scan_unroll() -> int:
  """The unroll factor :func:`scan` uses when none is given."""
  return 1 if jax.default_backend() == "cpu" else ACCELERATOR_SCAN_UNROLL


def scan(cell: Cell,
         params: Any,
         xs: Array,
         *,
         initial_carry: Any = None,
         return_carry: bool = False,
         unroll: Optional[int] = None,
         hoist: Optional[bool] = None):
  """The full recurrence with ``lax.scan``.

  Args:
    cell: any seqbench cell.
    params: the cell's parameters.
    xs: inputs, shape ``(..., T, D)``.
    initial_carry: state before the first step (default: the zero state).
      Language models pass the previous window's final carry here
      (truncated BPTT).
    return_carry: also return the final carry.
    unroll: ``lax.scan``'s unroll factor (more steps per loop iteration: fewer
      kernel launches on GPU at the cost of compile time); default
      :func:`default_scan_unroll` (the numbers are the same for any value).
    hoist: apply the cell's ``input_map`` to all time steps before the loop
      (default: on accelerators, not on CPU; the numbers are the same).

  Returns:
    ``ys`` of shape ``(..., T, H)``, or ``(ys, final_carry)``.
  """
  _check_sequence("scan", xs)
  if hoist is None:
    hoist = _hoist_by_default()
  if unroll is None:
    unroll = default_scan_unroll()
  carry = cell.initial_state(xs.shape[:-2]) if initial_carry is None else initial_carry
  xs_tm = jnp.moveaxis(xs, -2, 0)
  if hoist:
    # Transpose the (narrower) inputs, not the projected gates: the input map
    # then writes its (T, ..., G*H) result in the order the loop reads it.
    u = cell.input_map(params, xs_tm)

    def body(c, u_t):
      return cell.recurrent_step(params, c, u_t)
  else:
    u = xs_tm

    def body(c, x_t):
      return cell.step(params, c, x_t)

  carry, ys = lax.scan(body, carry, u, unroll=unroll)
  ys = jnp.moveaxis(ys, 0, -2)
  return (ys, carry) if return_carry else ys


def truncated_chunk_size(cell: Cell, params: Any, xs: Array, k: int,
                         max_elements: Optional[int] = None) -> int:
  """The number of output times computed together by :func:`truncated`.

  A chunk of ``C`` output times runs ``k`` steps on a batch of ``C * batch``
  rows; under differentiation each step keeps its inputs and state, about
  ``k * C * batch * width`` elements, which this keeps under ``max_elements``
  (default :func:`default_window_elements`).
  """
  if max_elements is None:
    max_elements = default_window_elements()
  t = xs.shape[-2]
  batch = math.prod(xs.shape[:-2])
  u_shape = jax.eval_shape(lambda p, x: cell.input_map(p, x), params,
                           jax.ShapeDtypeStruct(xs.shape[:-2] + (1, xs.shape[-1]), xs.dtype))
  width = _leaf_width(u_shape) + _leaf_width(cell.initial_state(()))
  per_time = max(1, k * batch * width)
  return int(max(1, min(t, max_elements // per_time)))


def truncated(cell: Cell,
              params: Any,
              xs: Array,
              k: int,
              *,
              chunk_size: Optional[int] = None,
              unroll: int = 1,
              inner: str = "auto") -> Array:
  r"""The k-step truncated (feed-forward) model.

  .. math::
     h^k_t = \phi(\dots\phi(\phi(0, x_{t-k+1}), x_{t-k+2})\dots, x_t),
     \qquad y^k_t = f(h^k_t)

  Windows that would start before ``t = 0`` start at ``x_0`` (from the zero
  state), so ``k >= T`` is exactly :func:`scan`. For a
  :math:`\lambda`-contractive cell, :math:`\|h_t - h^k_t\| \le \lambda^k
  \|h_{t-k}\|` (Miller & Hardt 2019, Sec. 3).

  How it is computed: all windows share weights, so they are one recurrent
  batch of ``T * batch`` rows run for ``k`` steps; at step ``j`` the rows for
  output time ``t`` read the hoisted input of time ``t - k + 1 + j``. The
  output times are cut into chunks of ``chunk_size``, each rematerialised
  under differentiation, so memory stays bounded for long sequences.

  Args:
    cell: any seqbench cell.
    params: the cell's parameters.
    xs: inputs, shape ``(..., T, D)``.
    k: the window length (context), ``k >= 1``.
    chunk_size: output times per chunk; default from
      :func:`truncated_chunk_size`.
    unroll: unroll factor of the ``k``-step inner scan (``inner="scan"``).
    inner: how the ``k`` steps run. ``"scan"``: a ``lax.scan`` over the
      gathered shifted inputs of all ``T`` windows (one gather, whose
      gradient is one scatter-add), the windows that would start before
      ``t = 0`` masked. ``"unrolled"``: straight-line code, step ``j``
      reading a static slice of the inputs (no loop buffers to copy, no
      gather, its gradient a sum of padded slices), with no masks: the
      first ``k - 1`` outputs, whose windows are their whole history, come
      from the plain recurrence; compile time grows with ``k``.
      ``"auto"``: unrolled up to :data:`UNROLLED_MAX_K` on accelerators,
      scan on the CPU, where the unrolled program compiled ~5x slower
      (k=16 LSTM at B=8, T=1024, H=256: 9.2 s vs 1.8 s).
      All give the same numbers.

  Returns:
    ``ys`` of shape ``(..., T, H)``.
  """
  k = _window_length(k)
  if inner not in INNER_LOOPS + ("auto",):
    raise ValueError(f"truncated: inner must be one of {INNER_LOOPS + ('auto',)}, got {inner!r}")
  if inner == "auto":
    inner = "unrolled" if k <= UNROLLED_MAX_K and jax.default_backend() != "cpu" else "scan"
  _check_sequence("truncated", xs)
  t_len = xs.shape[-2]
  if k >= t_len:
    return scan(cell, params, xs, unroll=unroll)
  if chunk_size is None:
    chunk_size = truncated_chunk_size(cell, params, xs, k)
  given = chunk_size
  try:
    chunk_size = operator.index(chunk_size)  # a NumPy integer is one too, as for k
  except TypeError:
    chunk_size = 0
  if isinstance(given, bool) or chunk_size < 1:
    raise ValueError(f"truncated: chunk_size must be a positive integer, got {given!r}")
  u = cell.input_map(params, jnp.moveaxis(xs, -2, 0))
  if k == 1:
    # Every window is one step from the zero state: a single batched step.
    _, ys = cell.recurrent_step(params, cell.initial_state(xs.shape[-2:-1] + xs.shape[:-2]), u)
    return jnp.moveaxis(ys, 0, -2)
  run = _truncated_unrolled if inner == "unrolled" else _truncated_looped
  return jnp.moveaxis(run(cell, params, u, k, chunk_size, xs.shape[:-2], unroll), 0, -2)


def _chunked(run_chunk, n_out: int, chunk: int) -> Array:
  """``run_chunk(start)`` for the chunk starts that tile ``n_out`` outputs."""
  n_chunks = -(-n_out // chunk)
  if n_chunks == 1:
    ys = run_chunk(jnp.asarray(0))
  else:
    # Each chunk is rematerialised under differentiation: memory stays at one
    # chunk's residuals.
    ys = lax.map(jax.checkpoint(run_chunk), jnp.arange(n_chunks) * chunk)
    ys = ys.reshape((n_chunks * chunk,) + ys.shape[2:])
  return ys[:n_out]


def _pad_time(u, before: int, after: int):
  return jax.tree_util.tree_map(
      lambda a: jnp.pad(a, [(before, after)] + [(0, 0)] * (a.ndim - 1)), u)


def _truncated_looped(cell, params, u, k, chunk_size, batch_shape, unroll):
  # All T windows in one loop of k steps; windows that would start before
  # t = 0 are masked (they hold the zero state until their first input).
  t_len = jax.tree_util.tree_leaves(u)[0].shape[0]
  chunk = min(chunk_size, t_len)
  # Front padding of k-1 steps makes "input of time t - k + 1 + j" the padded
  # index t + j; end padding makes the chunks tile the time axis exactly.
  u = _pad_time(u, k - 1, -(-t_len // chunk) * chunk - t_len)

  def run_chunk(start):
    u_c = jax.tree_util.tree_map(
        lambda a: lax.dynamic_slice_in_dim(a, start, chunk + k - 1, axis=0), u)
    # Step j of the window ending at output time start + i reads padded time
    # start + i + j. Gathered before the loop, as a scanned input: slicing
    # inside the loop would transpose to a full-size update at every step.
    steps = jnp.arange(k - 1)[:, None] + jnp.arange(chunk)[None, :]  # (k-1, chunk)
    shifted = jax.tree_util.tree_map(lambda a: a[steps], u_c)
    started = (start + steps >= k - 1).reshape(
        (k - 1, chunk) + (1,) * (len(batch_shape) + 1))

    def window_step(carry, inputs):
      u_j, started_j = inputs
      new, _ = cell.recurrent_step(params, carry, u_j)
      return jax.tree_util.tree_map(lambda n, o: jnp.where(started_j, n, o), new, carry), None

    carry, _ = lax.scan(window_step, cell.initial_state((chunk,) + batch_shape),
                        (shifted, started), unroll=unroll)
    # The last step reads x_t itself; it is never masked.
    _, y = cell.recurrent_step(params, carry, jax.tree_util.tree_map(lambda a: a[k - 1:], u_c))
    return y

  return _chunked(run_chunk, t_len, chunk)


def _truncated_unrolled(cell, params, u, k, chunk_size, batch_shape, unroll):
  # Straight-line code, no masks: the first k - 1 outputs are the plain
  # recurrence's; output k - 1 + i reads input i + j at step j.
  del unroll
  t_len = jax.tree_util.tree_leaves(u)[0].shape[0]
  n_out = t_len - k + 1
  chunk = min(chunk_size, n_out)
  padded = _pad_time(u, 0, -(-n_out // chunk) * chunk - n_out)

  def run_chunk(start):
    u_c = jax.tree_util.tree_map(
        lambda a: lax.dynamic_slice_in_dim(a, start, chunk + k - 1, axis=0), padded)
    carry = cell.initial_state((chunk,) + batch_shape)
    for j in range(k):
      carry, y = cell.recurrent_step(
          params, carry, jax.tree_util.tree_map(lambda a: a[j:j + chunk], u_c))
    return y

  ys = _chunked(run_chunk, n_out, chunk)
  carry, head = cell.initial_state(batch_shape), []
  for j in range(k - 1):
    carry, y = cell.recurrent_step(params, carry, jax.tree_util.tree_map(lambda a: a[j], u))
    head.append(y)
  return jnp.concatenate([jnp.stack(head), ys], axis=0) if head else ys


#: How :func:`truncated` may run its ``k`` steps.
INNER_LOOPS = ("unrolled", "scan")

#: :func:`truncated`'s ``inner="auto"`` unrolls the ``k`` steps up to this
#: ``k``. Profiled on an H100 (benchmarks/results/nvidia-h100, B=32, T=1024,
#: H=512, k=16), the looped form spent 20 of 84 ms copying loop buffers
#: (``memcpy128``) and 12 ms in the gather and its scatter-add; beyond this
#: ``k`` the straight-line program's compile time grows instead.
UNROLLED_MAX_K = 32


def _window_length(k) -> int:
  try:
    k_int = operator.index(k)
  except TypeError:
    k_int = None
  if k_int is None or isinstance(k, bool) or k_int < 1:
    raise ValueError(
        f"truncated: the window length k must be an integer >= 1, got k={k!r}")
  return k_int


def _linear_combine(left, right):
  a_l, b_l = left
  a_r, b_r = right
  return a_r * a_l, a_r * b_l + b_r


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def linear_recurrence(a: Array, b: Array, axis: int) -> Array:
  r""":math:`h_t = a_t \odot h_{t-1} + b_t` from :math:`h_{-1} = 0`, by parallel scan.

  The gradient is the adjoint recurrence run from the end,
  :math:`g_t = \bar h_t + a_{t+1} \odot g_{t+1}`, with
  :math:`\bar b_t = g_t` and :math:`\bar a_t = g_t \odot h_{t-1}`: one more
  parallel scan, where differentiating ``lax.associative_scan`` itself
  transposes its whole tree of slices (on XLA:CPU, at B=64, T=256, N=512
  complex, the gradient by autodiff compiled in 6.0 s instead of 3.8 s and
  ran 1.4x slower).

  Args:
    a, b: coefficients of the same shape (real or complex).
    axis: the time axis (non-negative).

  Returns:
    ``h``, the shape of ``b``.
  """
  return lax.associative_scan(_linear_combine, (a, b), axis=axis)[1]


def _linear_recurrence_fwd(a, b, axis):
  h = linear_recurrence(a, b, axis)
  return h, (a, h)


def _linear_recurrence_bwd(axis, residuals, h_bar):
  a, h = residuals
  n = a.shape[axis]
  first = lambda x: jnp.zeros_like(lax.slice_in_dim(x, 0, 1, axis=axis))
  a_next = jnp.concatenate([lax.slice_in_dim(a, 1, n, axis=axis), first(a)], axis=axis)
  g = lax.associative_scan(_linear_combine, (a_next, h_bar), axis=axis, reverse=True)[1]
  h_prev = jnp.concatenate([first(h), lax.slice_in_dim(h, 0, n - 1, axis=axis)], axis=axis)
  # JAX's cotangents transpose, they do not conjugate: d(a*x)/dx^T g = a*g.
  return g * h_prev, g


linear_recurrence.defvjp(_linear_recurrence_fwd, _linear_recurrence_bwd)


def parallel(cell: Cell,
             params: Any,
             xs: Array,
             *,
             initial_carry: Any = None,
             return_carry: bool = False):
  r"""A linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` by parallel scan.

  Uses ``lax.associative_scan`` over the pairs :math:`(a_t, b_t)` with
  :math:`(a_1, b_1) \bullet (a_2, b_2) = (a_2 a_1, a_2 b_1 + b_2)`: depth
  :math:`O(\log T)` instead of :math:`T`. Only cells whose state update is
  linear (``cell.is_linear``, e.g. :class:`seqbench.cells.LRU`) qualify.

  Args:
    cell: a linear cell.
    params: its parameters.
    xs: inputs, shape ``(..., T, D)``.
    initial_carry: state before the first step (default zero).
    return_carry: also return the final state.

  Returns:
    ``ys`` of shape ``(..., T, H)``, or ``(ys, final_carry)``.

  Raises:
    ValueError: if the cell's state update is not linear.
  """
  if not getattr(cell, "is_linear", False):
    raise ValueError(
        f"parallel needs a cell whose state update is linear in the state "
        f"(e.g. seqbench.cells.LRU); {type(cell).__name__} is nonlinear: use "
        f"seqbench.unroll.scan or seqbench.unroll.truncated instead")
  _check_sequence("parallel", xs)
  u = cell.input_map(params, xs)
  a, b = cell.linear_coefficients(params, u)
  a = jnp.broadcast_to(a, b.shape)
  if b.shape[-2] == 0:  # no steps: the carry stays where it started, as for scan
    ys = cell.linear_output(params, b, u)
    if not return_carry:
      return ys
    carry = initial_carry if initial_carry is not None else cell.initial_state(xs.shape[:-2])
    return ys, jnp.broadcast_to(carry, b.shape[:-2] + b.shape[-1:]).astype(b.dtype)
  if initial_carry is not None:
    # Fold h_0 into the first input: h_1 = a_1 h_0 + b_1.
    b = b.at[..., 0, :].add(a[..., 0, :] * initial_carry)
  hs = linear_recurrence(a, b, b.ndim - 2)
  ys = cell.linear_output(params, hs, u)
  return (ys, hs[..., -1, :]) if return_carry else ys


__all__ = ["scan", "truncated", "parallel", "linear_recurrence", "truncated_chunk_size", "default_scan_unroll",
           "default_window_elements", "DEFAULT_WINDOW_ELEMENTS", "INNER_LOOPS", "UNROLLED_MAX_K"]
