"""Certified bounds hold, projections are projections, truncation gaps decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import seqbench as sb
from helpers import CELL_FACTORIES, python_loop

STABLE_CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru", "lru"]


def make(name, hidden=8, input_size=5, dtype=jnp.float32, seed=0, scale=1.0):
  cell = CELL_FACTORIES[name](hidden, dtype)
  params = cell.init(jax.random.PRNGKey(seed), input_size)
  if scale != 1.0 and name != "lru":
    params = jax.tree_util.tree_map(lambda a: a * scale, params)
  return cell, params


def bounded_inputs(shape, dtype=jnp.float32, seed=1, bound=1.0):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, dtype, -bound, bound)


def leaves_equal(a, b):
  return all(bool(jnp.array_equal(x, y)) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name", STABLE_CELLS)
@pytest.mark.parametrize("lam", [0.5, 0.9, 1.0])
def test_project_certifies_lam_and_is_idempotent(name, lam):
  cell, params = make(name, scale=3.0)
  projected = sb.stability.project(cell, params, lam)
  bound = float(sb.stability.lipschitz_bound(cell, projected))
  assert bound <= lam * (1 + 1e-5), (bound, lam)
  assert leaves_equal(sb.stability.project(cell, projected, lam), projected)
  # Input weights and biases it does not need are untouched.
  assert jax.tree_util.tree_structure(projected) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("name", STABLE_CELLS)
def test_project_leaves_stable_params_unchanged(name):
  cell, params = make(name, scale=3.0)
  inside = sb.stability.project(cell, params, 0.7)
  # A point of the 0.7-set is inside the larger 0.9-set too.
  assert leaves_equal(sb.stability.project(cell, inside, 0.9), inside)


@pytest.mark.parametrize("name", ["lstm", "gru", "lru"])
@pytest.mark.parametrize("lam", [0.8, 1.0])
def test_bfloat16_projection_stays_certified(name, lam):
  """bfloat16 params are projected in float32 and rounded the way the projection moved them.

  Nearest rounding left columns up to 0.7 % above their l1 radius (bound 1.0024 at
  lam = 1, H = 256), and a bound computed in bfloat16 rounded that to exactly 1.
  """
  if name == "lru" and lam == 1.0:
    lam = 0.6  # the LRU's set is everything at lam >= 1
  cell, params = make(name, hidden=256, input_size=64, dtype=jnp.bfloat16, scale=3.0)
  projected = sb.stability.project(cell, params, lam)
  assert all(a.dtype == b.dtype for a, b in zip(jax.tree_util.tree_leaves(projected),
                                                jax.tree_util.tree_leaves(params)))
  bound = sb.stability.lipschitz_bound(cell, projected)
  assert bound.dtype == jnp.float32
  # The bound of the stored values, computed exactly from float32 copies.
  wide = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), projected)
  exact = float(sb.stability.lipschitz_bound(cell, wide))
  assert float(bound) == exact and exact <= lam * (1 + 1e-5), exact
  assert leaves_equal(sb.stability.project(cell, projected, lam), projected)
  # Close to the float32 projection of the same values: one bfloat16 step or so.
  reference = sb.stability.project(cell, jax.tree_util.tree_map(
      lambda a: a.astype(jnp.float32), params), lam)
  for a, b in zip(jax.tree_util.tree_leaves(projected), jax.tree_util.tree_leaves(reference)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), rtol=2 ** -7, atol=1e-6)
  # Entries the projection does not move come back bit for bit.
  moved = 0
  for before, after, ref in zip(*(jax.tree_util.tree_leaves(t) for t in
                                  (params, projected, reference))):
    before, after = (np.asarray(a.astype(jnp.float32)) for a in (before, after))
    same = before == np.asarray(ref)
    assert np.array_equal(after[same], before[same])
    moved += int((~same).sum())
  assert moved > 0


def test_bfloat16_rnn_projection_bound_and_contraction_run_in_float32():
  cell, params = make("rnn_tanh", hidden=64, dtype=jnp.bfloat16, scale=3.0)
  projected = sb.stability.project(cell, params, 1.0)  # no bfloat16 eigh: used to raise
  assert projected["recurrent_kernel"].dtype == jnp.bfloat16
  bound = float(sb.stability.lipschitz_bound(cell, projected))
  sigma = np.linalg.norm(np.asarray(projected["recurrent_kernel"], np.float64), 2)
  assert bound == pytest.approx(sigma, rel=1e-5)
  # The exact clip, rounded to bfloat16: within a few of its steps of 1.
  assert abs(bound - 1.0) < 4 * 2 ** -8
  xs = bounded_inputs((2, 6, 5), jnp.bfloat16)
  measured = float(sb.stability.empirical_contraction(cell, projected, xs))
  assert 0 < measured <= bound * (1 + 2 ** -6)


def test_rnn_projection_is_euclidean_singular_value_clip():
  cell, params = make("rnn_tanh", scale=4.0)
  w = params["recurrent_kernel"]
  s_before = np.linalg.svd(np.asarray(w), compute_uv=False)
  w_new = sb.stability.project(cell, params, 0.8)["recurrent_kernel"]
  s_after = np.linalg.svd(np.asarray(w_new), compute_uv=False)
  np.testing.assert_allclose(s_after, np.minimum(s_before, 0.8), rtol=1e-5, atol=1e-6)
  # The nearest point: any other matrix with ||.||_2 <= 0.8 is no closer.
  other = w * (0.8 / s_before[0])
  assert np.linalg.norm(w - w_new) <= np.linalg.norm(w - other) + 1e-6


@pytest.mark.parametrize("method", ["gram", "polar"])
@pytest.mark.parametrize("hidden,scale", [(32, 4.0), (256, 3.0)])
def test_rnn_projection_methods_equal_the_svd_clip(hidden, scale, method):
  cell, params = make("rnn_tanh", hidden=hidden, scale=scale)
  out = sb.stability.project(cell, params, 0.9, method=method)["recurrent_kernel"]
  svd = sb.stability.project(cell, params, 0.9, method="svd")["recurrent_kernel"]
  assert float(jnp.max(jnp.abs(params["recurrent_kernel"] - svd))) > 1e-2  # it binds
  np.testing.assert_allclose(np.asarray(out), np.asarray(svd), atol=2e-5)
  assert np.linalg.norm(np.asarray(out), 2) <= 0.9 * (1 + 1e-5)
  # Idempotent, bit for bit, once inside.
  again = sb.stability.project(cell, {**params, "recurrent_kernel": out}, 0.9, method=method)
  np.testing.assert_array_equal(np.asarray(again["recurrent_kernel"]), np.asarray(out))


def test_rnn_polar_projection_after_a_small_step_and_under_vmap():
  # The training case: a projected matrix moved by one small update, so many
  # singular values sit just above lam; and a batch of layers projected at once.
  cell, params = make("rnn_tanh", hidden=64, scale=3.0)
  inside = sb.stability.project(cell, params, 1.0, method="svd")["recurrent_kernel"]
  steps = 1e-3 * jax.random.normal(jax.random.PRNGKey(7), (3,) + inside.shape)
  batch = {**params, "recurrent_kernel": inside[None] + steps}
  batch = jax.tree_util.tree_map(
      lambda a: a if a.ndim == 3 else jnp.broadcast_to(a, (3,) + a.shape), batch)
  project = lambda method: jax.vmap(
      lambda p: sb.stability.project(cell, p, 1.0, method=method))(batch)["recurrent_kernel"]
  np.testing.assert_allclose(np.asarray(project("polar")), np.asarray(project("svd")), atol=2e-5)


def test_rnn_power_iteration_option():
  cell, params = make("rnn_tanh", hidden=32, scale=4.0)
  out = sb.stability.project(cell, params, 0.9, method="power", power_iters=50)
  np.testing.assert_allclose(sb.stability.lipschitz_bound(cell, out), 0.9, rtol=1e-3)
  with pytest.raises(ValueError, match="gram.*svd.*power"):
    sb.stability.project(cell, params, 0.9, method="qr")


def test_l1_column_projection_matches_brute_force():
  # Euclidean projection onto the l1 ball is the unique minimiser; compare with
  # a dense search over the soft-threshold level.
  w = jax.random.normal(jax.random.PRNGKey(3), (7, 4))
  r = 1.5
  out = np.asarray(sb.stability.project_l1_columns(w, r))
  for j in range(4):
    v = np.asarray(w[:, j])
    thetas = np.linspace(0, np.abs(v).max(), 200001)
    norms = np.maximum(np.abs(v)[None] - thetas[:, None], 0).sum(1)
    theta = thetas[np.argmin(np.abs(norms - r))]
    ref = np.sign(v) * np.maximum(np.abs(v) - theta, 0)
    np.testing.assert_allclose(out[:, j], ref, atol=1e-4)
    np.testing.assert_allclose(np.abs(out[:, j]).sum(), r, rtol=1e-5)


def _sorted_l1_projection(w, r):
  """Duchi et al.'s sort-based l1-ball projection of each column, in float64.

  The reference ``benchmarks/gpu_checks.py`` also checks the device against.
  """
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "gpu_checks.py")
  spec = importlib.util.spec_from_file_location("gpu_checks", path)
  checks = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(checks)
  return checks.sorted_l1_projection(w, np.full(np.shape(w)[1], r))


@pytest.mark.parametrize("case", ["far_outside", "just_outside_sparse", "mixed", "ties"])
def test_l1_column_projection_equals_the_sort_based_projection(case):
  # The sort-free threshold search must give Duchi et al.'s projection. The
  # hard case is what projected training produces: columns that were on the
  # sphere, with many entries soft-thresholded to 0, nudged just outside by
  # one small update; there the threshold is tiny and float32 round-off once
  # made the fixed-point iteration cycle.
  rng = np.random.default_rng(0)
  n, cols, r = 256, 64, 0.4
  if case == "far_outside":
    w = rng.normal(0, 0.05, (n, cols))
  elif case == "just_outside_sparse":
    w = _sorted_l1_projection(rng.normal(0, 0.01, (n, cols)), r)
    # Round-off-sized nudges: unclamped, the Newton rounds cycled here (257 of 257).
    w = w + rng.normal(0, 1e-7, (n, cols))
  elif case == "mixed":
    w = rng.normal(0, 0.01, (n, cols)) * rng.uniform(0, 3, cols)  # some columns inside
  else:
    w = np.round(rng.normal(0, 0.02, (n, cols)), 3)  # many equal magnitudes
  w = w.astype(np.float32)
  outside = np.abs(w).sum(0) > r
  assert outside.any()
  out = np.asarray(jax.jit(sb.stability.project_l1_columns)(w, r))
  np.testing.assert_allclose(out, _sorted_l1_projection(w, r), atol=2e-6)
  norms = np.abs(out).sum(0)
  assert np.all(norms <= r * (1 + 1e-5))
  np.testing.assert_allclose(norms[outside], r, rtol=1e-4)
  np.testing.assert_array_equal(out[:, ~outside], w[:, ~outside])  # inside: untouched
  # Idempotent, bit for bit.
  np.testing.assert_array_equal(np.asarray(sb.stability.project_l1_columns(out, r)), out)
  # The threshold search ends in a few Newton rounds, not at its cap of n.
  mag = jnp.abs(jnp.asarray(w))
  _, rounds = sb.stability._l1_threshold(mag, jnp.float32(r), jnp.sum(mag, 0) > r * (1 + 1e-5))
  assert 1 <= int(rounds) <= 12
  # vmapped over a leading axis (a group of models) it is the same per model.
  both = np.asarray(jax.vmap(sb.stability.project_l1_columns, (0, None))(np.stack([w, 2 * w]), r))
  np.testing.assert_array_equal(both[0], out)


def test_l1_column_projection_with_one_radius_per_column():
  # How the LSTM/GRU projections call it: the fused gate kernel in one call.
  w = jax.random.normal(jax.random.PRNGKey(4), (32, 4 * 16)) * 0.2
  radii = (0.4, 0.16, 0.1, 0.4)
  fused = sb.stability.project_l1_columns(w, jnp.repeat(jnp.asarray(radii), 16))
  blocks = [sb.stability.project_l1_columns(b, r) for b, r in zip(jnp.split(w, 4, axis=-1), radii)]
  np.testing.assert_allclose(np.asarray(fused), np.asarray(jnp.concatenate(blocks, -1)),
                             atol=1e-7)


def test_l1_column_projection_at_radius_zero_is_zero():
  w = jnp.array([[1.0, -2.0], [3.0, 0.5], [0.0, 1.0]])
  np.testing.assert_array_equal(np.asarray(sb.stability.project_l1_columns(w, 0.0)), 0)


def test_lstm_projection_uses_operator_rows_not_pytorch_columns():
  # The operator acting on h is W.T for the x @ W layout: its induced inf-norm
  # is the largest column sum of W. After projection every column sum of each
  # recurrent gate block is within its radius, which a row normalisation (the
  # transposed convention) would not guarantee.
  cell, params = make("lstm", hidden=6, scale=5.0)
  out = sb.stability.project(cell, params, 1.0)
  bud = sb.stability.lstm_budget(1.0)
  blocks = jnp.split(out["recurrent_kernel"], 4, axis=-1)
  for block, r in zip(blocks, (bud.r_i, bud.r_f, bud.r_z, bud.r_o)):
    assert float(jnp.max(jnp.sum(jnp.abs(block), axis=0))) <= r * (1 + 1e-5)
  # The split reproduces the authors' constants at lam = 1.
  np.testing.assert_allclose([bud.f_inf, bud.r_f, bud.r_i, bud.r_z, bud.r_o, bud.r_uf],
                             [0.6, 0.16, 0.4, 0.1, 0.4, 0.25], rtol=1e-12)


def test_lstm_forget_gate_really_bounded():
  cell, params = make("lstm", scale=3.0)
  params = {**params, "bias": params["bias"].at[8:16].set(10.0)}  # the +10 init of the authors' JSB code
  out = sb.stability.project(cell, params, 0.9)
  f_inf = float(sb.stability.lstm_forget_gate_bound(out))
  assert f_inf <= 0.6 * 0.9 + 1e-6
  # Measure: the forget gate on many reachable states and bounded inputs.
  key = jax.random.PRNGKey(7)
  h = jax.random.uniform(key, (4000, 8), jnp.float32, -1, 1)
  x = bounded_inputs((4000, 5), seed=8)
  pre = x @ out["input_kernel"] + h @ out["recurrent_kernel"] + out["bias"]
  f = jax.nn.sigmoid(jnp.split(pre, 4, axis=-1)[1])
  assert float(jnp.max(f)) <= f_inf + 1e-6


def _reachable_pairs(cell, params, n, key, input_bound=1.0):
  """Random state pairs on the reachable set and bounded inputs."""
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  h = cell.hidden_size
  x = jax.random.uniform(k5, (n, params["input_kernel"].shape[0]), jnp.float32,
                         -input_bound, input_bound)
  if isinstance(cell, sb.cells.LSTM):
    c_max = 1.0 / (1.0 - float(sb.stability.lstm_forget_gate_bound(params, input_bound)))
    s1 = (jax.random.uniform(k1, (n, h), jnp.float32, -c_max, c_max),
          jax.random.uniform(k2, (n, h), jnp.float32, -1, 1))
    # Half the pairs are close (probing the Jacobian), half far apart.
    scale = jnp.where(jnp.arange(n)[:, None] < n // 2, 1e-3, 1.0)
    s2 = (jnp.clip(s1[0] + scale * jax.random.normal(k3, (n, h)), -c_max, c_max),
          jnp.clip(s1[1] + scale * jax.random.normal(k4, (n, h)), -1, 1))
    norm = lambda a, b: jnp.maximum(jnp.max(jnp.abs(a[0] - b[0]), -1),
                                    jnp.max(jnp.abs(a[1] - b[1]), -1))
  else:
    s1 = jax.random.uniform(k1, (n, h), jnp.float32, -1, 1)
    scale = jnp.where(jnp.arange(n)[:, None] < n // 2, 1e-3, 1.0)
    s2 = jnp.clip(s1 + scale * jax.random.normal(k3, (n, h)), -1, 1)
    norm = lambda a, b: jnp.max(jnp.abs(a - b), -1)
  return s1, s2, x, norm


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("scale,lam", [(1.0, None), (0.3, None), (3.0, 0.95), (3.0, 0.5)])
def test_gated_bound_is_upper_bound_on_measured_contraction(name, scale, lam):
  cell, params = make(name, scale=scale, seed=4)
  if lam is not None:
    params = sb.stability.project(cell, params, lam)
  bound = float(sb.stability.lipschitz_bound(cell, params))
  s1, s2, x, norm = _reachable_pairs(cell, params, 6000, jax.random.PRNGKey(11))
  n1, _ = cell.step(params, s1, x)
  n2, _ = cell.step(params, s2, x)
  ratio = norm(n1, n2) / jnp.maximum(norm(s1, s2), 1e-12)
  worst = float(jnp.max(ratio))
  assert worst <= bound * (1 + 1e-4), (worst, bound)
  # The Jacobian norm at reachable states obeys it too.
  jac = jax.vmap(lambda c, xx: sb.stability.state_jacobian_norm(cell, params, c, xx))(
      jax.tree_util.tree_map(lambda a: a[:200], s1), x[:200])
  assert float(jnp.max(jac)) <= bound * (1 + 1e-4)


def test_rnn_bound_is_upper_bound_on_measured_contraction():
  cell, params = make("rnn_tanh", scale=2.0)
  bound = float(sb.stability.lipschitz_bound(cell, params))
  s1, s2, x, _ = _reachable_pairs(cell, params, 4000, jax.random.PRNGKey(2))
  n1, _ = cell.step(params, s1, x)
  n2, _ = cell.step(params, s2, x)
  ratio = jnp.linalg.norm(n1 - n2, axis=-1) / jnp.linalg.norm(s1 - s2, axis=-1)
  assert float(jnp.max(ratio)) <= bound * (1 + 1e-5)


@pytest.mark.parametrize("name", STABLE_CELLS)
def test_empirical_contraction_below_certified_bound(name):
  cell, params = make(name, scale=2.0)
  params = sb.stability.project(cell, params, 0.9)
  xs = bounded_inputs((3, 25, 5))
  emp = sb.stability.empirical_contraction(cell, params, xs)
  per_step = sb.stability.empirical_contraction(cell, params, xs, reduce="none")
  assert per_step.shape == (3, 25)
  np.testing.assert_allclose(jnp.max(per_step), emp)
  assert 0 < float(emp) <= float(sb.stability.lipschitz_bound(cell, params)) * (1 + 1e-5)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_empirical_contraction_is_the_jacobian_at_each_visited_state(name):
  # Reference: a plain loop over time, the Jacobian of one step with respect to
  # the state *before* it, in the cell's norm (spectral for the RNN, whose
  # Jacobian is diag(1 - h_t^2) W^T in closed form; max row sum otherwise).
  cell, params = make(name, scale=2.0)
  xs = bounded_inputs((2, 9, 5))
  got = sb.stability.empirical_contraction(cell, params, xs, reduce="none")
  expected = np.zeros((2, 9))
  for b in range(2):
    carry = cell.initial_state(())
    for t in range(9):
      x = xs[b, t]
      new, _ = cell.step(params, carry, x)
      if name == "rnn_tanh":
        jac = (1 - np.asarray(new, np.float64) ** 2)[:, None] * np.asarray(
            params["recurrent_kernel"], np.float64).T
        expected[b, t] = np.linalg.norm(jac, 2)
      else:
        flat, unravel = jax.flatten_util.ravel_pytree(carry)
        jac = np.asarray(jax.jacfwd(lambda v: jax.flatten_util.ravel_pytree(
            cell.step(params, unravel(v), x)[0])[0])(flat), np.float64)
        expected[b, t] = np.max(np.sum(np.abs(jac), axis=1))
      carry = new
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_gru_bound_is_attained_where_its_derivation_says():
  # One unit, update gate z = sigmoid(2h - 2), candidate n = tanh(-20) ~ -1:
  # at h = 1, dh+/dh = z'(h - n) + z = 0.5 * 2 + 0.5 = 1.5, and the bound's
  # row term max(A, zbar + (1 - zbar) A) + |W_z| / 2 = 0.5 + 1 is exactly that.
  # A bound that dropped a term would fall below the measured Jacobian here.
  cell = sb.cells.GRU(1)
  params = cell.init(jax.random.PRNGKey(0), 1)
  params = {"input_kernel": jnp.zeros((1, 3)),
            "recurrent_kernel": jnp.array([[0.0, 2.0, 0.0]]),
            "input_bias": jnp.array([0.0, -2.0, -20.0]),
            "recurrent_bias": jnp.zeros(3)}
  bound = float(sb.stability.lipschitz_bound(cell, params, input_bound=1.0))
  jac = float(sb.stability.state_jacobian_norm(cell, params, jnp.ones(1), jnp.zeros(1)))
  np.testing.assert_allclose(jac, 1.5, rtol=1e-5)
  assert jac <= bound * (1 + 1e-6) and bound <= 1.5 * (1 + 1e-5)


def test_empirical_contraction_of_lru_is_its_largest_eigenvalue():
  cell, params = make("lru")
  emp = sb.stability.empirical_contraction(cell, params, bounded_inputs((2, 6, 5)))
  np.testing.assert_allclose(emp, jnp.max(jnp.abs(cell.eigenvalues(params))), rtol=1e-5)
  np.testing.assert_allclose(emp, sb.stability.lipschitz_bound(cell, params), rtol=1e-5)


def test_empirical_contraction_of_unstable_rnn_exceeds_one_on_data():
  # Large recurrent weights with small inputs: states stay near 0 where
  # tanh' ~ 1, so the data-dependent factor exceeds 1 as the bound says.
  cell, params = make("rnn_tanh", scale=4.0)
  emp = sb.stability.empirical_contraction(cell, params, 1e-3 * bounded_inputs((1, 3, 5)))
  assert float(emp) > 1.0


@pytest.mark.parametrize("name", STABLE_CELLS)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_truncation_gap_within_lam_power_k(name, k):
  # For a lam-contraction, ||h_t - h^k_t|| <= lam^k ||h_{t-k}|| (both runs see
  # the same last k inputs; one starts from h_{t-k}, the other from 0).
  with jax.enable_x64(True):
    cell, params = make(name, dtype=jnp.float64, scale=3.0)
    params = sb.stability.project(cell, params, 0.8)
    lam = float(sb.stability.lipschitz_bound(cell, params))
    assert lam <= 0.8 + 1e-9
    xs = bounded_inputs((4, 20, 5), jnp.float64)
    full, carries = python_loop(cell, params, xs)
    trunc = sb.unroll.truncated(cell, params, xs, k, chunk_size=7)
    for t in range(k, 20):
      state = carries[t - k]
      if isinstance(cell, sb.cells.LSTM):
        state_norm = jnp.maximum(jnp.max(jnp.abs(state[0]), -1), jnp.max(jnp.abs(state[1]), -1))
        gap = jnp.max(jnp.abs(full[:, t] - trunc[:, t]), -1)
      elif cell.state_norm == "inf":
        state_norm = jnp.max(jnp.abs(state), -1)
        gap = jnp.max(jnp.abs(full[:, t] - trunc[:, t]), -1)
      else:
        state_norm = jnp.linalg.norm(state, axis=-1)
        if isinstance(cell, sb.cells.LRU):
          # y = Re(C h) + D x: the readout multiplies the state gap by ||C||_2.
          c_op = jnp.linalg.norm(jax.lax.complex(params["C_re"], params["C_im"]), ord=2)
          state_norm = state_norm * c_op
        gap = jnp.linalg.norm(full[:, t] - trunc[:, t], axis=-1)
      assert bool(jnp.all(gap <= lam**k * state_norm * (1 + 1e-9) + 1e-12)), (t, gap, state_norm)


def test_unstable_models_gap_does_not_decay_like_lam_power_k():
  # Without projection the geometric bound is not implied; check the test above
  # is not vacuous: an expanding RNN has a large gap at every k tried.
  with jax.enable_x64(True):
    cell, params = make("rnn_tanh", dtype=jnp.float64, scale=6.0)
    xs = 0.1 * bounded_inputs((2, 30, 5), jnp.float64)
    full, carries = python_loop(cell, params, xs)
    for k in (1, 3, 6):  # the k of the test above
      gap = jnp.max(jnp.abs(full[:, -1] - sb.unroll.truncated(cell, params, xs, k)[:, -1]), -1)
      state_norm = jnp.max(jnp.abs(carries[30 - 1 - k]), -1)
      # The bound the projected models obey, at lam = 0.8, fails here at every k.
      assert bool(jnp.all(gap > 0.8**k * state_norm)), (k, gap, state_norm)


def test_project_updates_equals_projecting_after_each_step():
  lstm = sb.cells.LSTM(6)
  rnn = sb.cells.RNN(6)
  params = {"layers": [lstm.init(jax.random.PRNGKey(0), 3), rnn.init(jax.random.PRNGKey(1), 6)],
            "head": jnp.ones((6, 2))}
  cells = {"layers": [lstm, rnn], "head": None}
  grads = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.5), params)
  opt = optax.chain(optax.sgd(1.0), sb.stability.project_updates(cells, 0.9))
  state = opt.init(params)
  updates, _ = opt.update(grads, state, params)
  stepped = optax.apply_updates(params, updates)
  expected = sb.stability.project_tree(
      cells, jax.tree_util.tree_map(lambda p, g: p - g, params, grads), 0.9)
  for a, b in zip(jax.tree_util.tree_leaves(stepped), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  # Every layer is projected, not only the first; the head is untouched.
  assert float(sb.stability.lipschitz_bound(lstm, stepped["layers"][0])) <= 0.9 + 1e-5
  assert float(sb.stability.lipschitz_bound(rnn, stepped["layers"][1])) <= 0.9 + 1e-5
  np.testing.assert_allclose(stepped["head"], params["head"] - 0.5)
  with pytest.raises(ValueError, match="params"):
    opt.update(grads, state)


@pytest.mark.parametrize("scheme", ["certified", "authors"])
def test_equal_layers_projected_together_equal_each_alone(scheme):
  # project_tree stacks layers with equal cells and shapes into one batched
  # call; that must change nothing. Three RNN layers (two of one shape), two
  # LSTMs and an unprojected head.
  rnn, rnn_wide, lstm = sb.cells.RNN(6), sb.cells.RNN(9), sb.cells.LSTM(5)
  keys = jax.random.split(jax.random.PRNGKey(4), 5)
  scale = lambda t: jax.tree_util.tree_map(lambda a: 3.0 * a, t)  # well outside the ball
  layers = [scale(rnn.init(keys[0], 4)), scale(rnn.init(keys[1], 4)),
            scale(rnn_wide.init(keys[2], 4)), scale(lstm.init(keys[3], 6)),
            scale(lstm.init(keys[4], 6))]
  cells = {"layers": [rnn, rnn, rnn_wide, lstm, lstm], "head": None}
  params = {"layers": layers, "head": jnp.ones((6, 2))}
  lam = 1.0 if scheme == "authors" else 0.8
  together = sb.stability.project_tree(cells, params, lam, scheme=scheme)
  for cell, p, got in zip(cells["layers"], layers, together["layers"]):
    alone = sb.stability.project_tree({"l": cell}, {"l": p}, lam, scheme=scheme)["l"]
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           got, alone)
    assert not all(jnp.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(got),
                                                          jax.tree_util.tree_leaves(p)))
  np.testing.assert_array_equal(together["head"], params["head"])


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_lam_is_a_clear_error(lam):
  cell, params = make("rnn_tanh")
  with pytest.raises(ValueError, match="lam"):
    sb.stability.project(cell, params, lam)


def test_gru_lam_above_one_and_bad_input_bound():
  cell, params = make("gru")
  with pytest.raises(ValueError, match="lam <= 1"):
    sb.stability.project(cell, params, 1.2)
  with pytest.raises(ValueError, match="input_bound"):
    sb.stability.lipschitz_bound(sb.cells.LSTM(8), make("lstm")[1], input_bound=-1)


def test_unknown_cell_has_no_silent_bound():
  class Custom:
    hidden_size = 3
  with pytest.raises(NotImplementedError, match="Custom"):
    sb.stability.lipschitz_bound(Custom(), {})
  with pytest.raises(NotImplementedError, match="Custom"):
    sb.stability.project(Custom(), {}, 0.9)


def test_authors_lstm_update_matches_their_pytorch_layout_formula():
  """``w * c / sum(|w|, dim=0)`` on each gate block of ``weight_hh_l0`` (out x in) and on U_f."""
  cell = sb.LSTM(6)
  params = cell.init(jax.random.PRNGKey(3), 4)
  got = sb.stability.authors_normalise(cell, params)
  weight_hh = np.asarray(params["recurrent_kernel"]).T  # PyTorch layout: (4H, H), acts as W h
  weight_ih = np.asarray(params["input_kernel"]).T
  norms = sb.stability.AUTHORS_LSTM_NORMS
  want_hh = weight_hh.copy()
  for g, gate in enumerate("ifzo"):
    w = weight_hh[g * 6:(g + 1) * 6]
    want_hh[g * 6:(g + 1) * 6] = w * norms[gate] / np.abs(w).sum(axis=0)
  want_ih = weight_ih.copy()
  w = weight_ih[6:12]
  want_ih[6:12] = w * norms["input_f"] / np.abs(w).sum(axis=0)
  np.testing.assert_allclose(np.asarray(got["recurrent_kernel"]).T, want_hh, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got["input_kernel"]).T, want_ih, rtol=1e-6)
  np.testing.assert_array_equal(got["bias"], params["bias"])  # biases are left free
  # Not a projection onto the certified set: small columns are scaled up, and
  # what it bounds is the 1-norm, so the certified (infinity-norm) bound is not 1.
  assert float(sb.stability.lipschitz_bound(cell, got)) > 1.0


def test_authors_update_of_rnn_is_the_clip_and_gru_has_none():
  cell = sb.RNN(5)
  params = cell.init(jax.random.PRNGKey(0), 3)
  params = {**params, "recurrent_kernel": params["recurrent_kernel"] * 4}
  got = sb.stability.authors_normalise(cell, params)
  assert float(jnp.linalg.norm(got["recurrent_kernel"], 2)) <= 1 + 1e-5
  with pytest.raises(NotImplementedError, match="no stability update for GRU"):
    sb.stability.authors_normalise(sb.GRU(3), sb.GRU(3).init(jax.random.PRNGKey(0), 2))
  tree = {"layers": [cell, None]}
  with pytest.raises(ValueError, match="fixed constants"):
    sb.stability.project_tree(tree, {"layers": [params, params]}, 0.9, scheme="authors")
  both = sb.stability.project_tree(tree, {"layers": [params, params]}, 1.0, scheme="authors")
  np.testing.assert_array_equal(both["layers"][0]["recurrent_kernel"], got["recurrent_kernel"])
  np.testing.assert_array_equal(both["layers"][1]["recurrent_kernel"],
                                params["recurrent_kernel"])
