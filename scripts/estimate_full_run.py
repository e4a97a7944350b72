"""Estimate the cost of full runs from short, capped runs of the same experiments.

Where a full run does not fit the machine (Miller & Hardt's Wikitext-2 rows on
a 2-core CPU), run the same sweep capped (``--set train.epochs=1 --set
train.max_steps_per_epoch=N``) and extrapolate from the measured training
throughput. The command this was made for::

  seqbench sweep 'mh-wikitext2-*' --seeds 3 --vmap --set train.epochs=1 \\
      --set train.max_steps_per_epoch=40 --set train.max_eval_batches=5 \\
      --out benchmarks/results/cpu/wikitext2-throughput
  python scripts/estimate_full_run.py benchmarks/results/cpu/wikitext2-throughput

For each vmapped group (the runs that trained together in one program) the
estimate is ``units per epoch x registered epochs / tokens_per_s``, where
``tokens_per_s`` is the row's measured rate per model (compilation excluded;
the members of a group train simultaneously, so a group costs what one member
does) and ``units per epoch`` is counted from the task's real training batches.
Evaluation passes are not included (forward only, about a tenth of the
training tokens for Wikitext-2), so the estimate is a lower bound. When the
same experiment and seed were measured more than once (a changed config is a
new run id in the same folder), only the last row counts. A row whose settings
differ from today's registered experiment (beyond the caps) is left out and
listed: its rate measured another model.

Writes ``DIR/estimate.md`` and ``DIR/estimate.json`` atomically with the
provenance of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from seqbench import experiments
from seqbench import report
from seqbench import train as train_lib
from seqbench.provenance import run_metadata, write_atomic


def units_per_epoch(exp) -> int:
  """Scored training units of one epoch, from the task's real batches."""
  trainer = train_lib._Trainer([train_lib._Member(exp, 0, "estimate")], "/nonexistent",  # pylint: disable=protected-access
                               batched=False, smoke=False, progress=False)
  # The same count as the rate's numerator (train._units), over a whole epoch.
  return int(sum(train_lib._units(b) for b in trainer.data.batches("train", train=True)))  # pylint: disable=protected-access


def latest_capped(rows: list[dict]) -> tuple[list[dict], list[dict]]:
  """The capped rows, the last of each (experiment, seed), and the earlier ones."""
  capped = [r for r in rows if r["config"]["train"].get("max_steps_per_epoch")]
  last = {(r["experiment"], r.get("seed")): r for r in capped}
  kept = list(last.values())
  return kept, [r for r in capped if all(r is not k for k in kept)]


#: Train settings a capped run may change without changing its training rate
#: (the caps, evaluation, bookkeeping).
CAP_FIELDS = ("epochs", "max_steps_per_epoch", "max_eval_batches", "eval_batch_size") + train_lib.BOOKKEEPING_FIELDS


def registry_changes(row: dict) -> list[str]:
  """Settings of a capped row that differ from its experiment as registered today.

  The report's comparison with the registry (``seqbench report``'s settings
  column), less the caps.
  """
  _, registered = report._registered(row["experiment"], False)  # pylint: disable=protected-access
  diff = report._overrides(report._group_config(row), registered) or []  # pylint: disable=protected-access
  return [k for k in diff if not (k.startswith("train.") and k.split(".")[-1] in CAP_FIELDS)]


def stale_rows(rows: list[dict]) -> list[tuple[dict, list[str]]]:
  """The latest capped rows measured with settings registered differently since."""
  return [(r, d) for r in latest_capped(rows)[0] if (d := registry_changes(r))]


def estimate(rows: list[dict]) -> list[dict]:
  capped = [r for r in latest_capped(rows)[0] if not registry_changes(r)]
  if not capped:
    raise SystemExit("no capped rows (train.max_steps_per_epoch > 0) of the registered "
                     "settings to extrapolate from")
  groups: dict = {}
  for r in capped:
    full = experiments.get_experiment(r["experiment"])  # the registered, uncapped run
    groups.setdefault(train_lib.vmap_key(full), []).append((r, full))
  out = []
  for members in groups.values():
    full = members[0][1]
    units = units_per_epoch(full)
    rates = [r["tokens_per_s"] for r, _ in members if r.get("tokens_per_s")]
    rate = sum(rates) / len(rates)
    seconds = units * full.train.epochs / rate
    out.append({
        "experiments": sorted({r["experiment"] for r, _ in members}),
        "runs": len(members),
        "vmap_group_size": max(r["config"]["vmap_group_size"] for r, _ in members),
        "measured_steps": max(r["steps"] for r, _ in members),
        "tokens_per_s_per_model": rate,
        "units_per_epoch": units,
        "epochs": full.train.epochs,
        "estimated_hours": seconds / 3600,
        "device_kind": members[0][0].get("device_kind"),
        "git_sha": members[0][0].get("git_sha"),
    })
  return out


def render(groups: list[dict], directory: str, superseded: list[dict] = (),
           stale: list[tuple[dict, list[str]]] = ()) -> str:
  lines = [f"# Full-run estimate from capped runs in `{directory}`", "",
           "Generated by `python scripts/estimate_full_run.py`: training time only "
           "(evaluation not included), from each group's measured tokens/s per model.", "",
           "| runs (trained together) | experiments | measured steps | tokens/s per model "
           "| units/epoch | epochs | estimated hours | git |",
           "|---|---|---|---:|---:|---:|---:|---|"]
  for g in groups:
    lines.append(f"| {g['runs']} (group of {g['vmap_group_size']}) | {', '.join(g['experiments'])} "
                 f"| {g['measured_steps']} | {g['tokens_per_s_per_model']:,.0f} "
                 f"| {g['units_per_epoch']:,} | {g['epochs']} | {g['estimated_hours']:.1f} "
                 f"| {str(g['git_sha'])[:7]} |")
  total = sum(g["estimated_hours"] for g in groups)
  lines += ["", f"All groups one after the other: **{total:.1f} h** on {groups[0]['device_kind']}."]
  if superseded:
    lines += ["", "Left out, superseded by a later row of the same experiment and seed: "
              + ", ".join(f"{r['experiment']} seed {r.get('seed')} (run {r.get('run_id')}, "
                          f"git {str(r.get('git_sha'))[:7]})" for r in superseded) + "."]
  if stale:
    lines += ["", "Left out, registered with other settings since they were measured: "
              + ", ".join(f"{r['experiment']} seed {r.get('seed')} ({', '.join(d)})"
                          for r, d in stale) + "."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("directory")
  args = p.parse_args(argv)
  rows = train_lib.read_results(args.directory)
  if not rows:
    print(f"estimate_full_run: no results.jsonl rows in {args.directory}", file=sys.stderr)
    return 2
  groups = estimate(rows)
  md = render(groups, args.directory, latest_capped(rows)[1], stale_rows(rows))
  write_atomic(os.path.join(args.directory, "estimate.json"),
               json.dumps({"groups": groups, "meta": run_metadata("float32")}, indent=1))
  write_atomic(os.path.join(args.directory, "estimate.md"), md)
  print(md, end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
