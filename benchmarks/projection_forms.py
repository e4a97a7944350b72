"""Times the stable RNN's projection methods on the Wikitext-2 group's shapes, one run.

The singular-value clip after every update is over half of the Wikitext-2
tanh-RNN group's train step on an H200 (``benchmarks/lm_step.py``: 5.2 of
9.9 ms, the ``"gram"`` method, whose ``eigh`` runs one matrix after the other).
This times, with the suite's method (:func:`seqbench.bench.time_compiled`),
``jax.vmap`` of :func:`seqbench.stability.project` over a batch of recurrent
matrices for each ``method`` -- ``gram`` (``eigh`` of W^T W), ``polar`` (two
QDWH polar decompositions, no eigensolver), ``svd`` -- and checks each against
the float64 SVD clip (largest absolute difference, largest spectral norm).

The matrices are what training projects: a matrix already on the set (lam = 1),
moved by one small step, so that many singular values sit just above lam --
the hard case for the polar method's second decomposition (H - lam I is nearly
singular). The default batch is the group's stable members: 3 seeds x 2 layers
of 200 units.

Usage::

    python benchmarks/projection_forms.py --out benchmarks/results/cpu
    python benchmarks/projection_forms.py --out $OUT/projection      # on a GPU: ~1 min

Writes ``projection_forms.{json,md}`` atomically with the run's provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))  # run from a checkout without installing

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from seqbench import cells, stability  # pylint: disable=wrong-import-position
from seqbench.bench import run_metadata, time_compiled  # pylint: disable=wrong-import-position
from seqbench.provenance import write_atomic  # pylint: disable=wrong-import-position

METHODS = ("gram", "polar", "svd")


def training_like_batch(batch: int, hidden: int, step: float, seed: int = 0) -> np.ndarray:
  """``batch`` matrices on the lam = 1 set (float64 SVD clip), each moved by ``step`` noise."""
  rng = np.random.default_rng(seed)
  w = rng.uniform(-1, 1, size=(batch, hidden, hidden)) * (3.0 / np.sqrt(hidden))
  u, s, vt = np.linalg.svd(w)
  on_set = (u * np.minimum(s, 1.0)[..., None, :]) @ vt
  return (on_set + step * rng.normal(size=w.shape) / np.sqrt(hidden)).astype(np.float32)


def svd_clip64(w: np.ndarray, lam: float) -> np.ndarray:
  u, s, vt = np.linalg.svd(w.astype(np.float64))
  return (u * np.minimum(s, lam)[..., None, :]) @ vt


def measure(methods, batch: int, hidden: int, step: float, repeats: int) -> list[dict]:
  cell = cells.RNN(hidden)
  w = training_like_batch(batch, hidden, step)
  ref = svd_clip64(w, 1.0)
  s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
  above = int(np.sum(s > 1.0))
  rows = []
  for method in methods:
    fn = jax.vmap(lambda k, m=method: stability.project(
        cell, {"recurrent_kernel": k}, 1.0, method=m)["recurrent_kernel"])
    t = time_compiled(fn, jnp.asarray(w), n=repeats)
    out = np.asarray(jax.jit(fn)(jnp.asarray(w)), np.float64)
    rows.append({
        "method": method, "batch": batch, "hidden": hidden, "step": step,
        "singular_values_above_lam": above,
        "median_ms": t.median_ms, "min_ms": t.min_ms, "compile_s": t.compile_s,
        "max_abs_diff_vs_svd64": float(np.max(np.abs(out - ref))),
        "max_spectral_norm": float(np.max(np.linalg.norm(out, ord=2, axis=(-2, -1)))),
    })
    print(f"{method:6s} batch {batch} x {hidden}: {t.median_ms:9.3f} ms  (compile "
          f"{t.compile_s:.2f} s)  max |diff| {rows[-1]['max_abs_diff_vs_svd64']:.2e}", flush=True)
  gram = next((r for r in rows if r["method"] == "gram"), None)
  for r in rows:
    r["speedup_vs_gram"] = gram["median_ms"] / r["median_ms"] if gram else None
  return rows


def markdown(result: dict) -> str:
  meta = result["meta"]
  lines = [f"# Stable-RNN projection methods ({meta.get('device_kind')}, float32)", "",
           f"`{result['command']}` at {meta.get('git_sha', '?')[:7]}. One batch of matrices on "
           "the lam = 1 set moved by one small step (the training case); times are medians of "
           "synchronised calls, compilation excluded.", "",
           "| method | batch x H | above lam | median ms | vs gram | max abs diff vs float64 SVD "
           "| max spectral norm |", "|---|---|---:|---:|---:|---:|---:|"]
  for r in result["rows"]:
    lines.append(f"| {r['method']} | {r['batch']} x {r['hidden']} | "
                 f"{r['singular_values_above_lam']} | {r['median_ms']:.3f} | "
                 f"{r['speedup_vs_gram']:.2f}x | {r['max_abs_diff_vs_svd64']:.1e} | "
                 f"{r['max_spectral_norm']:.7f} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="output folder")
  ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
  ap.add_argument("--batch", type=int, default=6, help="matrices projected together (default 6)")
  ap.add_argument("--hidden", type=int, default=200)
  ap.add_argument("--step", type=float, default=1e-2,
                  help="size of the move off the set, relative to 1/sqrt(hidden)")
  ap.add_argument("--repeats", type=int, default=20)
  args = ap.parse_args(argv)
  if args.batch < 1 or args.hidden < 2 or args.repeats < 1:
    ap.error("--batch and --repeats must be >= 1 and --hidden >= 2")
  rows = measure(args.methods, args.batch, args.hidden, args.step, args.repeats)
  result = {"command": "python benchmarks/projection_forms.py " + " ".join(
      sys.argv[1:] if argv is None else argv), "meta": run_metadata("float32"), "rows": rows}
  os.makedirs(args.out, exist_ok=True)
  write_atomic(os.path.join(args.out, "projection_forms.json"),
               json.dumps(result, indent=1, default=str))
  write_atomic(os.path.join(args.out, "projection_forms.md"), markdown(result))
  return result


if __name__ == "__main__":
  main()
