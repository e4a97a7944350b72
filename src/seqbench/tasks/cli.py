"""``seqbench data``: list the tasks and print their data statistics.

Usage::

    seqbench data list [--json] [--data-dir DIR]
    seqbench data stats NAME [--json] [--data-dir DIR] [--cache-dir DIR] [--hub]
                             [--set KEY=VALUE ...]

also runnable as ``python -m seqbench.tasks.cli stats wikitext2 --json``.

``stats --json`` prints ``{"name": ..., "splits": {"train": {"sequences": ...,
"tokens": ..., "vocab": ...}, ...}, ...}`` with the keys that apply to the task
(tokens for language models, frames for music, ...), counted as the metric
counts them. Exit status: 0 on success, 1 for a data problem (missing,
truncated or corrupt file, unknown task, missing split: one message on stderr,
no traceback), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from seqbench.tasks import registry
from seqbench.tasks import storage
from seqbench.tasks.storage import DataError

PROG = "seqbench data"


class _Parser(argparse.ArgumentParser):
  """argparse that raises instead of exiting, so ``data_main`` returns a code."""

  def error(self, message):
    self.print_usage(sys.stderr)
    raise _UsageError(f"{self.prog}: error: {message}")


class _UsageError(Exception):
  pass


def _location_args(p: argparse.ArgumentParser, cache: bool = True) -> None:
  p.add_argument("--data-dir", metavar="DIR",
                 help=f"data root (default: ${storage.ENV_DATA}, else the user cache)")
  if cache:
    p.add_argument("--cache-dir", metavar="DIR",
                   help=f"Arrow cache root (default: ${storage.ENV_CACHE}, else the user cache)")
    p.add_argument("--hub", action="store_true", default=None,
                   help="fetch missing datasets from the Hugging Face hub (needs network)")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog=PROG, description="Tasks and their datasets.")
  sub = parser.add_subparsers(dest="command", metavar="{list,stats}", parser_class=_Parser)
  sub.required = True
  p_list = sub.add_parser("list", help="list the tasks and where their data is")
  p_list.add_argument("--json", action="store_true", help="print JSON")
  _location_args(p_list, cache=False)
  p_stats = sub.add_parser("stats", help="split sizes of one task, as published")
  p_stats.add_argument("name", help="task name (see `data list`)")
  p_stats.add_argument("--json", action="store_true", help="print JSON")
  p_stats.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="task option, e.g. --set length=1000 (repeatable)")
  _location_args(p_stats)
  return parser


def _availability(name: str, location: storage.Location) -> str:
  source = registry.task_class(name).source
  if source is None:
    return "generated"
  try:
    paths = source.locate(location)
  except DataError:
    return "incomplete"
  if paths is None:
    return "hub" if (source.hub and location.hub_enabled()) else "missing"
  folder = next(iter(paths.values())).parent
  if storage.VENDORED_ROOT in folder.parents or folder == storage.VENDORED_ROOT:
    return "vendored"
  return str(folder)


def _cmd_list(args) -> int:
  location = storage.Location(data_dir=args.data_dir)
  rows = []
  for name, cls in registry.TASKS.items():
    rows.append({"name": name, "family": cls.family, "metric": cls.metric.name,
                 "data": _availability(name, location), "summary": cls.summary})
  if args.json:
    print(json.dumps(rows, indent=2))
    return 0
  root, why = location.data_root()
  print(f"data root: {root} ({why})")
  widths = [max(len(r[k]) for r in rows) for k in ("name", "family", "metric")]
  for r in rows:
    print(f"{r['name']:<{widths[0]}}  {r['family']:<{widths[1]}}  "
          f"{r['metric']:<{widths[2]}}  {r['data']}")
  return 0


def _fmt(value) -> str:
  if isinstance(value, bool) or value is None:
    return str(value)
  if isinstance(value, int):
    return f"{value:,}"
  return str(value)


def _print_stats(stats: dict) -> None:
  head = [f"{stats['name']}", f"family {stats.get('family')}", f"metric {stats.get('metric')}"]
  if "vocab" in stats:
    head.append(f"vocabulary {stats['vocab']:,}")
  print(", ".join(head))
  for key in ("source", "verified", "options", "baseline", "permutation", "valid_holdout",
              "keys", "classes", "normalize"):
    if key in stats:
      label = "official files" if key == "verified" else key
      print(f"  {label}: {_fmt(stats[key])}")
  splits = stats["splits"]
  columns = []
  for values in splits.values():
    for k, v in values.items():
      if k not in columns and not isinstance(v, (list, dict)):
        columns.append(k)
  table = [["split"] + columns]
  for split, values in splits.items():
    table.append([split] + [_fmt(values.get(c, "")) for c in columns])
  widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
  for row in table:
    print("  " + "  ".join(cell.rjust(w) if i else cell.ljust(w)
                           for i, (cell, w) in enumerate(zip(row, widths))))


def _cmd_stats(args) -> int:
  cls = registry.task_class(args.name)
  options = {}
  for item in args.set:
    if "=" not in item:
      raise DataError(f"--set expects KEY=VALUE, got {item!r}.")
    key, value = item.split("=", 1)
    options[key.strip()] = cls.parse_option(key.strip(), value.strip())
  task = registry.get_task(args.name, data_dir=args.data_dir, cache_dir=args.cache_dir,
                           hub=args.hub, **options)
  stats = task.stats()
  if args.json:
    print(json.dumps(stats, indent=2))
  else:
    _print_stats(stats)
  return 0


def data_main(argv: Optional[Sequence[str]] = None) -> int:
  """Run ``seqbench data`` with ``argv`` (without the ``data`` word).

  Returns:
    The exit status: 0 success, 1 data error, 2 usage error.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except _UsageError as e:
    print(e, file=sys.stderr)
    return 2
  except SystemExit as e:  # --help
    return int(e.code or 0)
  try:
    if args.command == "list":
      return _cmd_list(args)
    return _cmd_stats(args)
  except DataError as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"{PROG}: interrupted", file=sys.stderr)
    return 130
  except BrokenPipeError:
    # The reader (e.g. `| head`) went away: stop quietly, and point stdout at
    # devnull so the interpreter's final flush does not fail again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
  sys.exit(data_main())
