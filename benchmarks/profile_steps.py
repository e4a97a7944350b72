"""Profiles the steps that miss issue 6's targets: device busy time vs wall time.

For each target the compiled step runs ``--n`` times under the JAX profiler
(``seqbench.bench.profile``), and the row says how much of the step the
device was busy (union of kernel intervals), how many kernels one step
launches, their mean length, and which kernels take the time. A step that is
mostly idle is latency-bound (launches, small kernels one after another);
one that is busy but slow is bound by its kernels (then the top kernels say
which).

Targets (suite sizes from ``seqbench.bench.suite``, ``--suite full`` is the
GPU reference size B=64, T=256, D=256, H=512):

* ``lstm-scan``: the LSTM train step, scan(unroll=8) (the cuDNN comparison);
* ``tcn``: the TCN train step (the PyTorch-TCN comparison; with the bench's
  optimizer, on accelerators Adam on one raveled vector, which this profile
  showed 9% faster on an H100), and
  ``tcn-per-leaf-adam`` the same with optax's per-leaf Adam;
* ``lstm-scan-long`` and ``lstm-truncated-long``: scan(unroll=8) and
  truncated(k=16) train steps at T=1024, B=32 (the truncated-vs-scan target);
* ``wt2-rnn``, ``wt2-lstm``: the Miller & Hardt Wikitext-2 sweep's vmapped
  step (stable + unstable x ``--seeds``), from ``lm_step.group_step``; these
  load Wikitext-2 (``datasets`` needed);
* ``wt2-rnn-projection``: that RNN group's projection alone;
* ``projection-gram``, ``projection-svd``: the exact RNN projection by each
  method on 6 matrices of 200x200 (the group's shape), no data needed.

::

  python benchmarks/profile_steps.py --out $OUT/profile                 # all targets, GPU
  python benchmarks/profile_steps.py --suite tiny --targets lstm-scan,tcn --n 3 --out /tmp/p  # CPU check

Expected cost on one H200: ~1-2 minutes, mostly compilation. Writes
``profile.{json,md}`` atomically with the run's provenance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import optax

from seqbench import cells, stability
from seqbench.bench import profile as profile_lib
from seqbench.bench import suite as suite_lib
from seqbench.provenance import run_metadata, write_atomic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_step  # noqa: E402  (a sibling script: the sweep's step, built once there)

LONG_TIME, LONG_BATCH = 1024, 32


def _suite_target(model: str, executor: str, long: bool = False, per_leaf_adam: bool = False):
  """A suite entry's train step (fwd + bwd + Adam), as the bench times it.

  The step's optimizer is the bench's (:func:`seqbench.bench.suite.bench_optimizer`:
  Adam on one raveled vector on accelerators). ``per_leaf_adam``: optax's Adam
  per leaf instead, the bench's accelerator optimizer before 2026-11-28 (the
  TCN has 50 parameter leaves, each with its own small update kernels; on
  XLA:CPU the train step has 405 fusions instead of 324).
  """

  def run(size, dtype, n, seeds):
    del seeds
    if long:
      size = dataclasses.replace(size, time=LONG_TIME, batch=LONG_BATCH)
    found = [e for e in suite_lib.entries(size) if e.name == model and e.executor == executor]
    if not found:
      raise SystemExit(f"profile_steps: the suite has no {model} {executor} (its ks: {size.ks})")
    entry = found[0]
    params, apply, _ = entry.build(size, dtype, jax.random.PRNGKey(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (size.batch, size.time, size.input_size), dtype)
    optimizer = optax.adam(1e-3) if per_leaf_adam else suite_lib.bench_optimizer()
    summary = profile_lib.profile_compiled(suite_lib.train_step(apply, optimizer), params,
                                           optimizer.init(params), xs, n=n)
    opt = ", per-leaf Adam" if per_leaf_adam else ""
    return summary, f"{model} {executor} train{opt}, B={size.batch} T={size.time} H={size.hidden}"

  return run


def _wt2_target(backbone: str, projection_only: bool = False):
  """The Wikitext-2 sweep's vmapped group step (or its projection alone)."""

  def run(size, dtype, n, seeds):
    del size, dtype  # the experiments fix both
    exps = [f"mh-wikitext2-{backbone}-{v}" for v in ("unstable", "stable")]
    with lm_step.group_step(exps, seeds) as (step, project, _, _):
      call = project if projection_only else step
      summary = profile_lib.profile_calls(call, n=n)
    what = "projection alone" if projection_only else "train step"
    return summary, f"mh-wikitext2-{backbone} stable+unstable x {seeds} seeds, vmapped {what}"

  return run


