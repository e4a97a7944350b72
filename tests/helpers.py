"""Plain-Python references the executors are checked against, and subprocess/script helpers."""

import functools
import importlib
import os
import sys
import time

import jax
import jax.numpy as jnp

import seqbench as sb

CELL_FACTORIES = {
    "rnn_tanh": lambda h, dt: sb.cells.RNN(h, "tanh", dtype=dt),
    "rnn_relu": lambda h, dt: sb.cells.RNN(h, "relu", dtype=dt),
    "lstm": lambda h, dt: sb.cells.LSTM(h, forget_bias=1.0, dtype=dt),
    "gru": lambda h, dt: sb.cells.GRU(h, dtype=dt),
    "lru": lambda h, dt: sb.cells.LRU(h, state_size=h + 3, dtype=dt),
}


@functools.lru_cache(maxsize=None)
def jitted_step(cell):
  """``cell.step`` compiled once per cell (the loops below stay plain Python)."""
  return jax.jit(cell.step)


def python_loop(cell, params, xs, carry=None):
  """y_t by calling ``cell.step`` once per time step; returns (ys, carries)."""
  carry = cell.initial_state(xs.shape[:-2]) if carry is None else carry
  step = jitted_step(cell)
  ys, carries = [], []
  for t in range(xs.shape[-2]):
    carry, y = step(params, carry, xs[..., t, :])
    ys.append(y)
    carries.append(carry)
  return jnp.stack(ys, axis=-2), carries


def python_truncated(cell, params, xs, k):
  """y^k_t by restarting from the zero state k steps back, for every t."""
  ys = []
  for t in range(xs.shape[-2]):
    carry = cell.initial_state(xs.shape[:-2])
    for s in range(max(0, t - k + 1), t + 1):
      carry, y = jitted_step(cell)(params, carry, xs[..., s, :])
    ys.append(y)
  return jnp.stack(ys, axis=-2)


def signal_when(proc, ready, sig, timeout=120.0, settle=0.0) -> bool:
  """Sends ``sig`` to the subprocess ``proc`` once ``ready()`` holds.

  Polls until then (or until ``proc`` exits or ``timeout`` seconds pass);
  ``settle`` seconds pass between ``ready()`` and the signal. Returns whether
  the signal was sent, so a test can fail with a reason when the process
  finished or stalled first.
  """
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if ready():
      time.sleep(settle)
      proc.send_signal(sig)
      return True
    time.sleep(0.01)
  return False


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str, folder: str = "scripts"):
  """Import ``<folder>/<name>.py`` (``scripts`` or ``benchmarks``) as a module.

  The folder is on ``sys.path`` while it loads: scripts import their siblings by name.
  """
  path = os.path.join(REPO, folder)
  sys.path.insert(0, path)
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(path)
