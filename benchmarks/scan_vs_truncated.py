"""Recurrent scan vs the k-step truncated model, fwd and fwd+bwd, one run.

Usage::

    python benchmarks/scan_vs_truncated.py --preset cpu --out benchmarks/results/cpu
    python benchmarks/scan_vs_truncated.py --preset gpu --dtype bfloat16 --out $OUT

Presets: ``cpu`` is B=8, T=1024, D=H=256, k=16 (issue 2's reference size on a
2-core CPU); ``gpu`` is B=32, T=1024, D=H=512, k=16 (issue 6). Every row has
its ratio to the LSTM scan measured in the same run. Expected cost: ~3 min on
the 2-core CPU, < 1 min on an H100.
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

import seqbench as sb
from seqbench.bench import run_metadata, time_compiled
from seqbench.provenance import write_atomic

PRESETS = {
    "cpu": dict(batch=8, time=1024, input_size=256, hidden=256, k=16),
    "gpu": dict(batch=32, time=1024, input_size=512, hidden=512, k=16),
}


def matmul_floor(cell, params, xs, k: int):
  """The k - 1 recurrent matmuls of :func:`seqbench.unroll.truncated`, alone.

  The truncated model runs its ``T * batch`` windows as one batch through
  ``k - 1`` state-dependent steps (the first step starts from the zero state,
  so it has no recurrent matmul), each a ``(T * batch, H) @ (H, G * H)``
  product. This times exactly those products on independent random states
  (no gates, no masking, no data movement between steps): a lower bound for
  the truncated model at this size and dtype, and the yardstick for how far
  it is from compute-bound.
  """
  b, t, _ = xs.shape
  w = params["recurrent_kernel"]
  hidden = w.shape[0]
  states = jax.random.normal(jax.random.PRNGKey(2), (k - 1, b * t, hidden), xs.dtype)

  def products(w, states):
    return jnp.einsum("jrh,hg->jrg", states, w)

  return w, states, products


def _time_modes(shape: dict, label: str, fn, args, n: int, argnums=0, flop=None) -> list:
  """Rows for ``fn(*args)`` forward and fwd+bwd (the gradient w.r.t. ``argnums``).

  With ``flop`` (the forward's exact count; fwd+bwd is 3x) the rows also get
  the achieved TFLOP/s.
  """
  train = jax.grad(lambda *a: jnp.mean(fn(*a).astype(jnp.float32) ** 2), argnums=argnums)
  out = []
  for mode, f, mult in (("forward", fn, 1), ("fwd+bwd", train, 3)):
    timing = time_compiled(f, *args, n=n)
    row = {**shape, "executor": label, "mode": mode,
           "tokens_per_s": shape["batch"] * shape["time"] / (timing.median_ms / 1e3),
           **timing.to_json()}
    note = f"min {timing.min_ms:9.2f} compile {timing.compile_s:6.2f} s"
    if flop is not None:
      row["tflops_achieved"] = mult * flop / (timing.median_ms / 1e3) / 1e12
      note = f"({row['tflops_achieved']:.0f} TFLOP/s)"
    out.append(row)
    print(f"{shape['cell']:5s} {label:18s} {mode:8s} median {timing.median_ms:9.2f} ms {note}",
          flush=True)
  return out


def rows(preset: str, dtype, n: int, cells=("lstm", "rnn"), ks=None, unrolls=(1, 8),
         chunks=(None,), floor=False, inners=("auto",)):
  cfg = PRESETS[preset]
  ks = ks or (cfg["k"],)
  b, t, d, h = cfg["batch"], cfg["time"], cfg["input_size"], cfg["hidden"]
  xs = jax.random.normal(jax.random.PRNGKey(0), (b, t, d), dtype)
  factories = {"lstm": lambda: sb.cells.LSTM(h, dtype=dtype),
               "rnn": lambda: sb.cells.RNN(h, dtype=dtype),
               "gru": lambda: sb.cells.GRU(h, dtype=dtype)}
  out = []
  for name in cells:
    cell = factories[name]()
    params = cell.init(jax.random.PRNGKey(1), d)
    variants = [(f"scan(unroll={u})", lambda p, x, u=u: sb.unroll.scan(cell, p, x, unroll=u))
                for u in unrolls]
    for k in ks:
      for chunk in chunks:
        # Name the chunk size the executor will use, also when it picks it.
        used = chunk or sb.unroll.truncated_chunk_size(cell, params, xs, k)
        for inner in inners:
          label = (f"truncated(k={k}, chunk={used}{'' if chunk else ' auto'}"
                   + (f", inner={inner})" if inner != "auto" else ")"))
          variants.append((label, lambda p, x, k=k, c=chunk, i=inner: sb.unroll.truncated(
              cell, p, x, k, chunk_size=c, inner=i)))
    shape = {"cell": name, "batch": b, "time": t, "input_size": d, "hidden": h}
    for label, run in variants:
      out += _time_modes(shape, label, run, (params, xs), n)
    if floor:
      for k in ks:
        w, states, products = matmul_floor(cell, params, xs, k)
        # One product is 2 * rows * H * G*H flops; the backward adds two more.
        flop = 2 * states.shape[0] * states.shape[1] * w.shape[0] * w.shape[1]
        out += _time_modes(shape, f"matmul floor(k={k})", products, (w, states), n,
                           argnums=(0, 1), flop=flop)
  # Ratios to the plain scan of the same cell and mode, measured in this run.
  for r in out:
    base = next(o for o in out if o["cell"] == r["cell"] and o["mode"] == r["mode"]
                and o["executor"] == f"scan(unroll={unrolls[0]})")
    r["speedup_vs_scan"] = base["median_ms"] / r["median_ms"]
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  ap.add_argument("--n", type=int, default=10)
  ap.add_argument("--cells", default="lstm,rnn")
  ap.add_argument("--chunks", default="auto",
                  help="comma list of truncated chunk sizes (output times per chunk); "
                       "'auto' is the executor's default")
  ap.add_argument("--inners", default="auto",
                  help="comma list of the truncated model's inner loops "
                       f"(auto, {', '.join(sb.unroll.INNER_LOOPS)}), each timed")
  ap.add_argument("--floor", action="store_true",
                  help="also time the truncated model's recurrent matmuls alone")
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  chunks = tuple(None if c == "auto" else int(c) for c in args.chunks.split(","))
  dtype = jnp.dtype(args.dtype)
  result = {"command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
            "preset": args.preset, **PRESETS[args.preset], "meta": run_metadata(args.dtype),
            "rows": rows(args.preset, dtype, args.n, cells=tuple(args.cells.split(",")),
                        chunks=chunks, floor=args.floor,
                        inners=tuple(args.inners.split(",")))}
  lines = ["| cell | executor | mode | median ms | min ms | compile s | vs scan | TFLOP/s |",
           "|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    # The floor rows count their flops exactly; other rows use XLA's estimate.
    tflops = r.get("tflops_achieved")
    if tflops is None and r.get("flops"):
      tflops = r["flops"] / (r["median_ms"] / 1e3) / 1e12
    lines.append(f"| {r['cell']} | {r['executor']} | {r['mode']} | {r['median_ms']:.2f} | "
                 f"{r['min_ms']:.2f} | {r['compile_s']:.2f} | {r['speedup_vs_scan']:.2f}x | "
                 + (f"{tflops:.3g}" if tflops is not None else "–") + " |")
  table = "\n".join(lines)
  print(table)
  if args.out:
    tag = f"scan_vs_truncated_{args.preset}_{args.dtype}"
    write_atomic(os.path.join(args.out, tag + ".json"), json.dumps(result, indent=1))
    meta = result["meta"]
    write_atomic(os.path.join(args.out, tag + ".md"),
                 f"# scan vs truncated ({args.preset}, {args.dtype})\n\n"
                 f"Device: {meta['device_kind']} ({meta['platform']}), jax {meta['versions']['jax']}, "
                 f"git {meta['git_sha']} (dirty={meta['git_dirty']}). Command: `{result['command']}`\n\n"
                 + table + "\n")


if __name__ == "__main__":
  main()
