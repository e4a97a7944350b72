"""Executors vs plain Python loops, truncation semantics, gradients, errors."""

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax.test_util import check_grads

import seqbench as sb
from helpers import CELL_FACTORIES, python_loop, python_truncated

CELLS = sorted(CELL_FACTORIES)


def make(name, hidden=6, input_size=4, dtype=jnp.float32, seed=0):
  cell = CELL_FACTORIES[name](hidden, dtype)
  params = cell.init(jax.random.PRNGKey(seed), input_size)
  return cell, params


def inputs(shape, dtype=jnp.float32, seed=1):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, dtype, -1.0, 1.0)


@pytest.mark.parametrize("name", CELLS)
def test_scan_matches_python_loop(name):
  cell, params = make(name)
  xs = inputs((3, 11, 4))
  ref, carries = python_loop(cell, params, xs)
  ys, final = sb.unroll.scan(cell, params, xs, return_carry=True)
  np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(final, carries[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_scan_initial_carry_continues_the_sequence(name):
  # Truncated BPTT: two halves with the carry passed on == the whole sequence.
  cell, params = make(name)
  xs = inputs((2, 10, 4))
  whole = sb.unroll.scan(cell, params, xs)
  first, carry = sb.unroll.scan(cell, params, xs[:, :6], return_carry=True)
  second = sb.unroll.scan(cell, params, xs[:, 6:], initial_carry=carry)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_scan_hoisted_and_in_loop_input_map_agree(name):
  cell, params = make(name)
  xs = inputs((2, 9, 4))
  np.testing.assert_allclose(sb.unroll.scan(cell, params, xs, hoist=True),
                             sb.unroll.scan(cell, params, xs, hoist=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll", [2, 5, 8])
def test_scan_unroll_same_numbers(unroll):
  # 8 is the accelerator default; the CPU default is 1 (compared here).
  assert sb.unroll.default_scan_unroll() == 1
  cell, params = make("lstm")
  xs = inputs((2, 9, 4))
  np.testing.assert_allclose(sb.unroll.scan(cell, params, xs, unroll=unroll),
                             sb.unroll.scan(cell, params, xs), rtol=1e-6, atol=1e-6)


def test_scan_default_unroll_follows_the_backend(monkeypatch):
  monkeypatch.setattr(sb.unroll.jax, "default_backend", lambda: "gpu")
  assert sb.unroll.default_scan_unroll() == sb.unroll.ACCELERATOR_SCAN_UNROLL == 8
  monkeypatch.setattr(sb.unroll.jax, "default_backend", lambda: "cpu")
  assert sb.unroll.default_scan_unroll() == 1


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("inner", sb.unroll.INNER_LOOPS)
@pytest.mark.parametrize("k,chunk", [(1, None), (3, None), (3, 4), (5, 1), (12, 5), (13, None)])
def test_truncated_matches_python_restart_loop(name, k, chunk, inner):
  cell, params = make(name)
  xs = inputs((2, 13, 4))
  ref = python_truncated(cell, params, xs, k)
  ys = sb.unroll.truncated(cell, params, xs, k, chunk_size=chunk, inner=inner)
  np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("k,chunk", [(2, None), (3, None), (5, 4)])  # k = 1 has no inner loop
def test_truncated_inner_loops_give_the_same_gradients(name, k, chunk):
  # The inner loop changes only how the k steps are laid out (and so how the
  # shifted inputs' gradient is formed: padded slices or one scatter-add).
  cell, params = make(name)
  xs = inputs((2, 11, 4))

  def grads(inner):
    loss = lambda p, x: jnp.sum(jnp.sin(sb.unroll.truncated(
        cell, p, x, k, chunk_size=chunk, inner=inner)))
    return jax.grad(loss, argnums=(0, 1))(params, xs)

  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         grads("scan"), grads("unrolled"))


@pytest.mark.parametrize("backend", ["gpu", "cpu"])
def test_truncated_auto_unrolls_short_windows_on_accelerators(backend, monkeypatch):
  # Read off the lowered program: the unrolled form has no loop and no gather.
  cell, params = make("gru")
  xs = inputs((1, 40, 4))
  text = lambda k, inner="auto": jax.jit(lambda p, x: sb.unroll.truncated(
      cell, p, x, k, chunk_size=64, inner=inner)).lower(params, xs).as_text()
  unrolled = text(4, "unrolled")
  assert "stablehlo.while" not in unrolled and "gather" not in unrolled
  monkeypatch.setattr(sb.unroll.jax, "default_backend", lambda: backend)
  assert (text(4) == unrolled) == (backend == "gpu")
  long_ = text(sb.unroll.UNROLLED_MAX_K + 1)
  assert "stablehlo.while" in long_ and "gather" in long_


def test_truncated_rejects_unknown_inner_loop():
  cell, params = make("lstm")
  with pytest.raises(ValueError, match="inner must be one of"):
    sb.unroll.truncated(cell, params, inputs((1, 5, 4)), 2, inner="gather")


@pytest.mark.parametrize("name", CELLS)
def test_truncated_k_at_least_T_is_scan(name):
  cell, params = make(name)
  xs = inputs((2, 7, 4))
  full = sb.unroll.scan(cell, params, xs)
  for k in (7, 8, 100):
    np.testing.assert_array_equal(sb.unroll.truncated(cell, params, xs, k), full)
  # The windowed path (k = T - 1) agrees with the scan where windows are whole.
  np.testing.assert_allclose(sb.unroll.truncated(cell, params, xs, 6)[:, :6], full[:, :6],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_truncated_k1_is_one_step_from_zero(name):
  cell, params = make(name)
  xs = inputs((3, 8, 4))
  _, y = cell.step(params, cell.initial_state((3, 8)), xs)  # every t at once
  np.testing.assert_allclose(sb.unroll.truncated(cell, params, xs, 1), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_truncated_window_is_exactly_k_inputs(name):
  cell, params = make(name)
  k, t, n = 4, 9, 12
  xs = inputs((1, n, 4))
  base = sb.unroll.truncated(cell, params, xs, k, chunk_size=5)
  older = xs.at[0, t - k].add(0.5)  # just outside the window of y_t
  oldest_inside = xs.at[0, t - k + 1].add(0.5)
  y_older = sb.unroll.truncated(cell, params, older, k, chunk_size=5)
  y_inside = sb.unroll.truncated(cell, params, oldest_inside, k, chunk_size=5)
  np.testing.assert_array_equal(y_older[0, t], base[0, t])
  assert float(jnp.max(jnp.abs(y_inside[0, t] - base[0, t]))) > 1e-6
  # Outputs before the perturbed time never move (causality).
  np.testing.assert_array_equal(y_inside[0, :t - k + 1], base[0, :t - k + 1])


def test_truncated_chunking_does_not_change_numbers():
  cell, params = make("gru")
  xs = inputs((2, 3, 17, 4))  # two leading batch dims
  ref = sb.unroll.truncated(cell, params, xs, 5, chunk_size=17)
  for chunk in (1, 2, 4, 16):
    np.testing.assert_allclose(sb.unroll.truncated(cell, params, xs, 5, chunk_size=chunk), ref,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", None, True])
def test_truncated_rejects_bad_k(bad):
  cell, params = make("rnn_tanh")
  with pytest.raises(ValueError, match="k="):
    sb.unroll.truncated(cell, params, inputs((1, 5, 4)), bad)


def test_truncated_accepts_numpy_integer_k():
  cell, params = make("rnn_tanh")
  xs = inputs((1, 5, 4))
  np.testing.assert_array_equal(sb.unroll.truncated(cell, params, xs, np.int64(2)),
                                sb.unroll.truncated(cell, params, xs, 2))


def test_truncated_memory_is_bounded_for_long_sequences():
  # B=8, T=4096, k=64, H=256 (issue 2): the gradient of the truncated LSTM must
  # compile to a program whose working memory is a few GiB, not the ~40 GiB a
  # (B, T, k, 4H) window tensor and its residuals would need.
  cell = sb.cells.LSTM(256)
  params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), 256))
  xs = jax.ShapeDtypeStruct((8, 4096, 256), jnp.float32)

  def loss(p, x):
    return jnp.mean(sb.unroll.truncated(cell, p, x, 64) ** 2)

  compiled = jax.jit(jax.grad(loss)).lower(params, xs).compile()
  mem = compiled.memory_analysis()
  total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  assert total < 4 * 2**30, f"truncated grad needs {total / 2**30:.2f} GiB"


def test_parallel_matches_scan_and_loop():
  cell, params = make("lru", hidden=5)
  xs = inputs((3, 33, 4))
  ref, carries = python_loop(cell, params, xs)
  ys, final = sb.unroll.parallel(cell, params, xs, return_carry=True)
  np.testing.assert_allclose(ys, ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ys, sb.unroll.scan(cell, params, xs), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(final, carries[-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("merged", [True, False], ids=["one-input-matmul", "three"])
def test_lru_step_is_its_complex_definition(merged, monkeypatch):
  # The cell computes with real matmuls on stacked weights; check it against
  # h_t = lambda*h_{t-1} + gamma*(B^T x_t), y_t = Re(C^T h_t) + D^T x_t in
  # complex128 numpy, so a sign or stacking slip cannot hide behind executors
  # that all share the cell's own step. Both input forms (accelerators stack
  # the input weights, XLA:CPU does not) are checked here on the CPU.
  monkeypatch.setattr(sb.cells, "merged_input_matmul", lambda: merged)
  cell, params = make("lru", hidden=5)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
  gamma = np.exp(p["gamma_log"])
  b, c = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]
  xs = inputs((2, 7, 4))
  h = np.zeros((2, cell.n_state), np.complex128)
  expected = []
  for t in range(xs.shape[1]):
    x = np.asarray(xs[:, t], np.float64)
    h = lam * h + gamma * (x @ b)
    expected.append((h @ c).real + x @ p["D"])
  expected = np.stack(expected, axis=1)
  for executor in (sb.unroll.scan, sb.unroll.parallel):
    np.testing.assert_allclose(executor(cell, params, xs), expected, rtol=1e-4, atol=1e-5)


def test_gru_step_is_its_definition():
  # PyTorch's GRU equations in float64 numpy, with every bias nonzero -- the
  # reset gate multiplies the recurrent candidate *with* its bias b_hn -- so a
  # slip inside the cell cannot hide behind executors that share its step.
  cell, params = make("gru", hidden=5)
  key = jax.random.PRNGKey(7)
  params = {k: v + 0.3 * jax.random.normal(jax.random.fold_in(key, i), v.shape)
            for i, (k, v) in enumerate(sorted(params.items()))}
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  sig = lambda a: 1 / (1 + np.exp(-a))
  u_r, u_z, u_n = np.split(p["input_kernel"], 3, axis=1)
  w_r, w_z, w_n = np.split(p["recurrent_kernel"], 3, axis=1)
  bi_r, bi_z, bi_n = np.split(p["input_bias"], 3)
  bh_r, bh_z, bh_n = np.split(p["recurrent_bias"], 3)
  xs = inputs((2, 7, 4))
  h = np.zeros((2, 5))
  expected = []
  for t in range(xs.shape[1]):
    x = np.asarray(xs[:, t], np.float64)
    r = sig(x @ u_r + bi_r + h @ w_r + bh_r)
    z = sig(x @ u_z + bi_z + h @ w_z + bh_z)
    n = np.tanh(x @ u_n + bi_n + r * (h @ w_n + bh_n))
    h = (1 - z) * n + z * h
    expected.append(h)
  np.testing.assert_allclose(sb.unroll.scan(cell, params, xs), np.stack(expected, 1),
                             rtol=1e-5, atol=1e-6)


def test_parallel_initial_carry():
  cell, params = make("lru", hidden=5)
  xs = inputs((2, 12, 4))
  whole = sb.unroll.parallel(cell, params, xs)
  first, carry = sb.unroll.parallel(cell, params, xs[:, :5], return_carry=True)
  second = sb.unroll.parallel(cell, params, xs[:, 5:], initial_carry=carry)
  np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-4, atol=1e-5)


def test_parallel_of_an_empty_sequence_returns_the_starting_carry():
  cell, params = make("lru", hidden=5)
  xs = inputs((2, 0, 4))
  _, scan_carry = sb.unroll.scan(cell, params, xs, return_carry=True)
  ys, carry = sb.unroll.parallel(cell, params, xs, return_carry=True)
  assert ys.shape[-2] == 0
  chex.assert_trees_all_close(carry, scan_carry)
  h0 = jnp.full(scan_carry.shape, 0.5 + 0.5j, scan_carry.dtype)
  _, carry = sb.unroll.parallel(cell, params, xs, initial_carry=h0, return_carry=True)
  chex.assert_trees_all_close(carry, h0)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_a_float32_input_runs_in_a_bf16_cell_s_dtype(name):
  # The cell casts its input, so every executor keeps the carry's dtype
  # (a promoted step output used to break lax.scan's carry check).
  cell, params = make(name, dtype=jnp.bfloat16)
  xs = inputs((2, 6, 4))
  ref = sb.unroll.scan(cell, params, xs.astype(jnp.bfloat16))
  for run in (lambda: sb.unroll.scan(cell, params, xs),
              lambda: sb.unroll.truncated(cell, params, xs, 3),
              lambda: sb.unroll.truncated(cell, params, xs, 1)):
    ys = run()
    assert ys.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(sb.unroll.scan(cell, params, xs), np.float32),
                                np.asarray(ref, np.float32))


def test_truncated_chunk_size_takes_numpy_integers_and_rejects_the_rest():
  cell, params = make("lstm")
  xs = inputs((2, 9, 4))
  np.testing.assert_allclose(sb.unroll.truncated(cell, params, xs, 3, chunk_size=np.int64(4)),
                             sb.unroll.truncated(cell, params, xs, 3, chunk_size=4), rtol=1e-6)
  for bad in (0, 2.5, True, "4"):
    with pytest.raises(ValueError, match=f"chunk_size must be a positive integer, got {bad!r}"):
      sb.unroll.truncated(cell, params, xs, 3, chunk_size=bad)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_parallel_rejects_nonlinear_cells(name):
  cell, params = make(name)
  with pytest.raises(ValueError, match="nonlinear.*scan"):
    sb.unroll.parallel(cell, params, inputs((1, 5, 4)))


EXECUTORS = {
    "scan": lambda c, p, x: sb.unroll.scan(c, p, x),
    "scan_unroll3": lambda c, p, x: sb.unroll.scan(c, p, x, unroll=3),
    "scan_hoisted": lambda c, p, x: sb.unroll.scan(c, p, x, hoist=True),
    "truncated": lambda c, p, x: sb.unroll.truncated(c, p, x, 3, chunk_size=2),
    "parallel": lambda c, p, x: sb.unroll.parallel(c, p, x),
}


# parallel is defined for linear cells only (its error for the others is tested above).
@pytest.mark.parametrize("executor,name", [(e, n) for e in sorted(EXECUTORS) for n in CELLS
                                           if e != "parallel" or n == "lru"])
def test_gradients_match_finite_differences(name, executor):
  with jax.enable_x64(True):
    cell, params = make(name, hidden=3, input_size=2, dtype=jnp.float64)
    xs = inputs((2, 7, 2), jnp.float64)
    run = EXECUTORS[executor]
    check_grads(lambda p, x: jnp.sum(jnp.sin(run(cell, p, x))), (params, xs), order=1,
                modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CELLS)
def test_width_errors_name_expected_size(name):
  cell, params = make(name, input_size=4)
  bad = inputs((2, 5, 3))
  for run in (lambda: sb.unroll.scan(cell, params, bad),
              lambda: sb.unroll.truncated(cell, params, bad, 2),
              lambda: cell.step(params, cell.initial_state((2,)), bad[:, 0])):
    with pytest.raises(ValueError, match="expects input size 4.*got 3"):
      run()


def test_missing_time_axis_is_a_clear_error():
  cell, params = make("lstm")
  with pytest.raises(ValueError, match=r"\(\.\.\., T, D\)"):
    sb.unroll.scan(cell, params, inputs((4,)))


@pytest.mark.parametrize("bad", [dict(hidden_size=0), dict(hidden_size=-1)])
def test_bad_cell_config(bad):
  for cls in (sb.cells.RNN, sb.cells.LSTM, sb.cells.GRU, sb.cells.LRU):
    with pytest.raises(ValueError, match="hidden_size"):
      cls(**bad)
  with pytest.raises(ValueError, match="nonlinearity"):
    sb.cells.RNN(4, nonlinearity="sigmoid")


def test_no_retracing_in_a_loop():
  cell, params = make("lstm")

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(p, x):
    return (sb.unroll.scan(cell, p, x), sb.unroll.truncated(cell, p, x, 3))

  for seed in range(4):
    xs = inputs((2, 9, 4), seed=seed)
    params = jax.tree_util.tree_map(lambda a: a * 1.01, params)
    jax.block_until_ready(run(params, xs))


def test_executors_are_jittable_with_static_cell():
  cell, params = make("gru")
  xs = inputs((2, 9, 4))
  jit_trunc = jax.jit(sb.unroll.truncated, static_argnums=(0, 3), static_argnames="chunk_size")
  np.testing.assert_allclose(jit_trunc(cell, params, xs, 3, chunk_size=4),
                             sb.unroll.truncated(cell, params, xs, 3, chunk_size=4),
                             rtol=1e-6, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(CELLS),
       batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       t=st.integers(1, 9), d=st.integers(1, 4), k=st.integers(1, 10),
       chunk=st.one_of(st.none(), st.integers(1, 9)))
def test_shapes_and_truncation_property(name, batch, t, d, k, chunk):
  cell, params = make(name, hidden=3, input_size=d)
  xs = inputs(tuple(batch) + (t, d))
  full = sb.unroll.scan(cell, params, xs)
  trunc = sb.unroll.truncated(cell, params, xs, k, chunk_size=chunk)
  assert full.shape == trunc.shape == tuple(batch) + (t, 3)
  # The first k outputs see their whole past: they equal the full model's.
  m = min(k, t)
  np.testing.assert_allclose(trunc[..., :m, :], full[..., :m, :], rtol=1e-5, atol=1e-5)
  # Every later one restarts from the zero state k steps back.
  np.testing.assert_allclose(trunc, python_truncated(cell, params, xs, k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_bfloat16_cells_keep_their_dtype(name):
  # bf16 is a benchmark dtype; the LRU has no bf16 complex type and must still
  # run (state in complex64) and return bf16 outputs.
  cell, params = make(name, dtype=jnp.bfloat16)
  xs = inputs((2, 6, 4)).astype(jnp.bfloat16)
  ref = sb.unroll.scan(cell, params, xs)
  assert ref.dtype == jnp.bfloat16
  # k < T, so the windowed path runs (k >= T is the scan itself).
  trunc = sb.unroll.truncated(cell, params, xs, 3)
  assert trunc.dtype == jnp.bfloat16
  np.testing.assert_allclose(trunc.astype(jnp.float32),
                             python_truncated(cell, params, xs, 3).astype(jnp.float32), atol=2e-2)
  np.testing.assert_allclose(trunc[:, :3].astype(jnp.float32), ref[:, :3].astype(jnp.float32),
                             atol=2e-2)
  if cell.is_linear:
    par = sb.unroll.parallel(cell, params, xs)
    assert par.dtype == jnp.bfloat16
    np.testing.assert_allclose(par.astype(jnp.float32), ref.astype(jnp.float32), atol=2e-2)


def test_chunk_budget_follows_device_memory(monkeypatch):
  cell, params = make("lstm", hidden=8)
  xs = inputs((2, 64, 4))
  # CPU reports no memory: the fixed budget applies and 64 outputs fit.
  assert sb.unroll.truncated_chunk_size(cell, params, xs, 4) == 64
  assert sb.unroll.truncated_chunk_size(cell, params, xs, 4, max_elements=4 * 2 * 48 * 10) == 10

  class FakeDevice:
    def memory_stats(self):
      return {"bytes_limit": 64 * 2**30}

  monkeypatch.setattr(jax, "devices", lambda *a: [FakeDevice()])
  assert sb.unroll.default_window_elements() == 64 * 2**30 // 8 // 4 == int(
      64 * 2**30 * sb.unroll.DEVICE_MEMORY_FRACTION) // 4


@pytest.mark.parametrize("chunk", [None, 3])
def test_stacked_cell_is_the_layers_in_sequence(chunk):
  """Stacked(cells) under scan = each layer scanned over the one below; truncated = restarts."""
  layers = (sb.RNN(5), sb.LSTM(4), sb.GRU(3))
  cell = sb.Stacked(layers)
  params = cell.init(jax.random.PRNGKey(0), 2)
  xs = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 2))
  ys = xs
  for c, p in zip(layers, params):
    ys, _ = python_loop(c, p, ys)
  np.testing.assert_allclose(sb.unroll.scan(cell, params, xs), ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sb.unroll.truncated(cell, params, xs, 4, chunk_size=chunk),
                             python_truncated(cell, params, xs, 4), rtol=1e-5, atol=1e-6)
  assert cell.hidden_size == 3
  with pytest.raises(ValueError, match="at least one cell"):
    sb.Stacked(())


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
@pytest.mark.parametrize("axis", [0, 1])
def test_linear_recurrence_gradient_equals_autodiff_of_the_scan(dtype, axis):
  # The custom VJP (the adjoint recurrence) against differentiating
  # lax.associative_scan itself, real and complex, time axis first or inner.
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  shape = (7, 5, 3)

  def draw(k, scale):
    x = jax.random.normal(k, shape + (2,)) * scale
    return (x[..., 0] if dtype == jnp.float32 else jax.lax.complex(x[..., 0], x[..., 1]))

  a, b, w = draw(keys[0], 0.6), draw(keys[1], 1.0), draw(keys[2], 1.0)
  plain = lambda a, b: jax.lax.associative_scan(sb.unroll._linear_combine, (a, b), axis=axis)[1]
  loss = lambda f: lambda a, b: jnp.sum(jnp.real(w * f(a, b)) + jnp.abs(f(a, b)) ** 2)
  ours = lambda a, b: sb.unroll.linear_recurrence(a, b, axis)
  np.testing.assert_allclose(ours(a, b), plain(a, b), rtol=1e-6, atol=1e-6)
  for g, ref in zip(jax.grad(loss(ours), argnums=(0, 1))(a, b),
                    jax.grad(loss(plain), argnums=(0, 1))(a, b)):
    np.testing.assert_allclose(g, ref, rtol=2e-5, atol=2e-5)
