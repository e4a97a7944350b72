"""Where a vmapped training step's time goes: the step, its projection, unroll.

``seqbench sweep --vmap`` trains a row's seeds and stable/unstable variants as
one program (``train.run_experiments_vmapped``). On an H200 the four Miller &
Hardt Wikitext-2 rows x 3 seeds trained at 66.9k (tanh-RNN group) and 99.5k
(LSTM group) tokens/s per model, i.e. ~10.5 and ~7 ms per step of six models,
which puts the 12 full runs at ~0.6 h. This times, on the current device and
in one invocation, the same compiled train step the sweep runs (the trainer's
own, on a real training batch) for:

* the group as the sweep forms it (stable + unstable members x seeds) and as
  many unstable members alone (no projection), so the difference is what the
  projection costs per step;
* the projection alone (``_project_members`` on the group's parameters);
* each ``lax.scan`` unroll factor in ``--unrolls`` (set through
  ``seqbench.unroll.ACCELERATOR_SCAN_UNROLL``; the CPU always uses 1).

(A batched-Jacobi ``eigh`` for the RNN projection was measured here once and
dropped: 19.7 ms vs 5.2 ms for the default, benchmarks/results/nvidia-h200/lm_step_05d8e37.)

::

  python benchmarks/lm_step.py --backbones rnn,lstm --seeds 3 --unrolls 1,8 --out $OUT/lm_step

Expected cost: ~2 minutes on one H200 (mostly compilation); on the 2-core CPU
use ``--seeds 1 --n 3`` (a few minutes). Writes ``lm_step.{json,md}``
atomically with the run's provenance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import jax

from seqbench import train as train_lib
from seqbench import unroll as unroll_lib
from seqbench.provenance import run_metadata, write_atomic


def _median_ms(fn, n: int) -> float:
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


@contextlib.contextmanager
def group_step(experiments, seeds: int):
  """The sweep's vmapped train step for ``experiments`` x ``seeds``, ready to call.

  Yields ``(step, project, tokens, compile_s)``: ``step()`` runs one train step
  on the task's first training batch (threading the donated state) and returns
  the loss; ``project()`` runs the stable members' projection alone on the
  current parameters (``None`` without stable members); ``tokens`` counts the
  batch's tokens per model; ``compile_s`` is the first step's time.
  """
  members = [train_lib._Member(train_lib.resolve(e), s, f"{e}-{s}")  # pylint: disable=protected-access
             for e in experiments for s in range(seeds)]
  with tempfile.TemporaryDirectory() as tmp:
    trainer = train_lib._Trainer(members, tmp, batched=True, smoke=False,  # pylint: disable=protected-access
                                 progress=False, log=lambda msg: None)
    state = trainer._init_state()  # pylint: disable=protected-access
    batch = next(iter(trainer.data.batches("train", train=True)))
    t0 = time.perf_counter()
    state, loss = trainer._train_step(state, batch)  # pylint: disable=protected-access
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def step():
      holder["state"], loss = trainer._train_step(holder["state"], batch)  # pylint: disable=protected-access
      return loss

    project = None
    if trainer.lams:
      project_jit = jax.jit(trainer._project_members)  # pylint: disable=protected-access
      project = lambda: project_jit(holder["state"]["params"])
    yield step, project, int(batch["mask"].sum()), compile_s


def measure(experiments, seeds: int, n: int) -> dict:
  """Median ms of the group's train step and of its projection alone."""
  with group_step(experiments, seeds) as (step, project, tokens, compile_s):
    for _ in range(2):
      step()
    step_ms = _median_ms(step, n)
    project_ms = None
    if project is not None:
      jax.block_until_ready(project())
      project_ms = _median_ms(project, n)
  return {"members": len(experiments) * seeds,
          "stable_members": sum(train_lib.resolve(e).train.stable for e in experiments) * seeds,
          "step_ms": step_ms, "project_ms": project_ms, "compile_s": compile_s,
          "tokens_per_s_per_model": tokens / (step_ms / 1e3)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", default="wikitext2", help="experiments mh-TASK-BACKBONE-{unstable,stable}")
  p.add_argument("--backbones", default="rnn,lstm")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--unrolls", default="1,8")
  p.add_argument("--n", type=int, default=20, help="timed steps per variant")
  p.add_argument("--out", required=True, help="directory for lm_step.{json,md}")
  args = p.parse_args(argv)
  rows = []
  default_unroll = unroll_lib.ACCELERATOR_SCAN_UNROLL
  try:
    for u in (int(x) for x in args.unrolls.split(",")):
      unroll_lib.ACCELERATOR_SCAN_UNROLL = u
      for backbone in args.backbones.split(","):
        unstable, stable = (f"mh-{args.task}-{backbone}-{v}" for v in ("unstable", "stable"))
        # Both groups have 2 x seeds models, so they differ only in the projection.
        variants = [("unstable only", [unstable], 2 * args.seeds),
                    ("stable + unstable", [unstable, stable], args.seeds)]
        for label, exps, seeds in variants:
          r = measure(exps, seeds, args.n)
          r.update(backbone=backbone, group=label, unroll=unroll_lib.default_scan_unroll())
          rows.append(r)
          print(f"{backbone:5s} {label:18s} unroll {r['unroll']}: "
                f"step {r['step_ms']:.2f} ms "
                f"({r['members']} models, {r['tokens_per_s_per_model']:,.0f} tokens/s per model)"
                + (f", projection alone {r['project_ms']:.2f} ms" if r["project_ms"] else "")
                + f", compile {r['compile_s']:.1f} s", flush=True)
  finally:
    unroll_lib.ACCELERATOR_SCAN_UNROLL = default_unroll
  meta = run_metadata("float32")
  command = " ".join(["lm_step.py"] + (argv if argv is not None else sys.argv[1:]))
  lines = [f"# One vmapped training step of the Miller & Hardt {args.task} rows",
           "", f"Device: {meta['device_kind']} ({meta['platform']}), jax {meta['versions']['jax']}, "
           f"git {meta['git_sha']} (dirty={meta['git_dirty']}). Command: `{command}`. "
           f"Median of {args.n} steps after 2 warm-ups; the batch is the task's first "
           "training batch.", "",
           "| backbone | group | models | unroll | step ms | projection alone ms | "
           "tokens/s per model | compile s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    proj = f"{r['project_ms']:.2f}" if r["project_ms"] is not None else "–"
    lines.append(f"| {r['backbone']} | {r['group']} | {r['members']} | {r['unroll']} | "
                 f"{r['step_ms']:.2f} | {proj} | {r['tokens_per_s_per_model']:,.0f} | "
                 f"{r['compile_s']:.1f} |")
  table = "\n".join(lines) + "\n"
  print(table)
  os.makedirs(args.out, exist_ok=True)
  write_atomic(os.path.join(args.out, "lm_step.json"),
               json.dumps({"command": command, "meta": meta, "rows": rows}, indent=1))
  write_atomic(os.path.join(args.out, "lm_step.md"), table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
