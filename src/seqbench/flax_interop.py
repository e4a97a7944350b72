"""Interoperability with ``flax.linen``'s recurrent API.

* :class:`FlaxCell` wraps any seqbench cell as a ``flax.linen`` RNN cell, so it
  runs inside ``nn.RNN`` (and ``nn.Bidirectional``) unchanged.
* :func:`flax_lstm_baseline` builds flax's own ``nn.RNN(nn.OptimizedLSTMCell)``,
  the baseline people use today, and :func:`lstm_params_from_flax` maps its
  parameters onto :class:`seqbench.cells.LSTM` so the two can be compared on
  identical weights.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from seqbench.cells import LSTM, Cell


class FlaxCell(nn.RNNCellBase):
  """A seqbench cell as a ``flax.linen`` cell: ``(carry, x) -> (carry, y)``.

  The cell's parameter pytree is stored as one flax parameter named ``cell``,
  created by ``cell.init`` on the first call.
  """

  cell: Any  # a seqbench cell: a frozen, hashable dataclass

  @nn.compact
  def __call__(self, carry, x):
    params = self.param("cell", lambda key: self.cell.init(key, x.shape[-1]))
    return self.cell.step(params, carry, x)

  @nn.nowrap
  def initialize_carry(self, rng, input_shape):
    del rng  # seqbench states start at zero
    return self.cell.initial_state(tuple(input_shape[:-1]))

  @property
  def num_feature_axes(self) -> int:
    return 1


def flax_lstm_baseline(hidden_size: int, dtype=None, **rnn_kwargs) -> nn.RNN:
  """flax's ``nn.RNN(nn.OptimizedLSTMCell(hidden_size))`` (batch-major).

  Args:
    hidden_size: the LSTM's width.
    dtype: the computation dtype of the gate matmuls (flax's ``dtype``);
      ``None`` promotes from the inputs and parameters. Parameters are created
      in float32 either way (flax's orthogonal init is a QR with no bfloat16
      form); cast them afterwards for a low-precision model. flax's default
      initial carry is float32 too, so a bfloat16 run passes its own
      ``initial_carry``, else the recurrent matmul runs in float32.
    **rnn_kwargs: passed to ``nn.RNN`` (``unroll``, ...).
  """
  return nn.RNN(nn.OptimizedLSTMCell(hidden_size, dtype=dtype, param_dtype=jnp.float32),
                **rnn_kwargs)


def lstm_params_from_flax(flax_params: Any) -> dict:
  """Convert ``(Optimized)LSTMCell`` parameters to :class:`seqbench.cells.LSTM`'s.

  flax keeps one Dense per gate (``ii, if, ig, io`` without bias on the input;
  ``hi, hf, hg, ho`` with bias on the state); seqbench fuses them in gate order
  ``(i, f, z=g, o)``. Accepts the cell's own params or ``{"params": {"cell": ...}}``
  as produced by ``nn.RNN``.
  """
  p = flax_params
  if "params" in p:
    p = p["params"]
  if "cell" in p:
    p = p["cell"]
  order = ("i", "f", "g", "o")
  return {
      "input_kernel": jnp.concatenate([p["i" + g]["kernel"] for g in order], axis=-1),
      "recurrent_kernel": jnp.concatenate([p["h" + g]["kernel"] for g in order], axis=-1),
      "bias": jnp.concatenate([p["h" + g]["bias"] for g in order], axis=-1),
  }


__all__ = ["FlaxCell", "flax_lstm_baseline", "lstm_params_from_flax"]
