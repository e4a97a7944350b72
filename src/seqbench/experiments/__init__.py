"""Named experiments: one frozen config per published row, grids as data.

``EXPERIMENTS`` maps a name to an :class:`Experiment` (a plain dict: the
registry is data, not a chain of ifs); ``GRIDS`` maps a grid name to its base
experiment and override dicts (every grid point is also in ``EXPERIMENTS``).

* ``mh-*``: Miller & Hardt (2019) Table 1 (:mod:`.miller_hardt`);
* ``tcn-*``: Bai et al. (2018) Table 1 (:mod:`.tcn`);
* ``trunc-eval-*``, ``trunc-train-*``, ``lam-*``: the truncation studies and the
  λ sweep (:mod:`.studies`).

Each experiment's ``doc`` gives the command, the expected cost on CPU and GPU,
and the published number; ``seqbench list`` prints them all.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from typing import Mapping, Sequence

from seqbench.experiments import miller_hardt
from seqbench.experiments import studies
from seqbench.experiments import tcn
from seqbench.experiments.config import (ConfigError, Experiment, TrainConfig,
                                         apply_overrides, parse_set_args, smoke)
from seqbench.experiments.studies import Grid


def _build() -> dict[str, Experiment]:
  out: dict[str, Experiment] = {}
  for exp in miller_hardt.experiments() + tcn.experiments() + studies.experiments():
    if exp.name in out:
      raise RuntimeError(f"duplicate experiment name {exp.name!r}")
    out[exp.name] = exp
  return out


EXPERIMENTS: Mapping[str, Experiment] = _build()
GRIDS: Mapping[str, Grid] = studies.grids()


def names() -> list[str]:
  return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
  """The experiment registered as ``name``.

  Raises:
    ConfigError: unknown name (with the closest names as a hint).
  """
  try:
    return EXPERIMENTS[name]
  except KeyError:
    close = difflib.get_close_matches(name, EXPERIMENTS, n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"unknown experiment {name!r}{hint} (`seqbench list` shows all "
                      f"{len(EXPERIMENTS)})") from None


def match(patterns) -> list[Experiment]:
  """Experiments whose name matches any of the glob ``patterns``, in registry order."""
  return [e for n, e in EXPERIMENTS.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def expand_patterns(patterns: Sequence[str]) -> list[str]:
  """Experiment names for names, globs and grid names, in order, without repeats.

  Raises:
    ConfigError: a pattern that names or matches nothing.
  """
  names: list[str] = []
  for pat in patterns:
    if pat in EXPERIMENTS:
      found = [pat]
    elif pat in GRIDS:
      found = [e.name for e in GRIDS[pat].expand()]
    else:
      found = [e.name for e in match([pat])]
      if not found:
        if any(c in pat for c in "*?["):
          raise ConfigError(f"no experiment matches {pat!r} (`seqbench list` shows all "
                            f"{len(EXPERIMENTS)})")
        # An unknown plain name: let the registry phrase it (with a hint).
        get_experiment(pat)
    for n in found:
      if n not in names:
        names.append(n)
  return names


class _ArgumentParser(argparse.ArgumentParser):

  def error(self, message):
    raise ConfigError(message)


def list_main(argv=None) -> int:
  """``seqbench list [--json] [PATTERN ...]``: the named experiments."""
  parser = _ArgumentParser(prog="seqbench list", description="List the named experiments.")
  parser.add_argument("patterns", nargs="*", help="glob patterns (default: all)")
  parser.add_argument("--json", action="store_true", help="one JSON list of objects")
  try:
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
  except ConfigError as e:
    print(f"seqbench list: {e}", file=sys.stderr)
    return 2
  try:
    exps = ([EXPERIMENTS[n] for n in expand_patterns(args.patterns)] if args.patterns
            else list(EXPERIMENTS.values()))
  except ConfigError as e:
    print(f"seqbench list: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps([e.summary() for e in exps], indent=1))
    return 0
  width = max((len(e.name) for e in exps), default=4)
  print(f"{'name':<{width}}  {'task':<10} {'model':<7} {'published':>10}  cost (CPU | GPU)")
  for e in exps:
    pub = "" if e.published is None else f"{e.published:g}"
    print(f"{e.name:<{width}}  {e.task:<10} {e.model.backbone:<7} {pub:>10}  "
          f"{e.cost_cpu} | {e.cost_gpu}")
  return 0


__all__ = ["EXPERIMENTS", "GRIDS", "Experiment", "TrainConfig", "Grid", "ConfigError",
           "get_experiment", "names", "match", "expand_patterns", "apply_overrides",
           "parse_set_args", "smoke", "list_main"]
