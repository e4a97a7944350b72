"""How much does training several models in one vmapped program save?

Small recurrent models leave the hardware mostly idle (the Miller & Hardt JSB
setup trains one sequence per step), so ``seqbench sweep --vmap`` trains the
seeds and stable/unstable variants of a row as one program
(:func:`seqbench.train.run_experiments_vmapped`). This measures the speed-up:
for each experiment and group size G, the same capped run (``max_steps`` steps
of one epoch, evaluation capped to one batch) is trained as one program of G
members, and the throughput per model (``tokens_per_s`` of the rows, which
leaves out compiling steps) is compared with G = 1 measured in the same
invocation::

  speed-up(G) = G * tokens_per_s(G) / tokens_per_s(1)

i.e. how many times faster G runs finish together than one after the other.
Members are seeds 0 .. G-1 of the same experiment, so that every member
does the same work as the G = 1 reference.

  python benchmarks/vmap_training.py --out benchmarks/results/cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from seqbench import train as train_lib
from seqbench.provenance import run_metadata, write_atomic

DEFAULT_EXPERIMENTS = ("mh-jsb-rnn-unstable", "mh-jsb-lstm-unstable")


def measure(experiment: str, group: int, max_steps: int) -> float:
  """Training tokens/s per model of a capped vmapped run of ``group`` members."""
  caps = {"train.epochs": 1, "train.max_steps_per_epoch": max_steps,
          "train.max_eval_batches": 1, "train.contraction_every": 0}
  specs = [(experiment, seed, caps) for seed in range(group)]
  with tempfile.TemporaryDirectory() as out:
    if group == 1:
      rows = [train_lib.run_experiment(specs[0][0], seed=0, out_dir=out, overrides=caps,
                                       progress=False)]
    else:
      rows = train_lib.run_experiments_vmapped(specs, out_dir=out, progress=False)
  return rows[0]["tokens_per_s"]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--experiments", default=",".join(DEFAULT_EXPERIMENTS))
  p.add_argument("--groups", default="1,2,6", help="group sizes; 1 is the reference")
  p.add_argument("--max-steps", type=int, default=120)
  p.add_argument("--out", required=True, help="directory for vmap_training.{json,md}")
  args = p.parse_args(argv)
  groups = sorted({int(g) for g in args.groups.split(",")} | {1})
  results = []
  for name in args.experiments.split(","):
    ref = None
    for g in groups:
      rate = measure(name, g, args.max_steps)
      ref = rate if g == 1 else ref
      results.append({"experiment": name, "group": g, "tokens_per_s_per_model": rate,
                      "speedup_vs_sequential": g * rate / ref})
      print(f"{name} G={g}: {rate:,.0f} tokens/s per model, "
            f"{g * rate / ref:.2f}x vs {g} runs one after the other", flush=True)
  meta = run_metadata("float32")
  os.makedirs(args.out, exist_ok=True)
  write_atomic(os.path.join(args.out, "vmap_training.json"),
               json.dumps({"results": results, "max_steps": args.max_steps, "meta": meta},
                          indent=1))
  lines = ["# Training G models in one vmapped program vs one after the other", "",
           f"`python benchmarks/vmap_training.py` on {meta.get('device_kind')} "
           f"(git {str(meta.get('git_sha'))[:10]}): {args.max_steps} steps of the capped run, "
           "tokens/s per model leaves out compiling steps.", "",
           "| experiment | G | tokens/s per model | speed-up vs G sequential runs |",
           "|---|---:|---:|---:|"]
  lines += [f"| {r['experiment']} | {r['group']} | {r['tokens_per_s_per_model']:,.0f} "
            f"| {r['speedup_vs_sequential']:.2f}x |" for r in results]
  write_atomic(os.path.join(args.out, "vmap_training.md"), "\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
