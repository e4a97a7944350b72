r"""Stability: certified contraction bounds, projections, measured contraction.

A recurrent model :math:`h_t = \phi_w(h_{t-1}, x_t)` is *stable* when
:math:`\phi_w` is a :math:`\lambda`-contraction in the state for some
:math:`\lambda < 1` (Miller & Hardt, "Stable Recurrent Models", ICLR 2019,
Definition 1). Three tools per cell:

* :func:`lipschitz_bound` -- a certified upper bound on :math:`\lambda` from
  the parameters alone (in the cell's state norm, ``cell.state_norm``);
* :func:`project` -- the Euclidean projection onto a set of parameters whose
  certified bound is at most ``lam`` (apply after every optimiser update:
  projected gradient descent, as in the paper). :func:`project_updates` is the
  same as an optax transformation;
* :func:`empirical_contraction` -- the largest :math:`\|\partial h_t/\partial
  h_{t-1}\|` met along real input trajectories (data-dependent stability).

Norms: the RNN and LRU use the Euclidean norm on the state (spectral norm of
the Jacobian); the LSTM and GRU use the infinity norm (for the LSTM on the
pair :math:`s=(c,h)`, :math:`\|s\| = \max(\|c\|_\infty, \|h\|_\infty)`).
Weights are stored in the ``x @ W`` layout, so the operator acting on the
state is ``W.T`` and its induced infinity-norm is the largest *column* l1 sum
of ``W``. (The authors' PyTorch code normalised the l1 norm of the columns of
``weight_hh``, which acts as ``W h``: that bounds the induced 1-norm, the wrong
one for this condition.)

The LSTM and GRU conditions hold on the reachable set: states started from
zero (so :math:`\|h\|_\infty \le 1`) and inputs with
:math:`\|x\|_\infty \le` ``input_bound``. Deeper layers see the previous
layer's ``h`` as input, so ``input_bound=1`` is right for them; a first layer
needs its inputs clipped (the paper clips embeddings to [-1, 1]).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
from jax import lax

from seqbench.cells import GRU, LRU, LSTM, RNN, Cell

Array = jax.Array

# Relative slack in "already inside the set" tests, so that projecting twice
# returns exactly the same parameters despite float32 round-off (an SVD of the
# clipped matrix, a cumulative sum, recompute the norm to about 1e-6).
_INSIDE_SLACK = 1e-5


def _check_lam(lam) -> float:
  lam = float(lam)
  if not (lam > 0.0 and math.isfinite(lam)):
    raise ValueError(f"lam must be a positive finite number, got {lam!r}")
  return lam


def _check_input_bound(input_bound) -> float:
  b = float(input_bound)
  if not (b >= 0.0 and math.isfinite(b)):
    raise ValueError(
        f"input_bound must be a finite number >= 0 (a bound on ||x||_inf), got {input_bound!r}")
  return b


def _logit(p: float) -> float:
  return math.log(p) - math.log1p(-p)


def _col_l1(w: Array) -> Array:
  """l1 norm of each column: the rows of the operator ``w.T``."""
  return jnp.sum(jnp.abs(w), axis=0)


def _op_inf_norm(w: Array) -> Array:
  """Induced infinity-norm of the operator ``h -> w.T @ h``."""
  return jnp.max(_col_l1(w))


def project_l1_columns(w: Array, radius) -> Array:
  r"""Project every column of ``w`` onto the l1 ball of ``radius`` (a scalar, or one per column).

  The Euclidean projection onto :math:`\{\|w^\top\|_\infty \le r\}` decomposes
  into these independent column projections: soft-thresholding
  :math:`w \mapsto \mathrm{sign}(w) \max(|w| - \theta, 0)` at the
  :math:`\theta \ge 0` that puts the column on the sphere (Duchi et al., ICML
  2008). Columns already inside the ball are returned unchanged, bit for bit.
  """
  radius = jnp.asarray(radius, w.dtype)
  inside = jnp.sum(jnp.abs(w), axis=0) <= radius * (1 + _INSIDE_SLACK)
  return jnp.where(inside[None, :], w, _shrink_l1_columns(w, radius, ~inside))


#: Bisection rounds that bracket the l1 threshold before the exact finish.
_L1_BISECTIONS = 16


def _l1_threshold(mag: Array, radius: Array, active: Array) -> tuple[Array, Array]:
  r"""The soft-threshold level :math:`\theta` of each active column of ``mag`` (>= 0).

  :math:`\theta` is the root of the decreasing, convex, piecewise-linear
  :math:`f(\theta) = \sum_i \max(|w_i| - \theta, 0) - r`. The textbook method
  sorts every column (Duchi et al., ICML 2008); on XLA:CPU that sort was 42%
  of the Nottingham LSTM group's training step (3 stable + 3 unstable models)
  and 84% of the JSB LSTM λ sweep's (6 projected models). Here instead:

  1. :data:`_L1_BISECTIONS` rounds of bisection on :math:`[0, \max |w|]`
     leave a lower bound :math:`\theta_0 \le \theta^*` with few of the
     :math:`|w_i|` between it and the root;
  2. Newton's method from the left (Michelot, J. Optim. Theory Appl. 50,
     1986): with :math:`S = \{i : |w_i| > \theta\}`,
     :math:`\theta \leftarrow (\sum_{i \in S} |w_i| - r) / |S|`. By convexity it
     never passes the root, :math:`S` only shrinks (at most ``n`` rounds),
     and it stops at the threshold when :math:`|S|` stops changing.

  Newton alone is exact too, but a column just outside the ball starts it
  near 0, where it drops a few entries per round (hundreds of rounds); after
  the bisection it took 2-6 rounds on trained LSTM weights. Every round is an
  elementwise pass and column sums. Inactive columns (inside the ball) take
  no part and get 0.

  Returns:
    ``(theta, rounds)``: the thresholds, and how many Newton rounds ran.
  """
  n = mag.shape[0]
  excess = lambda theta: jnp.sum(jnp.maximum(mag - theta[None, :], 0), axis=0) - radius

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = excess(mid) > 0
    return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

  zero = jnp.zeros(mag.shape[1], mag.dtype)
  lo, _ = lax.fori_loop(0, _L1_BISECTIONS, bisect, (zero, jnp.max(mag, axis=0)))

  def newton(carry):
    theta, count, _, it = carry
    kept = mag > theta[None, :]
    new_count = jnp.sum(kept, axis=0, dtype=jnp.int32)
    new_sum = jnp.sum(jnp.where(kept, mag, 0), axis=0)
    # S empties only at radius 0, where theta = max |w| already zeroes the column.
    empty = new_count == 0
    size = jnp.maximum(new_count, 1).astype(mag.dtype)
    step = jnp.where(active & ~empty, (new_sum - radius) / size, theta)
    # Exact Newton never steps back; in float32 a column just outside the ball
    # makes the sum minus the radius mostly round-off, which, unclamped, sends
    # theta back and forth across entries of that size without end.
    new_theta = jnp.maximum(theta, step)
    new_count = jnp.where(empty, count, new_count)
    moved = jnp.any(active & (new_count != count))
    return new_theta, new_count, moved, it + 1

  start = (jnp.where(active, lo, 0), jnp.full(mag.shape[1], -1, jnp.int32), jnp.any(active), 0)
  theta, _, _, rounds = lax.while_loop(lambda c: c[2] & (c[3] <= n), newton, start)
  return jnp.where(active, jnp.maximum(theta, 0), 0), rounds


def _shrink_l1_columns(w: Array, radius: Array, active: Array) -> Array:
  """Soft-threshold every active column onto the l1 sphere of ``radius``."""
  mag = jnp.abs(w)
  theta, _ = _l1_threshold(mag, radius, active)
  shrunk = jnp.sign(w) * jnp.maximum(mag - theta[None, :], 0)
  # The threshold comes from a difference of sums much larger than the radius;
  # one rescale removes what round-off left above it.
  shrunk_norms = jnp.sum(jnp.abs(shrunk), axis=0)
  return shrunk * jnp.minimum(1, radius / jnp.maximum(shrunk_norms, jnp.finfo(w.dtype).tiny))


def _block_radii(radii: Sequence[float], w: Array) -> Array:
  """One l1 radius per column of a fused gate kernel, from one per gate block.

  The gate blocks are then projected in one call, one threshold search
  (one loop) for all of them instead of one per block.
  """
  return jnp.repeat(jnp.asarray(radii, w.dtype), w.shape[-1] // len(radii))


def _gate_blocks(w: Array, n: int):
  return jnp.split(w, n, axis=-1)


# ---------------------------------------------------------------------------
# Certified bounds.


@functools.singledispatch
def _lipschitz_bound(cell: Cell, params: Any, input_bound: float = 1.0) -> Array:
  raise NotImplementedError(
      f"no stability bound is known for {type(cell).__name__}")


@_lipschitz_bound.register
def _(cell: RNN, params, input_bound=1.0):
  # tanh and relu are 1-Lipschitz: ||J|| <= ||W_hh||_2.
  del input_bound
  return jnp.linalg.norm(params["recurrent_kernel"], ord=2)


def lstm_forget_gate_bound(params, input_bound: float = 1.0) -> Array:
  r""":math:`f_\infty = \sup_t \|f_t\|_\infty` over the reachable set.

  With :math:`\|h\|_\infty \le 1` and :math:`\|x\|_\infty \le B`, the forget
  pre-activation of unit :math:`j` is at most
  :math:`\|W_{f,j}\|_1 + B\|U_{f,j}\|_1 + b_{f,j}`.
  """
  b = _check_input_bound(input_bound)
  params = _widen(params)
  _, w_f, _, _ = _gate_blocks(params["recurrent_kernel"], 4)
  _, u_f, _, _ = _gate_blocks(params["input_kernel"], 4)
  _, b_f, _, _ = _gate_blocks(params["bias"], 4)
  pre = _col_l1(w_f) + b * _col_l1(u_f) + b_f
  return jax.nn.sigmoid(jnp.max(pre))


@_lipschitz_bound.register
def _(cell: LSTM, params, input_bound=1.0):
  r"""Miller & Hardt's infinity-norm LSTM condition on :math:`s=(c,h)`.

  .. math::
     \lambda = f_\infty + \frac{\|W_f\|_\infty}{4(1-f_\infty)}
       + \frac{\|W_i\|_\infty}{4} + \|W_z\|_\infty + \frac{\|W_o\|_\infty}{4}

  (:math:`\sigma' \le 1/4`, :math:`\tanh' \le 1`,
  :math:`\|c\|_\infty \le 1/(1-f_\infty)` on the reachable set).
  """
  f_inf = lstm_forget_gate_bound(params, input_bound)
  w_i, w_f, w_z, w_o = (_op_inf_norm(w) for w in _gate_blocks(params["recurrent_kernel"], 4))
  return (f_inf + w_f / (4 * (1 - f_inf)) + w_i / 4 + w_z + w_o / 4)


@_lipschitz_bound.register
def _(cell: GRU, params, input_bound=1.0):
  r"""A sufficient condition for the GRU, in the infinity norm (derived here).

  For two states :math:`h, h'` and one input (:math:`r, z, n` at :math:`h`),

  .. math::
     h_+ - h'_+ = (1-z)\odot(n-n') + z\odot(h-h') + (z-z')\odot(h'-n').

  On the reachable set :math:`|h'|, |n'| \le 1`, so :math:`|h'-n'| \le 2`;
  :math:`|z_j - z'_j| \le \|W_{z,j}\|_1 \Delta/4` and
  :math:`|n_j - n'_j| \le A_j \Delta` with
  :math:`A_j = \|W_{n,j}\|_1 + \|W_{r,j}\|_1 (\|W_{n,j}\|_1 + |b_{hn,j}|)/4`
  (rows :math:`j` of the operators acting on :math:`h`,
  :math:`\Delta = \|h-h'\|_\infty`). With :math:`z_j \le \bar z_j =
  \sigma(\|W_{z,j}\|_1 + B\|U_{z,j}\|_1 + b_{iz,j} + b_{hz,j})` and
  :math:`(1-z)A + z` monotone in :math:`z`:

  .. math::
     \lambda = \max_j \Big[\max\big(A_j,\ \bar z_j + (1-\bar z_j)A_j\big)
       + \|W_{z,j}\|_1/2\Big].
  """
  b = _check_input_bound(input_bound)
  w_r, w_z, w_n = _gate_blocks(params["recurrent_kernel"], 3)
  _, u_z, _ = _gate_blocks(params["input_kernel"], 3)
  _, bi_z, _ = _gate_blocks(params["input_bias"], 3)
  _, bh_z, bh_n = _gate_blocks(params["recurrent_bias"], 3)
  a = _col_l1(w_n) + _col_l1(w_r) * (_col_l1(w_n) + jnp.abs(bh_n)) / 4
  z_bar = jax.nn.sigmoid(_col_l1(w_z) + b * _col_l1(u_z) + bi_z + bh_z)
  rows = jnp.maximum(a, z_bar + (1 - z_bar) * a) + _col_l1(w_z) / 2
  return jnp.max(rows)


@_lipschitz_bound.register
def _(cell: LRU, params, input_bound=1.0):
  # Diagonal state matrix: the contraction factor is the largest |lambda|.
  del input_bound
  return jnp.max(jnp.exp(-jnp.exp(params["nu_log"])))


def lipschitz_bound(cell: Cell, params: Any, input_bound: float = 1.0) -> Array:
  """Certified upper bound on the contraction factor of ``cell``'s state map.

  Computed in float32 at least, from the parameters as stored: a bfloat16
  bound near 1 would round to steps of 2**-7 and hide an excess (and the
  spectral norm has no bfloat16 kernel).

  Args:
    cell: a seqbench cell.
    params: its parameters.
    input_bound: a bound on :math:`\\|x_t\\|_\\infty` (used by gated cells).

  Returns:
    A scalar array :math:`\\lambda` (float32 or wider); the cell is stable
    when it is < 1.
  """
  return _lipschitz_bound(cell, _widen(params), input_bound)


lipschitz_bound.register = _lipschitz_bound.register  # new cells register here


# ---------------------------------------------------------------------------
# Projections.


class LSTMBudget(NamedTuple):
  """Radii of the stable LSTM set; see :func:`lstm_budget`."""
  f_inf: float
  r_i: float
  r_f: float
  r_z: float
  r_o: float
  r_uf: float  # l1 radius of the forget gate's input rows (inf: unconstrained)
  b_f_max: float  # upper bound on the forget-gate bias


def lstm_budget(lam: float, input_bound: float = 1.0) -> LSTMBudget:
  r"""How a target :math:`\lambda` is split between the LSTM's terms.

  Split (at ``lam = 1``: forget gate 0.6, radii :math:`W_f` 0.16,
  :math:`W_i, W_o` 0.4, :math:`W_z` 0.1, :math:`U_f` 0.25 -- the authors'
  constants rounded, theirs being 0.155 / 0.395 / 0.099, see
  :data:`AUTHORS_LSTM_NORMS`):

  * :math:`f_\infty = 0.6\lambda`;
  * the other four terms share the rest equally, :math:`t = 0.1\lambda` each:
    :math:`\|W_f\|_\infty \le 4(1-f_\infty)t`, :math:`\|W_i\|_\infty \le 4t`,
    :math:`\|W_z\|_\infty \le t`, :math:`\|W_o\|_\infty \le 4t`;
  * the forget gate really stays below :math:`f_\infty`:
    :math:`\|U_f\|_\infty \le 0.25/B` and
    :math:`b_f \le \operatorname{logit}(f_\infty) - \|W_f\|_\infty - 0.25`.

  The terms then add up to exactly ``lam``.
  """
  lam = _check_lam(lam)
  b = _check_input_bound(input_bound)
  f_inf = 0.6 * lam
  if f_inf >= 1.0:
    raise ValueError(f"LSTM projection needs lam < 1/0.6, got lam={lam}")
  t = (lam - f_inf) / 4
  r_f = 4 * (1 - f_inf) * t
  if b > 0:
    r_uf, input_room = 0.25 / b, 0.25
  else:  # inputs are identically zero: U_f is irrelevant
    r_uf, input_room = math.inf, 0.0
  return LSTMBudget(f_inf=f_inf, r_i=4 * t, r_f=r_f, r_z=t, r_o=4 * t, r_uf=r_uf,
                    b_f_max=_logit(f_inf) - r_f - input_room)


class GRUBudget(NamedTuple):
  """Radii of the stable GRU set; see :func:`gru_budget`."""
  z_max: float
  r_z: float
  r_n: float
  r_r: float
  b_hn_max: float
  r_uz: float
  b_z_max: float  # upper bound on b_iz + b_hz


def gru_budget(lam: float, input_bound: float = 1.0) -> GRUBudget:
  r"""How a target :math:`\lambda \le 1` is split between the GRU's terms.

  With the bound of ``lipschitz_bound(GRU)``: the update gate stays below
  :math:`\bar z = \lambda/2`; :math:`\|W_z\|_\infty \le \lambda/4` (its term
  is :math:`\lambda/8`); the candidate's Lipschitz constant
  :math:`A \le a = (3\lambda/8)/(1-\bar z)`, split as
  :math:`\|W_n\|_\infty \le 0.8a`, :math:`|b_{hn}| \le 1` and
  :math:`\|W_r\|_\infty \le 0.8a/(0.8a + 1)` (so the reset-gate term is
  :math:`0.2a`); the update gate's inputs :math:`\|U_z\|_\infty \le 0.25/B`
  and :math:`b_{iz} + b_{hz} \le \operatorname{logit}(\bar z) - \lambda/4 -
  0.25`. Then :math:`\bar z + (1-\bar z)a + \lambda/8 = \lambda`.
  """
  lam = _check_lam(lam)
  b = _check_input_bound(input_bound)
  if lam > 1.0:
    raise ValueError(f"GRU projection needs lam <= 1, got lam={lam}")
  z_max = lam / 2
  r_z = lam / 4
  a = (3 * lam / 8) / (1 - z_max)
  r_n, b_hn_max = 0.8 * a, 1.0
  r_r = 0.8 * a / (r_n + b_hn_max)
  if b > 0:
    r_uz, input_room = 0.25 / b, 0.25
  else:
    r_uz, input_room = math.inf, 0.0
  return GRUBudget(z_max=z_max, r_z=r_z, r_n=r_n, r_r=r_r, b_hn_max=b_hn_max,
                   r_uz=r_uz, b_z_max=_logit(z_max) - r_z - input_room)


def _replace_block(w: Array, n: int, index: int, block: Array) -> Array:
  blocks = list(_gate_blocks(w, n))
  blocks[index] = block
  return jnp.concatenate(blocks, axis=-1)


def _cap(x: Array, upper: float) -> Array:
  return jnp.minimum(x, jnp.asarray(upper, x.dtype))


def _power_spectral_norm(w: Array, iters: int) -> Array:
  v = jnp.ones((w.shape[1],), w.dtype) / math.sqrt(w.shape[1])

  def body(_, v):
    v = w.T @ (w @ v)
    return v / jnp.linalg.norm(v)

  v = lax.fori_loop(0, iters, body, v)
  return jnp.linalg.norm(w @ v)


@functools.singledispatch
def _project(cell: Cell, params: Any, lam: float, input_bound: float = 1.0, **kwargs) -> Any:
  raise NotImplementedError(
      f"no stability projection is known for {type(cell).__name__}")


@_project.register
def _(cell: RNN, params, lam, input_bound=1.0, *, method: str = "gram",
      power_iters: int = 20):
  """Clip the singular values of the recurrent matrix to ``lam``.

  ``method="gram"`` (default) and ``method="svd"`` are the exact Euclidean
  projection onto :math:`\\{\\|W\\|_2 \\le \\lambda\\}`,
  :math:`W \\mapsto U \\min(\\Sigma, \\lambda) V^\\top`. ``"gram"`` gets
  :math:`V` and :math:`\\Sigma^2` from ``eigh`` of :math:`W^\\top W` and
  subtracts :math:`W V \\,\\mathrm{diag}(1 - \\min(1, \\lambda/\\sigma))\\, V^\\top`:
  the same matrix to float32 round-off (the clipped directions have
  :math:`\\sigma > \\lambda`, where squaring costs no accuracy), and on XLA:CPU
  about 10x faster than ``jnp.linalg.svd`` at H = 256 -- the projection runs
  after every update, so it set the stable RNN's training speed.
  ``method="polar"`` is the same projection without an eigensolver. With the
  polar decomposition :math:`W = U_p H` (:math:`H = V \\Sigma V^\\top`), and
  :math:`|A|` the positive factor of the polar decomposition of the symmetric
  :math:`A = H - \\lambda I`, :math:`\\min(H, \\lambda I) = (H + \\lambda I - |A|) / 2`,
  and the projection is :math:`U_p \\min(H, \\lambda I)`. Both polar decompositions are
  QDWH iterations (``jax.lax.linalg.qdwh``: QR, Cholesky and matmuls, batched
  under ``vmap``), which may suit a GPU better than one ``syevd`` per matrix;
  on XLA:CPU it measured ~4x slower than ``"gram"``. Accurate to float32
  round-off like ``"gram"`` (directions with :math:`\\sigma` within round-off of
  :math:`\\lambda` are clipped or not, either way within it).
  ``method="power"`` estimates
  :math:`\\sigma_{max}` by power iteration and rescales the whole matrix: much
  cheaper for large H, but not the Euclidean projection, and the estimate
  approaches :math:`\\sigma_{max}` from below (use enough ``power_iters``).
  """
  del input_bound
  lam = _check_lam(lam)
  w = params["recurrent_kernel"]
  if method == "gram":
    # On GPUs this eigh (cuSOLVER syevd, one matrix after the other in a vmapped
    # batch) is over half of the Wikitext-2 RNN group's step; the batched Jacobi
    # solver was measured 3.8x slower there and 2e-4 off (benchmarks/results/
    # nvidia-h200/lm_step_05d8e37), so JAX's default stays.
    e, v = jnp.linalg.eigh(w.T @ w)
    sigma = jnp.sqrt(jnp.maximum(e, 0))
    inside = jnp.max(sigma) <= lam * (1 + _INSIDE_SLACK)
    shrink = 1 - jnp.minimum(1, lam / jnp.maximum(sigma, jnp.finfo(w.dtype).tiny))
    new_w = jnp.where(inside, w, w - (w @ (v * shrink)) @ v.T)
  elif method == "svd":
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    inside = s[0] <= lam * (1 + _INSIDE_SLACK)
    clipped = (u * jnp.minimum(s, lam)) @ vt
    new_w = jnp.where(inside, w, clipped)
  elif method == "polar":
    u, h, _, _ = lax.linalg.qdwh(w)
    h = (h + h.T) / 2
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    _, dist, _, _ = lax.linalg.qdwh(h - lam * eye, is_hermitian=True)  # |H - lam I|
    dist = (dist + dist.T) / 2
    # Inside the set, H - lam I is negative semidefinite and |H - lam I| = lam I - H;
    # the Frobenius norm bounds the spectral one, so this never calls a point
    # outside by more than the slack "inside".
    excess = jnp.linalg.norm(dist + h - lam * eye)
    inside = excess <= 2 * lam * _INSIDE_SLACK
    new_w = jnp.where(inside, w, u @ ((h + lam * eye - dist) / 2))
  elif method == "power":
    sigma = _power_spectral_norm(w, power_iters)
    new_w = jnp.where(sigma <= lam * (1 + _INSIDE_SLACK), w, w * (lam / sigma))
  else:
    raise ValueError(
        f"RNN projection method must be 'gram', 'svd', 'polar' or 'power', got {method!r}")
  return {**params, "recurrent_kernel": new_w}


@_project.register
def _(cell: LSTM, params, lam, input_bound=1.0):
  """Row-wise l1-ball projections onto the set of :func:`lstm_budget`."""
  bud = lstm_budget(lam, input_bound)
  w = params["recurrent_kernel"]
  rec = project_l1_columns(w, _block_radii((bud.r_i, bud.r_f, bud.r_z, bud.r_o), w))
  inp = params["input_kernel"]
  if math.isfinite(bud.r_uf):
    u_f = _gate_blocks(inp, 4)[1]
    inp = _replace_block(inp, 4, 1, project_l1_columns(u_f, bud.r_uf))
  bias = params["bias"]
  bias = _replace_block(bias, 4, 1, _cap(_gate_blocks(bias, 4)[1], bud.b_f_max))
  return {**params, "recurrent_kernel": rec, "input_kernel": inp, "bias": bias}


#: ``scheme`` of :func:`project_tree`: ``"certified"`` is :func:`project` (the
#: Euclidean projection onto a set with certified bound ``lam``, every layer);
#: ``"authors"`` is :func:`authors_normalise` (what Miller & Hardt's code does).
PROJECTION_SCHEMES = ("certified", "authors")

#: Column l1 norms the authors' LSTM code rescales ``weight_hh_l0``'s gate
#: blocks to (i, f, z = g, o), and the forget gate's input block (paper.md §2).
AUTHORS_LSTM_NORMS = {"i": 0.395, "f": 0.155, "z": 0.099, "o": 0.395, "input_f": 0.25}


def _normalise_rows_l1(w: Array, norm: float) -> Array:
  """Rescale every row of ``w`` (in ``x @ W`` layout) to l1 norm exactly ``norm``."""
  sums = jnp.sum(jnp.abs(w), axis=1, keepdims=True)
  return w * (jnp.asarray(norm, w.dtype) / jnp.maximum(sums, jnp.finfo(w.dtype).tiny))


@functools.singledispatch
def authors_normalise(cell: Cell, params: Any) -> Any:
  """The "stable" update of Miller & Hardt's released code, for comparison.

  Not a projection onto a certified set (:func:`project` is that): the
  RNN's singular values are clipped at 1, as in :func:`project`; the LSTM's
  ``weight_hh_l0`` gate blocks have every *column* (PyTorch ``W h`` layout;
  a row of this package's ``x @ W`` kernel) rescaled to the l1 norms of
  :data:`AUTHORS_LSTM_NORMS` -- small columns are scaled *up* -- and the
  forget gate's input block to 0.25; biases are left alone. That bounds the
  induced 1-norm, not the infinity-norm the contraction condition needs, so
  the certified bound of the result is generally above 1 (paper.md §2: "flag
  it and implement both").
  """
  raise NotImplementedError(
      f"the authors' code has no stability update for {type(cell).__name__}")


@authors_normalise.register
def _(cell: RNN, params):
  return project(cell, params, 1.0)


@authors_normalise.register
def _(cell: LSTM, params):
  n = AUTHORS_LSTM_NORMS
  blocks = _gate_blocks(params["recurrent_kernel"], 4)
  rec = jnp.concatenate([_normalise_rows_l1(w, n[g]) for w, g in zip(blocks, "ifzo")], axis=-1)
  u_f = _normalise_rows_l1(_gate_blocks(params["input_kernel"], 4)[1], n["input_f"])
  inp = _replace_block(params["input_kernel"], 4, 1, u_f)
  return {**params, "recurrent_kernel": rec, "input_kernel": inp}


def _project_sum_cap(u: Array, v: Array, cap: float):
  """Euclidean projection of ``(u, v)`` onto ``{u + v <= cap}``, elementwise."""
  total = u + v
  tol = _INSIDE_SLACK * jnp.maximum(jnp.abs(u) + jnp.abs(v), 1)
  excess = jnp.where(total <= cap + tol, 0, (total - cap) / 2)
  return u - excess, v - excess


@_project.register
def _(cell: GRU, params, lam, input_bound=1.0):
  """Projections onto the set of :func:`gru_budget`."""
  bud = gru_budget(lam, input_bound)
  w = params["recurrent_kernel"]
  rec = project_l1_columns(w, _block_radii((bud.r_r, bud.r_z, bud.r_n), w))
  inp = params["input_kernel"]
  if math.isfinite(bud.r_uz):
    inp = _replace_block(inp, 3, 1, project_l1_columns(_gate_blocks(inp, 3)[1], bud.r_uz))
  bi, bh = params["input_bias"], params["recurrent_bias"]
  bi_z, bh_z = _project_sum_cap(_gate_blocks(bi, 3)[1], _gate_blocks(bh, 3)[1], bud.b_z_max)
  bh_n = jnp.clip(_gate_blocks(bh, 3)[2], -bud.b_hn_max, bud.b_hn_max)
  bi = _replace_block(bi, 3, 1, bi_z)
  bh = _replace_block(_replace_block(bh, 3, 1, bh_z), 3, 2, bh_n)
  return {**params, "recurrent_kernel": rec, "input_kernel": inp,
          "input_bias": bi, "recurrent_bias": bh}


@_project.register
def _(cell: LRU, params, lam, input_bound=1.0):
  r"""Bound :math:`|\lambda| = \exp(-\exp(\nu)) \le` ``lam`` by a box on ``nu_log``.

  The LRU is stable for any parameters; this only tightens the rate. For
  ``lam >= 1`` it is the identity.
  """
  del input_bound
  lam = _check_lam(lam)
  if lam >= 1.0:
    return params
  nu_min = math.log(-math.log(lam))
  nu_log = params["nu_log"]
  return {**params, "nu_log": jnp.maximum(nu_log, jnp.asarray(nu_min, nu_log.dtype))}


def project(cell: Cell, params: Any, lam: float, input_bound: float = 1.0, **kwargs) -> Any:
  """Project ``params`` onto a stable set whose certified bound is ``<= lam``.

  A projection: idempotent, and parameters already in the set come back
  unchanged. Non-recurrent entries of ``params`` are never touched.

  Parameters narrower than float32 (bfloat16) are projected in float32 and
  rounded back *in the direction the projection moved them* (entries it left
  alone come back bit for bit). Every constraint of the LSTM, GRU and LRU sets
  bounds magnitudes or sums from one side, so their rounded parameters stay
  inside and :func:`lipschitz_bound` still certifies ``lam`` (to float32
  round-off). A spectral-norm ball has no such direction: a bfloat16 RNN is
  the exact projection rounded, and its bound, computed on the stored
  values, may exceed ``lam`` by the rounding (a few 2**-8 relative).

  Args:
    cell: a seqbench cell.
    params: its parameters.
    lam: target contraction factor (the paper's RNN projection uses 1).
    input_bound: bound on :math:`\\|x\\|_\\infty` assumed by gated cells.
    **kwargs: options of one cell's projection (the RNN's ``method``).

  Returns:
    The projected parameters (same structure and dtypes).
  """
  wide = _widen(params)
  projected = _project(cell, wide, lam, input_bound, **kwargs)
  return jax.tree_util.tree_map(_round_after_move, projected, wide, params)


project.register = _project.register  # new cells register here


def _is_narrow(a) -> bool:
  return (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
          and jnp.finfo(a.dtype).bits < 32)


def _widen(tree):
  """Floating leaves narrower than float32 as float32; others untouched."""
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if _is_narrow(a) else a, tree)


def _round_after_move(new: Array, before: Array, like: Array) -> Array:
  """``new`` (a projection of ``before``) in ``like``'s dtype, rounded away from ``before``.

  Nearest rounding could undo part of the move and leave an entry just
  outside a one-sided constraint (|w| <= ..., b <= cap, nu >= nu_min); one
  step further in the direction of the move never does.
  """
  if not _is_narrow(like):
    return new
  out = new.astype(like.dtype)
  back = out.astype(new.dtype)
  down = (new < before) & (back > new)
  up = (new > before) & (back < new)
  out = jnp.where(down, jnp.nextafter(out, jnp.asarray(-jnp.inf, out.dtype)), out)
  out = jnp.where(up, jnp.nextafter(out, jnp.asarray(jnp.inf, out.dtype)), out)
  # Entries the projection left alone round-trip exactly.
  return jnp.where(new == before, like, out)


def _is_cell(x) -> bool:
  return x is None or isinstance(x, Cell)


def project_tree(cells: Any, params: Any, lam: float, input_bound: float = 1.0,
                 scheme: str = "certified") -> Any:
  """Project every recurrent layer of a model.

  Args:
    cells: a pytree *prefix* of ``params`` holding a cell where that cell's
      parameters sit and ``None`` elsewhere, e.g.
      ``{"embed": None, "layers": [lstm, lstm], "head": None}``.
    params: the model's parameters.
    lam: target contraction factor of every layer.
    input_bound: bound on the inputs of every layer (1 for stacked layers).
    scheme: one of :data:`PROJECTION_SCHEMES`; ``"authors"`` needs ``lam = 1``
      (their constants are fixed).

  Returns:
    ``params`` with each recurrent layer of ``cells`` projected (a model's
    tree lists all of its layers; the authors' code touched only the first,
    which a tree with ``None`` for the others expresses).
  """
  if scheme not in PROJECTION_SCHEMES:
    raise ValueError(f"projection scheme must be one of {PROJECTION_SCHEMES}, got {scheme!r}")
  if scheme == "authors":
    if lam != 1.0:
      raise ValueError(f"the authors' stability update has fixed constants (lam = 1), "
                       f"got lam={lam}")
    update = authors_normalise
  else:
    update = lambda cell, p: project(cell, p, lam, input_bound)

  cell_leaves, treedef = jax.tree_util.tree_flatten(cells, is_leaf=_is_cell)
  layers = treedef.flatten_up_to(params)
  # Layers with the same cell and parameter shapes are projected as one batch:
  # one batched eigh for all equal RNN layers instead of one per layer (on an
  # H100 each eigh call of the Wikitext-2 RNN group took ~1.65 ms however many
  # matrices it held; benchmarks/results/nvidia-h100, profile).
  groups: dict = {}
  for i, (cell, p) in enumerate(zip(cell_leaves, layers)):
    if cell is not None:
      leaves, structure = jax.tree_util.tree_flatten(p)
      shapes = tuple((a.shape, jnp.dtype(a.dtype)) for a in leaves)
      groups.setdefault((cell, structure, shapes), []).append(i)
  out = list(layers)
  for (cell, _, _), idx in groups.items():
    if len(idx) == 1:
      out[idx[0]] = update(cell, layers[idx[0]])
      continue
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[layers[i] for i in idx])
    projected = jax.vmap(lambda p, cell=cell: update(cell, p))(stacked)
    for j, i in enumerate(idx):
      out[i] = jax.tree_util.tree_map(lambda a, j=j: a[j], projected)
  return treedef.unflatten(out)


def project_updates(cells: Any, lam: float, input_bound: float = 1.0
                    ) -> optax.GradientTransformation:
  """Projected gradient descent as an optax transformation.

  Chain it last: ``optax.chain(optax.sgd(lr), project_updates(cells, lam))``.
  It rewrites the update so that ``optax.apply_updates(params, updates)``
  equals ``project_tree(cells, params + updates, lam)`` up to the rounding of
  ``params + (projected - params)`` (one step of the parameters' dtype, so
  a set's boundary can be crossed by that much; the trainer calls
  :func:`project_tree` on the parameters directly).

  Args:
    cells: see :func:`project_tree`.
    lam: target contraction factor.
    input_bound: see :func:`project_tree`.
  """
  _check_lam(lam)
  _check_input_bound(input_bound)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project_updates needs params: call update(updates, state, params)")
    stepped = optax.apply_updates(params, updates)
    projected = project_tree(cells, stepped, lam, input_bound)
    return jax.tree_util.tree_map(lambda new, old: new - old, projected, params), state

  return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Data-dependent contraction.


def _to_real(tree):
  """Complex leaves -> stacked (real, imag) so Jacobians are real matrices."""
  return jax.tree_util.tree_map(
      lambda a: jnp.stack([a.real, a.imag]) if jnp.iscomplexobj(a) else a, tree)


def _from_real(tree, like):
  return jax.tree_util.tree_map(
      lambda a, ref: lax.complex(a[0], a[1]) if jnp.iscomplexobj(ref) else a,
      tree, like)


def state_jacobian_norm(cell: Cell, params: Any, carry: Any, x: Array) -> Array:
  """Norm of :math:`\\partial \\phi(h, x)/\\partial h` at one (unbatched) point.

  The norm is the one induced by ``cell.state_norm`` on the flattened state
  (for the LSTM, the pair ``(c, h)``): ``"2"`` is the spectral norm, ``"inf"``
  the largest absolute row sum.
  """
  flat, unravel = jax.flatten_util.ravel_pytree(_to_real(carry))

  def f(v):
    new, _ = cell.step(params, _from_real(unravel(v), carry), x)
    return jax.flatten_util.ravel_pytree(_to_real(new))[0]

  # Norms in float32 at least (no bfloat16 spectral norm; a bfloat16 sum near 1
  # rounds to steps of 2**-7).
  jac = _widen(jax.jacfwd(f)(flat))
  if cell.state_norm == "2":
    return jnp.linalg.norm(jac, ord=2)
  return jnp.max(jnp.sum(jnp.abs(jac), axis=1))


def empirical_contraction(cell: Cell, params: Any, xs: Array, *,
                          initial_carry: Optional[Any] = None,
                          reduce: str = "max") -> Array:
  r"""Contraction measured along real trajectories (data-dependent stability).

  Runs the recurrence over ``xs`` and evaluates
  :math:`\|\partial h_t / \partial h_{t-1}\|` at every visited state, in the
  same norm as :func:`lipschitz_bound` (so ``empirical <= certified``).

  Args:
    cell: a seqbench cell.
    params: its parameters.
    xs: inputs ``(..., T, D)``.
    initial_carry: starting state (default zero).
    reduce: ``"max"`` (the data-dependent contraction factor), ``"mean"``, or
      ``"none"`` for the per-step norms with shape ``(..., T)``.
  """
  if reduce not in ("max", "mean", "none"):
    raise ValueError(f"reduce must be 'max', 'mean' or 'none', got {reduce!r}")
  if xs.ndim < 2:
    raise ValueError(f"empirical_contraction expects xs of shape (..., T, D), got {xs.shape}")
  batch_shape, (t_len, d) = xs.shape[:-2], xs.shape[-2:]
  flat_x = xs.reshape((-1, t_len, d))
  n = flat_x.shape[0]
  if initial_carry is None:
    carry0 = cell.initial_state((n,))
  else:
    carry0 = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[len(batch_shape):]),
                                    initial_carry)

  def body(c, x_t):
    new, _ = cell.step(params, c, x_t)
    return new, c  # emit the state *before* the step: the point of evaluation

  _, before = lax.scan(body, carry0, jnp.swapaxes(flat_x, 0, 1))  # leaves (T, n, ...)
  per_example = jax.vmap(functools.partial(state_jacobian_norm, cell, params))
  norms = lax.map(lambda args: per_example(*args), (before, jnp.swapaxes(flat_x, 0, 1)))
  norms = jnp.swapaxes(norms, 0, 1).reshape(batch_shape + (t_len,))  # (..., T)
  if reduce == "max":
    return jnp.max(norms)
  if reduce == "mean":
    return jnp.mean(norms)
  return norms


__all__ = [
    "lipschitz_bound", "project", "project_tree", "project_updates",
    "empirical_contraction", "state_jacobian_norm", "lstm_forget_gate_bound",
    "lstm_budget", "gru_budget", "LSTMBudget", "GRUBudget", "project_l1_columns",
    "authors_normalise", "AUTHORS_LSTM_NORMS", "PROJECTION_SCHEMES",
]
