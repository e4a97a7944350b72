"""Pure-function recurrent cells.

Every cell is a frozen dataclass (a static, hashable description, safe to pass
to ``jax.jit`` as a static argument) with four members:

* ``init(key, input_size) -> params``: a plain pytree of arrays;
* ``initial_state(batch_shape=()) -> carry``: the zero state;
* ``step(params, carry, x) -> (carry, y)``: one time step. ``x`` has shape
  ``(..., input_size)``; any leading batch dimensions broadcast, so the same
  function serves one example or a batch (``vmap`` works too);
* ``hidden_size``: the width of ``y``.

A cell's ``step`` is split in two so executors can hoist work out of the time
loop (one large matmul over all time steps instead of ``T`` small ones):

* ``input_map(params, x) -> u``: everything that does not depend on the carry;
* ``recurrent_step(params, carry, u) -> (carry, y)``.

``step(params, carry, x) == recurrent_step(params, carry, input_map(params, x))``.

Weights use the ``x @ W`` layout (``input_kernel`` is ``(input_size, G*H)``,
``recurrent_kernel`` is ``(H, G*H)``). The *operator* acting on the state is
therefore the transpose ``W.T``: its induced infinity-norm is the largest
**column** l1 sum of ``W``. ``seqbench.stability`` relies on this convention.

Initialisations follow PyTorch (``U(-1/sqrt(H), 1/sqrt(H))``), the framework of
the published Miller & Hardt (2019) and Bai et al. (2018) experiments, with one
difference: the RNN and LSTM keep one bias vector drawn from that uniform,
where PyTorch adds two (``b_ih + b_hh``, a triangular distribution on
``±2/sqrt(H)`` with twice the variance). Every committed run used this draw,
so it stays; the GRU keeps PyTorch's two vectors, which it needs apart.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol, Tuple, runtime_checkable

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any  # a pytree of arrays
Carry = Any  # a pytree of arrays


@runtime_checkable
class Cell(Protocol):
  """The protocol shared by every recurrent cell (see module docstring)."""

  hidden_size: int

  def init(self, key: Array, input_size: int) -> Params:
    ...

  def initial_state(self, batch_shape: Tuple[int, ...] = ()) -> Carry:
    ...

  def step(self, params: Params, carry: Carry, x: Array) -> Tuple[Carry, Array]:
    ...


def _check_positive(name: str, value: int, owner: str) -> None:
  if not isinstance(value, int) or value < 1:
    raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _check_input(owner: str, expected: int, x: Array) -> None:
  if x.ndim < 1 or x.shape[-1] != expected:
    got = x.shape[-1] if x.ndim else "a scalar"
    raise ValueError(
        f"{owner} expects input size {expected} on the last axis, got {got} "
        f"(input shape {tuple(x.shape)})")


def _uniform(key: Array, shape, bound: float, dtype) -> Array:
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _batch_shape(batch_shape) -> Tuple[int, ...]:
  if isinstance(batch_shape, int):
    return (batch_shape,)
  return tuple(batch_shape)


class _GatedCell:
  """Shared plumbing: ``step`` from ``input_map`` + ``recurrent_step``."""

  hidden_size: int
  dtype: Any

  #: whether the state update is linear in the state (enables ``parallel``).
  is_linear = False
  #: the norm on the state in which stability is certified and measured.
  state_norm = "inf"

  def step(self, params: Params, carry: Carry, x: Array) -> Tuple[Carry, Array]:
    return self.recurrent_step(params, carry, self.input_map(params, x))

  def input_size(self, params: Params) -> int:
    return params["input_kernel"].shape[0]

  def input_map(self, params: Params, x: Array) -> Any:
    _check_input(type(self).__name__, self.input_size(params), x)
    # In the cell's dtype, as the zero state is: a float32 input to a bf16
    # cell would otherwise promote the step's output and no longer match the
    # carry lax.scan threads through.
    return self._input_map(params, jnp.asarray(x).astype(self.dtype))

  def _input_map(self, params: Params, x: Array) -> Any:
    raise NotImplementedError  # each concrete cell defines its own


_NONLINEARITIES: dict = {"tanh": jnp.tanh, "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class RNN(_GatedCell):
  r"""Elman RNN: :math:`h_t = \rho(W_{ih}^\top x_t + W_{hh}^\top h_{t-1} + b)`.

  ``rho`` is ``tanh`` or ``relu``; both are 1-Lipschitz, so the state map is a
  :math:`\|W_{hh}\|_2`-contraction in the Euclidean norm (Miller & Hardt 2019,
  Sec. 2). The output is the new state.

  Attributes:
    hidden_size: width of the state and of the output.
    nonlinearity: ``"tanh"`` (default, as in the paper) or ``"relu"``.
    dtype: dtype of parameters and state.
  """

  hidden_size: int
  nonlinearity: str = "tanh"
  dtype: Any = jnp.float32

  state_norm = "2"

  def __post_init__(self):
    _check_positive("hidden_size", self.hidden_size, "RNN")
    if self.nonlinearity not in _NONLINEARITIES:
      raise ValueError(
          f"RNN: nonlinearity must be one of {sorted(_NONLINEARITIES)}, "
          f"got {self.nonlinearity!r}")

  def init(self, key: Array, input_size: int) -> Params:
    _check_positive("input_size", input_size, "RNN.init")
    h = self.hidden_size
    bound = 1.0 / math.sqrt(h)
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "input_kernel": _uniform(k1, (input_size, h), bound, self.dtype),
        "recurrent_kernel": _uniform(k2, (h, h), bound, self.dtype),
        "bias": _uniform(k3, (h,), bound, self.dtype),
    }

  def initial_state(self, batch_shape=()) -> Carry:
    return jnp.zeros(_batch_shape(batch_shape) + (self.hidden_size,), self.dtype)

  def _input_map(self, params, x):
    return x @ params["input_kernel"] + params["bias"]

  def recurrent_step(self, params, carry, u):
    act = _NONLINEARITIES[self.nonlinearity]
    h = act(u + carry @ params["recurrent_kernel"])
    return h, h


@dataclasses.dataclass(frozen=True)
class LSTM(_GatedCell):
  r"""LSTM without peepholes, PyTorch gate order ``(i, f, z, o)``.

  .. math::
     i, f, o = \sigma(\cdot),\quad z = \tanh(\cdot),\quad
     c_t = i \odot z + f \odot c_{t-1},\quad h_t = o \odot \tanh(c_t)

  with each gate pre-activation ``W_ih^T x + W_hh^T h_{t-1} + b``. The carry is
  ``(c, h)`` (flax's order) and the output is ``h``.

  Attributes:
    hidden_size: width of ``c``, ``h`` and the output.
    forget_bias: added to the forget-gate bias at init. PyTorch's default
      is 0 (the Miller & Hardt word-LM code keeps it); their JSB/MNIST code
      sets +10 on each of PyTorch's two bias vectors, i.e. 20 here (one bias
      vector); Bai et al. (2018) tuned it in 1..10 for their LSTM baselines.
    dtype: dtype of parameters and state.
  """

  hidden_size: int
  forget_bias: float = 0.0
  dtype: Any = jnp.float32

  #: gate blocks of the fused kernels, in column order.
  gates = ("i", "f", "z", "o")

  def __post_init__(self):
    _check_positive("hidden_size", self.hidden_size, "LSTM")

  def init(self, key: Array, input_size: int) -> Params:
    _check_positive("input_size", input_size, "LSTM.init")
    h = self.hidden_size
    bound = 1.0 / math.sqrt(h)
    k1, k2, k3 = jax.random.split(key, 3)
    bias = _uniform(k3, (4 * h,), bound, self.dtype)
    bias = bias.at[h:2 * h].add(jnp.asarray(self.forget_bias, self.dtype))
    return {
        "input_kernel": _uniform(k1, (input_size, 4 * h), bound, self.dtype),
        "recurrent_kernel": _uniform(k2, (h, 4 * h), bound, self.dtype),
        "bias": bias,
    }

  def initial_state(self, batch_shape=()) -> Carry:
    z = jnp.zeros(_batch_shape(batch_shape) + (self.hidden_size,), self.dtype)
    return (z, z)

  def _input_map(self, params, x):
    return x @ params["input_kernel"] + params["bias"]

  def recurrent_step(self, params, carry, u):
    c, h = carry
    pre = u + h @ params["recurrent_kernel"]
    i, f, z, o = jnp.split(pre, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(z)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


@dataclasses.dataclass(frozen=True)
class GRU(_GatedCell):
  r"""GRU in the cuDNN / PyTorch convention (gate order ``(r, z, n)``).

  .. math::
     r = \sigma(W_{ir}^\top x + b_{ir} + W_{hr}^\top h + b_{hr}),\quad
     z = \sigma(W_{iz}^\top x + b_{iz} + W_{hz}^\top h + b_{hz}),\\
     n = \tanh(W_{in}^\top x + b_{in} + r \odot (W_{hn}^\top h + b_{hn})),\quad
     h_t = (1 - z) \odot n + z \odot h_{t-1}.

  The reset gate multiplies the *recurrent* term including its bias, which is
  why the input and recurrent biases are kept apart.
  """

  hidden_size: int
  dtype: Any = jnp.float32

  gates = ("r", "z", "n")

  def __post_init__(self):
    _check_positive("hidden_size", self.hidden_size, "GRU")

  def init(self, key: Array, input_size: int) -> Params:
    _check_positive("input_size", input_size, "GRU.init")
    h = self.hidden_size
    bound = 1.0 / math.sqrt(h)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "input_kernel": _uniform(k1, (input_size, 3 * h), bound, self.dtype),
        "recurrent_kernel": _uniform(k2, (h, 3 * h), bound, self.dtype),
        "input_bias": _uniform(k3, (3 * h,), bound, self.dtype),
        "recurrent_bias": _uniform(k4, (3 * h,), bound, self.dtype),
    }

  def initial_state(self, batch_shape=()) -> Carry:
    return jnp.zeros(_batch_shape(batch_shape) + (self.hidden_size,), self.dtype)

  def _input_map(self, params, x):
    return x @ params["input_kernel"] + params["input_bias"]

  def recurrent_step(self, params, carry, u):
    h = carry
    rec = h @ params["recurrent_kernel"] + params["recurrent_bias"]
    u_r, u_z, u_n = jnp.split(u, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(rec, 3, axis=-1)
    r = jax.nn.sigmoid(u_r + h_r)
    z = jax.nn.sigmoid(u_z + h_z)
    n = jnp.tanh(u_n + r * h_n)
    h = (1.0 - z) * n + z * h
    return h, h


def _complex_dtype(dtype) -> Any:
  return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


def merged_input_matmul() -> bool:
  """Whether :class:`LRU` computes its three input products as one matmul (not on XLA:CPU)."""
  return jax.default_backend() != "cpu"


def _complex_part_dtype(dtype) -> Any:
  # There is no bfloat16/float16 complex type: low-precision LRUs keep their
  # state in complex64 (float32 parts) and cast the output back.
  return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


@dataclasses.dataclass(frozen=True)
class LRU(_GatedCell):
  r"""Linear Recurrent Unit (Orvieto et al. 2023): a diagonal complex recurrence.

  .. math::
     h_t = \lambda \odot h_{t-1} + \gamma \odot (B^\top x_t),\qquad
     y_t = \operatorname{Re}(C^\top h_t) + D^\top x_t,\\
     \lambda = \exp(-\exp(\nu) + i\exp(\theta)),\qquad
     \gamma = \sqrt{1 - |\lambda|^2}.

  Stable by parametrisation: :math:`|\lambda| = \exp(-\exp(\nu)) < 1` for every
  real :math:`\nu`. The state map is linear, so ``seqbench.unroll.parallel``
  computes it with ``lax.associative_scan``.

  Attributes:
    hidden_size: width of the output ``y``.
    state_size: number of complex state channels (default ``hidden_size``).
    r_min, r_max: the ring ``r_min <= |lambda| <= r_max`` of the init.
    max_phase: eigenvalue phases are drawn in ``[0, max_phase]``.
    dtype: real dtype of the parameters (the state is the matching complex).
  """

  hidden_size: int
  state_size: int | None = None
  r_min: float = 0.9
  r_max: float = 0.999
  max_phase: float = 2 * math.pi
  dtype: Any = jnp.float32

  is_linear = True
  state_norm = "2"

  def __post_init__(self):
    _check_positive("hidden_size", self.hidden_size, "LRU")
    if self.state_size is not None:
      _check_positive("state_size", self.state_size, "LRU")
    if not 0.0 <= self.r_min < self.r_max < 1.0:
      raise ValueError(
          f"LRU: need 0 <= r_min < r_max < 1, got r_min={self.r_min}, "
          f"r_max={self.r_max}")

  @property
  def n_state(self) -> int:
    return self.state_size or self.hidden_size

  def init(self, key: Array, input_size: int) -> Params:
    _check_positive("input_size", input_size, "LRU.init")
    n, h, d, dt = self.n_state, self.hidden_size, input_size, self.dtype
    k = jax.random.split(key, 7)
    # Uniform on the ring area, as in Orvieto et al. (2023, Lemma 3.2).
    u1 = jax.random.uniform(k[0], (n,), dt)
    nu = -0.5 * jnp.log(u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2)
    theta = jax.random.uniform(k[1], (n,), dt) * self.max_phase
    # Keep theta strictly positive so its log is finite.
    theta = jnp.maximum(theta, jnp.asarray(1e-6, dt))
    modulus = jnp.exp(-nu)
    return {
        "nu_log": jnp.log(nu),
        "theta_log": jnp.log(theta),
        "gamma_log": 0.5 * jnp.log1p(-modulus**2),
        "B_re": jax.random.normal(k[2], (d, n), dt) / math.sqrt(2 * d),
        "B_im": jax.random.normal(k[3], (d, n), dt) / math.sqrt(2 * d),
        "C_re": jax.random.normal(k[4], (n, h), dt) / math.sqrt(n),
        "C_im": jax.random.normal(k[5], (n, h), dt) / math.sqrt(n),
        "D": jax.random.normal(k[6], (d, h), dt) / math.sqrt(d),
    }

  def input_size(self, params: Params) -> int:
    return params["B_re"].shape[0]

  def eigenvalues(self, params: Params) -> Array:
    """The diagonal of the state matrix, ``exp(-exp(nu) + i exp(theta))``."""
    part = _complex_part_dtype(params["nu_log"].dtype)
    modulus = jnp.exp(-jnp.exp(params["nu_log"].astype(part)))
    phase = jnp.exp(params["theta_log"].astype(part))
    return jax.lax.complex(modulus * jnp.cos(phase), modulus * jnp.sin(phase))

  def initial_state(self, batch_shape=()) -> Carry:
    return jnp.zeros(_batch_shape(batch_shape) + (self.n_state,),
                     _complex_dtype(self.dtype))

  def _input_map(self, params, x):
    part = _complex_part_dtype(x.dtype)
    gamma = jnp.exp(params["gamma_log"]).astype(part)
    # x is never promoted to complex. On accelerators the three products are one
    # real matmul x @ [B_re | B_im | D]: fewer GEMMs to launch per step and to
    # autotune when a GPU compiles the step. On XLA:CPU three matmuls measured
    # faster (train step at the default bench size, scan and parallel alike:
    # 6.0-7.0 vs 7.4-8.3 ms; benchmarks/results/cpu/bench/README.md).
    if merged_input_matmul():
      n = self.n_state
      xw = x @ jnp.concatenate([params["B_re"], params["B_im"], params["D"]], axis=1)
      b_re, b_im, skip = xw[..., :n], xw[..., n:2 * n], xw[..., 2 * n:]
    else:
      b_re, b_im, skip = x @ params["B_re"], x @ params["B_im"], x @ params["D"]
    drive = jax.lax.complex(gamma * b_re.astype(part), gamma * b_im.astype(part))
    return (drive, skip)

  def recurrent_step(self, params, carry, u):
    drive, _ = u
    h = self.eigenvalues(params) * carry + drive
    return h, self.linear_output(params, h, u)

  def linear_output(self, params, h, u):
    """``y = Re(C^T h) + D^T x`` from a state and the hoisted input terms."""
    _, skip = u
    dt = params["C_re"].dtype
    # Re(C^T h) = [Re h, Im h] @ [C_re; -C_im]: one matmul instead of two.
    parts = jnp.concatenate([h.real, h.imag], axis=-1).astype(dt)
    return parts @ jnp.concatenate([params["C_re"], -params["C_im"]], axis=0) + skip

  def linear_coefficients(self, params, u):
    """``(a, b)`` with ``h_t = a * h_{t-1} + b_t`` for the parallel executor."""
    drive, _ = u
    return self.eigenvalues(params), drive


@dataclasses.dataclass(frozen=True)
class Stacked:
  r"""Layers of cells as one cell: the state is the tuple of the layers' states.

  .. math::
     (h^1_t, \dots, h^L_t) = \phi\big((h^1_{t-1}, \dots, h^L_{t-1}), x_t\big),
     \quad h^1_t = \phi_1(h^1_{t-1}, x_t),\ h^l_t = \phi_l(h^l_{t-1}, h^{l-1}_t)

  The output is the last layer's. A multi-layer network is one recurrent
  model with this joint state map, so its k-truncated model (Miller & Hardt
  2019, Sec. 3) restarts *every* layer from zero k steps back and sees only
  :math:`x_{t-k+1..t}`; ``unroll.truncated(Stacked(cells), ...)`` computes
  exactly that (truncating each layer on its own input would let a stack of L
  layers see :math:`L(k-1)+1` inputs).

  Attributes:
    layers: the cells, first (reading ``x``) to last.
  """

  layers: Tuple[Any, ...]

  is_linear = False

  def __post_init__(self):
    if not self.layers:
      raise ValueError("Stacked needs at least one cell")

  @property
  def hidden_size(self) -> int:
    return self.layers[-1].hidden_size

  def init(self, key: Array, input_size: int) -> Params:
    params, width = [], input_size
    for cell, k in zip(self.layers, jax.random.split(key, len(self.layers))):
      params.append(cell.init(k, width))
      width = cell.hidden_size
    return params

  def initial_state(self, batch_shape=()) -> Carry:
    return tuple(cell.initial_state(batch_shape) for cell in self.layers)

  def input_map(self, params: Params, x: Array) -> Any:
    # Only the first layer's input projection can leave the time loop: the
    # others read the state of the layer below.
    return self.layers[0].input_map(params[0], x)

  def recurrent_step(self, params: Params, carry: Carry, u: Any) -> Tuple[Carry, Array]:
    first, y = self.layers[0].recurrent_step(params[0], carry[0], u)
    new = [first]
    for cell, p, c in zip(self.layers[1:], params[1:], carry[1:]):
      c, y = cell.step(p, c, y)
      new.append(c)
    return tuple(new), y

  def step(self, params: Params, carry: Carry, x: Array) -> Tuple[Carry, Array]:
    return self.recurrent_step(params, carry, self.input_map(params, x))


__all__ = ["Cell", "RNN", "LSTM", "GRU", "LRU", "Stacked"]
