"""The accuracy half of ``seqbench bench``: short, real training runs on JSB.

Every model of the comparison trains on JSB Chorales (vendored, so it runs
offline on a fresh clone) with one shared setting -- Adam 1e-3, clip 1, batch
16, hidden 128, no learning-rate decay -- for a few epochs (``default``: 3,
``full``: 30), so they can be put side by side with their training throughput
measured in the same runs. These are *fewer epochs than the published
experiments* (``seqbench list`` has those, with their published numbers): the
point is the comparison between models at equal size and budget, not the
published value.

Rows: recurrent scan models unstable and stable (trained together, vmapped), a
recurrent model *trained* truncated at k=4, and a TCN. Every recurrent run is
also evaluated as the truncated model at k in {4, 16} (``eval_ks``) and
reports its certified bound and measured contraction.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from seqbench import train as train_lib


@dataclasses.dataclass(frozen=True)
class AccuracySuite:
  epochs: int
  seeds: int


ACCURACY_SUITES = {"default": AccuracySuite(epochs=3, seeds=1),
                   "full": AccuracySuite(epochs=30, seeds=3)}

#: The shared setting (overrides of the named experiments).
COMMON = {"train.optimizer": "adam", "train.lr": "0.001", "train.clip": "1",
          "train.batch_size": "16", "train.lr_schedule": "none", "hidden_size": "128",
          "train.eval_ks": "4,16"}

#: (label, [experiment names trained together], extra overrides).
GROUPS = (
    ("tanh-RNN scan", ["mh-jsb-rnn-unstable", "mh-jsb-rnn-stable"], {}),
    ("LSTM scan", ["mh-jsb-lstm-unstable", "mh-jsb-lstm-stable"], {}),
    ("tanh-RNN trained truncated(k=4)", ["trunc-train-jsb-rnn-unstable-k4"], {}),
    ("TCN", ["tcn-jsb-tcn"], {"train.eval_ks": ""}),
)


def _curves(out_dir: str, rid: str) -> dict:
  path = os.path.join(out_dir, "curves", f"{rid}.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def run_accuracy(suite: str, out_dir: str, progress: Optional[bool] = None) -> list:
  """Train the comparison; returns one summary row per run (also in ``out_dir``)."""
  spec = ACCURACY_SUITES[suite]
  rows = []
  for label, names, extra in GROUPS:
    overrides = {**COMMON, "train.epochs": str(spec.epochs), **extra}
    if not overrides["train.eval_ks"]:
      del overrides["train.eval_ks"]
    specs = [(name, seed, overrides) for seed in range(spec.seeds) for name in names]
    print(f"[accuracy] {label}: {', '.join(names)} x {spec.seeds} seed(s), "
          f"{spec.epochs} epochs", flush=True)
    results = train_lib.run_experiments_vmapped(specs, out_dir=out_dir, progress=progress)
    for row in results:
      curves = _curves(out_dir, row["run_id"])
      trunc = {f"test_metric_k{t['k']}": t["test_metric"] for t in curves.get("truncation", [])}
      trunc.update({f"gap_max_k{t['k']}": t["gap_max"] for t in curves.get("truncation", [])})
      variant = "stable" if row["stable"] else "unstable"
      rows.append({
          "label": f"{label} ({variant})" if len(names) > 1 else label,
          "experiment": row["experiment"], "seed": row["seed"], "executor": row["executor"],
          "k": row["k"], "stable": row["stable"], "lam": row["lam"],
          "metric_name": row["metric_name"], "valid_metric": row["valid_metric"],
          "test_metric": row["test_metric"], "epochs": row["epochs"],
          "tokens_per_s": row["tokens_per_s"], "wall_s": row["wall_s"],
          # tokens/s is per model while the clock ran for the whole vmapped
          # program: rows of different group sizes do not compare as speeds.
          "vmap_group_size": row["config"].get("vmap_group_size", 1),
          "diverged": row["diverged"], "certified_bound": row["certified_bound"],
          "empirical_contraction": row["empirical_contraction"], "run_id": row["run_id"], **trunc})
  return rows


def _fmt(x, digits=3):
  if x is None:
    return "–"
  return f"{x:,.{digits}f}" if isinstance(x, float) else str(x)


def accuracy_table(rows: list) -> str:
  lines = ["| model | seed | test NLL | valid NLL | test NLL as truncated k=4 / k=16 "
           "| train tokens/s per model | models trained together | certified λ "
           "| measured contraction |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    trunc = " / ".join(_fmt(r.get(f"test_metric_k{k}")) for k in (4, 16))
    lines.append(f"| {r['label']} | {r['seed']} | {_fmt(r['test_metric'])} | "
                 f"{_fmt(r['valid_metric'])} | {trunc} | {_fmt(r['tokens_per_s'], 0)} | "
                 f"{r.get('vmap_group_size', '–')} | "
                 f"{_fmt(r['certified_bound'])} | {_fmt(r['empirical_contraction'])} |")
  return "\n".join(lines)
