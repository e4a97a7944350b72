"""Measure host-side loader throughput of the tasks.

Usage::

    python -m seqbench.tasks.throughput [NAME ...] [--seconds S] [--json]

For each task (default: all whose data is available) it times iterating the
training split with the batch shapes of the published setups (pytorch/examples
and the TCN code), after one warm-up pass that loads the data (reported
separately as ``load_s``: Arrow-cache hit or build). Reported per task:
batches/s, examples (rows)/s, scored units/s (tokens, frames, pixels or steps:
the ``mask`` sum for sequence outputs, times 784 or T for per-sequence
outputs), and microseconds per batch -- the figure to compare with a train
step's time.

:func:`measure` is the function behind it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any, Optional, Sequence


from seqbench.tasks import registry
from seqbench.tasks.storage import DataError

#: (batch_size, batches() keyword arguments) per task: the published setups.
SETUPS: dict[str, tuple[int, dict[str, Any]]] = {
    "wikitext2": (20, {"length": 35}),    # pytorch/examples word_language_model
    "ptb-word": (20, {"length": 35}),
    "ptb-char": (32, {"length": 400}),    # TCN char_cnn: batch 32, seq_len 400
    "jsb": (1, {}),                       # TCN poly_music: one sequence per step
    "nottingham": (1, {}),
    "smnist": (64, {}),                   # TCN mnist_pixel: batch 64
    "pmnist": (64, {}),
    "adding": (32, {}),                   # TCN adding_problem: batch 32
    "copy": (32, {}),                     # TCN copy_memory: batch 32
}


def _units(batch: dict) -> int:
  mask = batch["mask"]
  if mask.ndim >= 2:
    return int(mask.sum())
  # One output per sequence: count the input steps the model consumes.
  return int(mask.sum()) * int(batch["inputs"].shape[1])


def measure(name: str, *, seconds: float = 2.0, batch_size: Optional[int] = None,
            data_dir: Optional[str] = None, **batch_kwargs) -> dict:
  """Time ``task.batches("train", ...)``.

  Args:
    name: task name.
    seconds: time budget for the timed passes (at least one full batch).
    batch_size: override the published batch size.
    data_dir: data root.
    **batch_kwargs: override the published ``batches`` arguments.

  Returns:
    ``{"name", "batch_size", "load_s", "batches_per_s", "examples_per_s",
    "units_per_s", "us_per_batch"}``.
  """
  default_b, default_kw = SETUPS.get(name, (32, {}))
  b = batch_size or default_b
  kw = dict(default_kw, **batch_kwargs)
  task = registry.get_task(name, data_dir=data_dir)
  t0 = time.perf_counter()
  next(iter(task.batches("train", b, **kw)))  # loads (and caches) the data
  load_s = time.perf_counter() - t0
  batches = examples = units = 0
  start = time.perf_counter()
  for epoch in itertools.count():
    for batch in task.batches("train", b, epoch=epoch, **kw):
      batches += 1
      examples += batch["inputs"].shape[0]
      units += _units(batch)
      if time.perf_counter() - start > seconds:
        break
    if time.perf_counter() - start > seconds:
      break
  elapsed = time.perf_counter() - start
  return {
      "name": name,
      "batch_size": b,
      "kwargs": kw,
      "load_s": round(load_s, 3),
      "batches_per_s": round(batches / elapsed, 1),
      "examples_per_s": round(examples / elapsed, 1),
      "units_per_s": round(units / elapsed),
      "us_per_batch": round(1e6 * elapsed / batches, 1),
  }


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m seqbench.tasks.throughput",
                                   description="Host-side loader throughput per task.")
  parser.add_argument("names", nargs="*", help="tasks (default: all with data available)")
  parser.add_argument("--seconds", type=float, default=2.0, help="time budget per task")
  parser.add_argument("--data-dir", metavar="DIR", help="data root")
  parser.add_argument("--json", action="store_true", help="print JSON lines")
  args = parser.parse_args(argv)
  names = args.names or registry.task_names()
  status = 0
  if not args.json:
    print(f"{'task':<11} {'B':>4} {'load s':>7} {'batches/s':>10} {'examples/s':>11} "
          f"{'units/s':>12} {'us/batch':>9}")
  for name in names:
    try:
      r = measure(name, seconds=args.seconds, data_dir=args.data_dir)
    except DataError as e:
      print(f"{name}: skipped: {e}", file=sys.stderr)
      status = 1 if args.names else status
      continue
    if args.json:
      print(json.dumps(r))
    else:
      print(f"{name:<11} {r['batch_size']:>4} {r['load_s']:>7.2f} {r['batches_per_s']:>10,.0f} "
            f"{r['examples_per_s']:>11,.0f} {r['units_per_s']:>12,} {r['us_per_batch']:>9,.1f}")
  return status


if __name__ == "__main__":
  sys.exit(main())
