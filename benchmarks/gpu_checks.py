"""Equality checks run on the benchmark device before its numbers are trusted.

Every executor against the reference path on *this* device (GPU kernels can
differ from CPU ones): scan vs a Python loop over ``step``; truncated(k) vs
restarting the recurrence k steps back; truncated(k >= T) vs scan; parallel vs
scan for the LRU; the RNN and LSTM projections; every TCN/WaveNet
``conv_impl`` against each other and ``stream_step`` against ``apply``.
Matmuls run at "highest" precision here so that a TF32 rounding difference is
not mistaken for a bug. Exit status 1 on any failure.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import seqbench as sb

TOL = 2e-4
failures = []


def check(name, a, b, tol=TOL):
  err = float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))
  status = "ok" if err <= tol else "FAIL"
  print(f"{status:4s} {name:50s} max|diff| = {err:.2e}")
  if err > tol:
    failures.append(name)


def loop(cell, params, xs, k=None):
  step = jax.jit(cell.step)
  ys = []
  for t in range(xs.shape[1]):
    carry = cell.initial_state((xs.shape[0],))
    start = 0 if k is None else max(0, t - k + 1)
    for s in range(start, t + 1):
      carry, y = step(params, carry, xs[:, s])
    ys.append(y)
  return jnp.stack(ys, 1)


def sorted_l1_projection(w, radii):
  """Each column of ``w`` onto the l1 ball of its radius, by sorting (float64)."""
  w = np.asarray(w, np.float64)
  out = w.copy()
  for j in range(w.shape[1]):
    v, r = np.abs(w[:, j]), radii[j]
    if v.sum() <= r:
      continue
    s = np.sort(v)[::-1]
    c = np.cumsum(s)
    rho = np.flatnonzero(s - (c - r) / np.arange(1, len(v) + 1) > 0)[-1] + 1
    out[:, j] = np.sign(w[:, j]) * np.maximum(v - (c[rho - 1] - r) / rho, 0)
  return out


def main():
  print("device:", jax.devices()[0].device_kind)
  key = jax.random.PRNGKey(0)
  xs = jax.random.uniform(key, (4, 24, 8), jnp.float32, -1, 1)
  with jax.default_matmul_precision("highest"):
    for cell in (sb.cells.RNN(32), sb.cells.LSTM(32), sb.cells.GRU(32), sb.cells.LRU(32)):
      name = type(cell).__name__
      params = cell.init(key, 8)
      full = sb.unroll.scan(cell, params, xs)
      check(f"{name} scan vs python loop", full, loop(cell, params, xs))
      # scan's default unroll is the device's (8 on a GPU): compare with 1 too.
      check(f"{name} scan(unroll=1) vs scan", sb.unroll.scan(cell, params, xs, unroll=1), full)
      check(f"{name} scan(unroll=8) vs scan", sb.unroll.scan(cell, params, xs, unroll=8), full)
      check(f"{name} truncated(k=T) vs scan", sb.unroll.truncated(cell, params, xs, 24), full)
      for inner in sb.unroll.INNER_LOOPS:
        check(f"{name} truncated(k=5, {inner}) vs restart loop",
              sb.unroll.truncated(cell, params, xs, 5, chunk_size=7, inner=inner),
              loop(cell, params, xs, k=5))
      if cell.is_linear:
        check(f"{name} parallel vs scan", sb.unroll.parallel(cell, params, xs), full)
    # The RNN projection on the device, on a vmapped batch of 200x200 matrices
    # with sigma_max >> 1 (the Wikitext-2 RNN group's shape): every spectral
    # norm must end at lam.
    rnn = sb.cells.RNN(200)
    batch = jax.vmap(lambda k: rnn.init(k, 8))(jax.random.split(key, 6))
    batch = {**batch, "recurrent_kernel": 3 * batch["recurrent_kernel"] * 200 ** 0.5 / 2}
    projected = jax.jit(jax.vmap(lambda p: sb.stability.project(rnn, p, 1.0)))(batch)
    check("RNN projection, spectral norm after vs 1",
          jnp.max(jnp.linalg.norm(projected["recurrent_kernel"], ord=2, axis=(-2, -1))), 1.0)
    # The LSTM projection (l1-ball threshold search, a while loop) on the
    # device, the Wikitext-2 LSTM group's shape, against Duchi et al.'s sort in
    # float64 on the host.
    lstm = sb.cells.LSTM(200)
    batch = jax.vmap(lambda k: lstm.init(k, 200))(jax.random.split(key, 6))
    projected = jax.jit(jax.vmap(lambda p: sb.stability.project(lstm, p, 1.0)))(batch)
    bud = sb.stability.lstm_budget(1.0)
    radii = np.repeat([bud.r_i, bud.r_f, bud.r_z, bud.r_o], 200)
    check("LSTM projection vs sorted l1 projection (host)", projected["recurrent_kernel"],
          np.stack([sorted_l1_projection(np.asarray(w), radii)
                    for w in batch["recurrent_kernel"]]), tol=1e-5)
    xs_c = jax.random.normal(key, (2, 70, 8), jnp.float32)
    for net_cls in (sb.convnets.TCN, sb.convnets.WaveNet):
      ref_net = net_cls(16, 4, kernel_size=3)
      params = ref_net.init(key, 8)
      ref = ref_net.apply(params, xs_c)
      for impl in sb.convnets.CONV_IMPLS:
        net = net_cls(16, 4, kernel_size=3, conv_impl=impl)
        check(f"{net_cls.__name__} {impl} vs default", net.apply(params, xs_c), ref, tol=1e-3)
      state = ref_net.init_stream_state(params, (2,))
      step = jax.jit(ref_net.stream_step)
      outs = []
      for t in range(70):
        state, y = step(params, state, xs_c[:, t])
        outs.append(y)
      check(f"{net_cls.__name__} stream_step vs apply", jnp.stack(outs, 1), ref, tol=1e-3)
  if failures:
    print("FAILED:", ", ".join(failures))
    sys.exit(1)
  print("all equality checks passed")


if __name__ == "__main__":
  main()