def _projection_target(method: str, models: int = 6, hidden: int = 200):
  """The RNN projection alone, ``stability.project(..., method=method)``, vmapped
  over the Wikitext-2 RNN group's recurrent matrices (6 of 200x200, sigma_max > 1),
  without loading the task: is another exact method cheaper on this device?"""

  def run(size, dtype, n, seeds):
    del size, dtype, seeds
    cell = cells.RNN(hidden)
    keys = jax.random.split(jax.random.PRNGKey(0), models)
    batch = jax.vmap(lambda k: cell.init(k, hidden))(keys)
    batch = {**batch, "recurrent_kernel": 3 * batch["recurrent_kernel"] * hidden ** 0.5 / 2}
    project = jax.vmap(lambda p: stability.project(cell, p, 1.0, method=method))
    summary = profile_lib.profile_compiled(project, batch, n=n)
    return summary, f"RNN projection, method={method}, {models} x {hidden}x{hidden}"

  return run


TARGETS = {
    "lstm-scan": _suite_target("seqbench LSTM", "scan(unroll=8)"),
    "tcn": _suite_target("seqbench TCN", "conv"),
    "tcn-per-leaf-adam": _suite_target("seqbench TCN", "conv", per_leaf_adam=True),
    "lstm-scan-long": _suite_target("seqbench LSTM", "scan(unroll=8)", long=True),
    "lstm-truncated-long": _suite_target("seqbench LSTM", "truncated(k=16)", long=True),
    "wt2-rnn": _wt2_target("rnn"),
    "wt2-lstm": _wt2_target("lstm"),
    "wt2-rnn-projection": _wt2_target("rnn", projection_only=True),
    "projection-gram": _projection_target("gram"),
    "projection-svd": _projection_target("svd"),
}


def _table(rows) -> list:
  lines = ["| target | what | wall ms | device busy ms | idle ms | busy % | kernels/step | "
           "mean kernel µs |", "|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    s = r["profile"]
    mean_us = 1e3 * s["kernel_sum_ms"] / s["kernels_per_call"] if s["kernels_per_call"] else 0
    lines.append(f"| {r['target']} | {r['what']} | {s['wall_ms']:.2f} | {s['busy_ms']:.2f} | "
                 f"{s['idle_ms']:.2f} | {100 * s['busy_fraction']:.0f} | "
                 f"{s['kernels_per_call']:.0f} | {mean_us:.1f} |")
  for r in rows:
    lines += ["", f"Top kernels of `{r['target']}` (per step; counted lines: "
              f"{', '.join(r['profile']['lines']) or 'none'}):", "",
              "| kernel | calls | ms |", "|---|---:|---:|"]
    lines += [f"| `{name[:90]}` | {calls:.0f} | {ms:.3f} |"
              for name, calls, ms in r["profile"]["top_kernels"]]
  return lines


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--targets", default=",".join(TARGETS),
                 help=f"comma list of {', '.join(TARGETS)}")
  p.add_argument("--suite", default="full", choices=sorted(suite_lib.SUITES))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--n", type=int, default=10, help="profiled steps per target")
  p.add_argument("--seeds", type=int, default=3, help="seeds per variant of the wt2 groups")
  p.add_argument("--out", required=True, help="directory for profile.{json,md}")
  args = p.parse_args(argv)
  targets = args.targets.split(",")
  unknown = [t for t in targets if t not in TARGETS]
  if unknown:
    p.error(f"--targets: unknown {', '.join(unknown)} (known: {', '.join(TARGETS)})")
  if args.n < 1:
    p.error("--n must be >= 1")
  size, dtype = suite_lib.SUITES[args.suite], jnp.dtype(args.dtype)
  rows = []
  for t in targets:
    summary, what = TARGETS[t](size, dtype, args.n, args.seeds)
    rows.append({"target": t, "what": what, "profile": summary.to_json()})
    print(f"{t:20s} wall {summary.wall_ms:8.2f} ms  busy {summary.busy_ms:8.2f} ms "
          f"({100 * summary.busy_fraction:3.0f}%)  {summary.kernels_per_call:6.0f} kernels/step",
          flush=True)
  meta = run_metadata(args.dtype)
  command = " ".join(["profile_steps.py"] + (argv if argv is not None else sys.argv[1:]))
  head = [f"# Device busy time vs wall time per step ({args.dtype})", "",
          f"Device: {meta['device_kind']} ({meta['platform']}), jax {meta['versions']['jax']}, "
          f"git {meta['git_sha']} (dirty={meta['git_dirty']}). Command: `{command}`. "
          f"{args.n} profiled steps after 2 warm-ups; times under the profiler (compare shares, "
          "not ms, with benchmark rows). Busy = union of kernel intervals on the counted lines.",
          ""]
  os.makedirs(args.out, exist_ok=True)
  write_atomic(os.path.join(args.out, "profile.json"),
               json.dumps({"command": command, "meta": meta, "rows": rows}, indent=1))
  write_atomic(os.path.join(args.out, "profile.md"), "\n".join(head + _table(rows)) + "\n")
  print("\n".join(_table(rows)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
