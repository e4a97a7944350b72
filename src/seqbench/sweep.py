r"""Resumable, shardable sweeps: ``seqbench sweep EXPERIMENT_OR_GLOB... --seeds N --out DIR``.

The grid is data: :func:`build_grid` turns experiment names, globs and grid
names (:data:`seqbench.experiments.GRIDS`) into a list of :class:`GridPoint`
(experiment name, seed, overrides, ``run_id``) in a deterministic order:
patterns in the order given, within a pattern the registry order, within an
experiment seeds ``0 .. N-1``; an experiment matched twice appears once.

``--shard i/n`` keeps the points whose grid index is ``i`` modulo ``n``
(:func:`shard`): every point is in exactly one shard, and hosts running the
same command with ``0/n`` ... ``n-1/n`` split the grid between them (each into
shared storage or its own directory; ``seqbench report`` merges directories).
All hosts must run the same command with the same code version.

Resuming: the sweep itself keeps no state. Completed runs are the rows of
``OUT/results.jsonl`` (appended atomically by :mod:`seqbench.train`), and an
interrupted run continues from its checkpoint in ``OUT/checkpoints/RUN_ID``;
so re-running the same command after a SIGKILL skips what is done, resumes the
run that was in progress, and loses at most the steps since its last
checkpoint. ``--vmap`` trains the pending runs that share shapes and settings together in
one compiled program (:func:`vmap_groups`: the seeds of an experiment and its
stable/unstable or λ variants -- for music tasks one seed's variants;
:func:`seqbench.train.run_experiments_vmapped`, equal to separate runs); then a
kill loses at most the group in progress.

Exit status: 0 when every run of the shard has a row; 1 when some run failed
(missing data, a config the task rejects -- the others still run); 2 for bad
input (one line on stderr, nothing run).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import signal
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from seqbench import provenance
from seqbench.experiments import ConfigError, expand_patterns, parse_set_args


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """One run of a sweep.

  Attributes:
    index: position in the whole (unsharded) grid.
    experiment: registered experiment name.
    seed: the run's seed.
    overrides: the ``--set`` overrides as sorted ``(key, value)`` pairs.
    run_id: :func:`seqbench.train.run_id` of the resolved run (what
      ``results.jsonl`` is keyed by).
  """

  index: int
  experiment: str
  seed: int
  overrides: tuple = ()
  run_id: str = ""

  def spec(self) -> tuple:
    """``(experiment, seed, overrides)`` as :mod:`seqbench.train` takes it."""
    return (self.experiment, self.seed, dict(self.overrides))


def build_grid(patterns: Sequence[str], seeds: int, overrides: Optional[Mapping[str, Any]] = None,
               smoke: bool = False) -> list[GridPoint]:
  """The sweep's grid: every matched experiment x seeds ``0 .. seeds-1``.

  Every point is resolved (smoke, then overrides), so a bad override is an
  error here, before anything runs.

  Raises:
    ConfigError: unknown experiment, empty glob, ``seeds < 1``, bad override.
  """
  # Imported here: train pulls in the whole model stack.
  from seqbench import train as train_lib  # pylint: disable=g-import-not-at-top
  if seeds < 1:
    raise ConfigError(f"--seeds must be >= 1, got {seeds}")
  overrides = dict(overrides or {})
  ov = tuple(sorted(overrides.items()))
  points = []
  for name in expand_patterns(patterns):
    try:
      exp = train_lib.resolve(name, overrides, smoke)
    except ConfigError as e:
      raise ConfigError(f"{name}: {e}") from None
    for seed in range(seeds):
      points.append(GridPoint(len(points), name, seed, ov, train_lib.run_id(exp, seed, smoke)))
  return points


_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
  """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (raises ConfigError)."""
  m = _SHARD_RE.match(text or "")
  if not m:
    raise ConfigError(f"--shard expects I/N with integers 0 <= I < N, got {text!r}")
  i, n = int(m.group(1)), int(m.group(2))
  if n < 1 or i >= n:
    raise ConfigError(f"--shard expects I/N with 0 <= I < N, got {text!r}")
  return i, n


def shard(points: Sequence[GridPoint], i: int, n: int, vmap: bool = False,
          smoke: bool = False) -> list[GridPoint]:
  """The points of shard ``i`` of ``n``, round robin.

  Without ``vmap``: grid index ``i`` modulo ``n``. With it, whole
  :func:`vmap_groups` are dealt out instead (group ``i``, ``i + n``, ...), so
  that the seeds and variants one program trains together stay on one host.
  Round robin balances the shards when costs grow along the grid (e.g. the k
  of a truncation grid), and the shards partition the grid for every ``n``.
  """
  if not 0 <= i < n:
    raise ConfigError(f"--shard expects I/N with 0 <= I < N, got {i}/{n}")
  if vmap:
    groups = vmap_groups(points, vmap=True, smoke=smoke)
    return sorted((p for g in groups[i::n] for p in g), key=lambda p: p.index)
  return [p for p in points if p.index % n == i]


def vmap_groups(points: Sequence[GridPoint], vmap: bool,
                smoke: bool = False) -> list[list[GridPoint]]:
  """The runs to train together, in the order of each group's first point.

  Without ``vmap`` every run is its own group. With it, all points whose
  resolved experiments share :func:`seqbench.train.vmap_key` form one group:
  the seeds of an experiment, and also its variants that differ only in
  ``stable``, ``lam``, ``projection`` or ``lr`` (a Table 1 stable/unstable
  pair, a λ sweep).
  Small recurrent models leave the hardware mostly idle, so a group costs
  little more than one run. Where seeds give batches of different lengths
  (music: :func:`seqbench.train.vmap_seeds_together`) each seed is its own
  group, since one program would pad all to the longest.
  """
  if not vmap:
    return [[p] for p in points]
  from seqbench import train as train_lib  # pylint: disable=g-import-not-at-top
  groups: dict[tuple, list[GridPoint]] = {}
  for p in points:
    exp = train_lib.resolve(p.experiment, dict(p.overrides), smoke)
    seed = () if train_lib.vmap_seeds_together(exp) else (p.seed,)
    groups.setdefault((train_lib.vmap_key(exp),) + seed, []).append(p)
  return list(groups.values())


def seeds_apart_note(points: Sequence[GridPoint], smoke: bool = False) -> Optional[str]:
  """Under ``--vmap``, which experiments' pending seeds still train one at a time.

  Seeds whose batches differ in length (music) are never grouped
  (:func:`vmap_groups`); saying so keeps a ``--vmap`` sweep from being
  mistaken for a vmapped one when its cost is estimated.
  """
  from seqbench import train as train_lib  # pylint: disable=g-import-not-at-top
  first: dict[str, GridPoint] = {}
  seeds: dict[str, set] = {}
  for p in points:
    first.setdefault(p.experiment, p)
    seeds.setdefault(p.experiment, set()).add(p.seed)
  apart = [name for name, s in seeds.items() if len(s) > 1 and not train_lib.vmap_seeds_together(
      train_lib.resolve(name, dict(first[name].overrides), smoke))]
  if not apart:
    return None
  return (f"--vmap: the seeds of {', '.join(apart)} train one at a time (each seed's batches "
          "have other lengths; seqbench.train.vmap_seeds_together)")


def _status(row: Mapping[str, Any]) -> str:
  if row.get("diverged"):
    return f"DIVERGED at step {row.get('diverged_step')}"
  value = row.get("test_metric")
  shown = "none" if value is None else f"{value:.4g}"
  return f"done test {row.get('metric_name')} {shown} ({row.get('wall_s', 0):.1f} s)"


def run_sweep(points: Sequence[GridPoint], out_dir: str, *, smoke: bool = False,
              vmap: bool = False, progress: Optional[bool] = False, log=None) -> int:
  """Run the points not yet in ``out_dir/results.jsonl``; one progress line per run.

  Returns the number of runs that failed (missing data, a config the task
  rejects); the others still run.
  """
  from seqbench import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from seqbench import train as train_lib  # pylint: disable=g-import-not-at-top
  log = log or (lambda msg: print(msg, flush=True))
  total = len(points)
  pos = {p.index: k for k, p in enumerate(points, start=1)}

  def line(p: GridPoint, status: str) -> None:
    log(f"[{pos[p.index]}/{total}] {p.experiment} seed {p.seed}: {status}")

  done = {r.get("run_id") for r in train_lib.read_results(out_dir)}
  pending = []
  for p in points:
    if p.run_id in done:
      line(p, "skipped (already in results.jsonl)")
    else:
      pending.append(p)
  failed = 0
  note = seeds_apart_note(pending, smoke) if vmap else None
  if note:
    print(note, file=sys.stderr, flush=True)
  queue = collections.deque(vmap_groups(pending, vmap, smoke))
  while queue:
    group = queue.popleft()
    for p in group:  # a start line on stderr; the one status line per run goes to stdout
      print(f"[{pos[p.index]}/{total}] {p.experiment} seed {p.seed}: running"
            + (f" (vmapped with {len(group) - 1} more)" if len(group) > 1 else ""),
            file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
      if len(group) == 1:
        p = group[0]
        rows = [train_lib.run_experiment(p.experiment, seed=p.seed, out_dir=out_dir,
                                         overrides=dict(p.overrides), smoke=smoke,
                                         progress=progress)]
      else:
        rows = train_lib.run_experiments_vmapped([p.spec() for p in group], out_dir=out_dir,
                                                 smoke=smoke, progress=progress)
    except (ConfigError, tasks_lib.DataError) as e:
      failed += len(group)
      for p in group:
        line(p, f"FAILED: {e}")
      continue
    except train_lib.RunInProgress as e:
      # Not a failure: that run is another process's to finish (a rerun then
      # skips it, or resumes it if that process stopped). The rest of its
      # group is nobody's: it trains without it.
      locked = [p for p in group if p.run_id == e.run_id]
      for p in locked:
        line(p, f"skipped ({e})")
      rest = [p for p in group if p.run_id != e.run_id]
      if rest:
        queue.appendleft(rest)
      continue
    for p, row in zip(group, rows):
      line(p, _status(row) + (f" [group {time.monotonic() - t0:.1f} s]"
                              if len(group) > 1 else ""))
  return failed


class _ArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
  p = _ArgumentParser(
      prog="seqbench sweep",
      description=("Run named experiments x seeds into one directory; re-running the same "
                   "command skips finished runs and resumes interrupted ones."))
  p.add_argument("patterns", nargs="+", metavar="EXPERIMENT_OR_GLOB",
                 help="experiment names, globs (quote them) or grid names (seqbench list)")
  p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per experiment (default 1)")
  p.add_argument("--out", required=True, help="output directory (results.jsonl, curves/)")
  p.add_argument("--smoke", action="store_true", help="< 1 minute per run")
  p.add_argument("--shard", default="0/1", metavar="I/N",
                 help=("run only grid points with index = I mod N (0 <= I < N); with --vmap, "
                       "only the vmap groups with index = I mod N"))
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field in every run (as seqbench train)")
  p.add_argument("--vmap", action="store_true",
                 help=("train runs that differ only in seed, stable, lam, projection or lr "
                       "together (vmap over models; for music tasks, only runs with the same "
                       "seed)"))
  p.add_argument("--dry-run", action="store_true",
                 help="print the shard's grid (index, run_id, done/pending) and run nothing")
  p.add_argument("--progress", action="store_true", help="per-run progress bars on stderr")
  return p


def sweep_main(argv=None) -> int:
  """``seqbench sweep EXPERIMENT_OR_GLOB... --seeds N --out DIR [--smoke] [--shard i/n] [--set ...]``."""
  argv = sys.argv[1:] if argv is None else list(argv)
  # `--shard -1/2` would read as an option to argparse; take the next word as its value.
  argv = [f"--shard={argv[k + 1]}" if a == "--shard" and k + 1 < len(argv) else a
          for k, a in enumerate(argv) if not (k > 0 and argv[k - 1] == "--shard")]
  try:
    args = _parser().parse_args(argv)
    overrides = parse_set_args(args.set)
    i, n = parse_shard(args.shard)
    points = shard(build_grid(args.patterns, args.seeds, overrides, args.smoke), i, n,
                   vmap=args.vmap, smoke=args.smoke)
  except ConfigError as e:
    print(f"seqbench sweep: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    from seqbench.train import read_results  # pylint: disable=g-import-not-at-top
    done = {r.get("run_id") for r in read_results(args.out)}
    for p in points:
      ov = " ".join(f"{k}={v}" for k, v in p.overrides)
      print(f"{p.index}\t{p.run_id}\t{'done' if p.run_id in done else 'pending'}\t"
            f"{p.experiment}\tseed={p.seed}" + (f"\t{ov}" if ov else ""))
    return 0
  # Read the commit before this command writes anything. A sweep's output is
  # often appended to a tracked log in its results folder (`>> sweep.log`);
  # read after its first line, git would show that log as changed and every
  # row would say git_dirty. (git_state is cached: the trainers reuse this.)
  provenance.git_state()
  from seqbench.train import ensure_out_dir  # pylint: disable=g-import-not-at-top
  try:
    ensure_out_dir(args.out)
  except ConfigError as e:
    print(f"seqbench sweep: {e}", file=sys.stderr)
    return 2
  print(f"seqbench sweep: {len(points)} runs (shard {i}/{n}) -> "
        f"{os.path.join(args.out, 'results.jsonl')}", flush=True)
  from seqbench.train import TrainingInterrupted  # pylint: disable=g-import-not-at-top
  try:
    failed = run_sweep(points, args.out, smoke=args.smoke, vmap=args.vmap,
                       progress=True if args.progress else False)
  except TrainingInterrupted as e:
    print(f"seqbench sweep: {e}; runs still pending stay pending", file=sys.stderr)
    return 128 + signal.SIGTERM
  if failed:
    print(f"seqbench sweep: {failed} of {len(points)} runs failed", file=sys.stderr)
    return 1
  return 0


__all__ = ["GridPoint", "build_grid", "expand_patterns", "parse_shard", "shard", "run_sweep",
           "sweep_main"]


if __name__ == "__main__":
  sys.exit(sweep_main(sys.argv[1:]))
