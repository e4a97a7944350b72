"""seqbench cells inside flax.linen.RNN; flax's OptimizedLSTMCell as a baseline."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqbench as sb
from helpers import CELL_FACTORIES


@pytest.mark.parametrize("name", sorted(CELL_FACTORIES))
def test_seqbench_cell_inside_flax_rnn_matches_scan(name):
  cell = CELL_FACTORIES[name](5, jnp.float32)
  xs = jax.random.uniform(jax.random.PRNGKey(0), (3, 9, 4), jnp.float32, -1, 1)
  rnn = nn.RNN(sb.flax_interop.FlaxCell(cell), return_carry=True)
  variables = rnn.init(jax.random.PRNGKey(1), xs)
  carry, ys = rnn.apply(variables, xs)
  params = variables["params"]["cell"]["cell"]
  ref, ref_carry = sb.unroll.scan(cell, params, xs, return_carry=True)
  np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(ref_carry)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_flax_optimized_lstm_equals_seqbench_lstm_on_same_weights():
  baseline = sb.flax_interop.flax_lstm_baseline(6)
  xs = jax.random.normal(jax.random.PRNGKey(2), (2, 11, 3))
  variables = baseline.init(jax.random.PRNGKey(3), xs)
  # flax starts every bias at zero: random ones make the bias layout and gate
  # order of the conversion count.
  leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  variables = jax.tree_util.tree_unflatten(treedef, [
      0.5 * jax.random.normal(key, v.shape, v.dtype) if "bias" in jax.tree_util.keystr(path) else v
      for key, (path, v) in zip(keys, leaves)])
  assert sum("bias" in jax.tree_util.keystr(p) for p, _ in leaves) >= 4
  params = sb.flax_interop.lstm_params_from_flax(variables)
  np.testing.assert_allclose(baseline.apply(variables, xs),
                             sb.unroll.scan(sb.cells.LSTM(6), params, xs), rtol=1e-5, atol=1e-6)
  # The same weights through the truncated executor with k = T.
  np.testing.assert_allclose(baseline.apply(variables, xs),
                             sb.unroll.truncated(sb.cells.LSTM(6), params, xs, 11),
                             rtol=1e-5, atol=1e-6)
