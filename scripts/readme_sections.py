"""Rewrite generated sections of README files between ``<!-- name:start/end -->`` markers.

Shared by the scripts that generate README tables from committed results
(``perf_table.py``, ``results_table.py``), so "regenerate" and "--check"
behave the same for every generated section.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def markers(name: str) -> tuple[str, str]:
  return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace(readme: str, start: str, end: str, body: str) -> str:
  """``readme`` with the text between ``start`` and ``end`` set to ``body``."""
  if start not in readme or end not in readme:
    raise SystemExit(f"a README lacks its {start} ... {end} markers")
  head, rest = readme.split(start, 1)
  _, tail = rest.split(end, 1)
  return f"{head}{start}\n{body}\n{end}{tail}"


def main(files: Mapping[str, Mapping[str, str]], script: str, description: str,
         argv=None) -> int:
  """Write ``{README path: {marker name: body}}``, or with ``--check`` exit 1 if one differs.

  Paths are relative to the repository root; each file is replaced atomically.
  """
  ap = argparse.ArgumentParser(description=description)
  ap.add_argument("--check", action="store_true", help="exit 1 if a README is out of date")
  args = ap.parse_args(argv)
  stale = []
  for rel, sections in files.items():
    path = os.path.join(ROOT, rel)
    with open(path) as f:
      readme = f.read()
    new = readme
    for name, body in sections.items():
      new = replace(new, *markers(name), body)
    if new == readme:
      continue
    stale.append(rel)
    if not args.check:
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.write(new)
      os.replace(tmp, path)
  if args.check and stale:
    print(f"{', '.join(stale)} out of date: run python scripts/{script}", file=sys.stderr)
    return 1
  return 0
