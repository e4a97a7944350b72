"""Generate the README's reproduction table from committed training results.

    python scripts/results_table.py           # rewrite the table in README.md
    python scripts/results_table.py --check   # exit 1 if README.md is out of date

Reads ``results.jsonl`` of each folder in :data:`RESULT_DIRS` through
``seqbench.report`` (the code behind ``seqbench report``) and writes, between the
``results-table`` markers of README.md, one line per experiment that has a
published number and was run with its registered settings: our mean ± std over
seeds, the published number and the verdict (within 2 % for loss-type metrics,
0.5 points for accuracy). Runs with other settings (ablations, shortened or
diagnostic runs) are left out there. Between the ``paper-tables`` markers the same
groups are laid out as the papers' tables (``seqbench.report.paper_tables``),
with the published rows no folder has yet. The READMEs of :data:`FOLDER_READMES` get
every group of their folder, other settings included. Numbers are never typed
into a README by hand.
"""

from __future__ import annotations

import os
import sys

import readme_sections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Folders whose runs are complete reproductions (not throughput probes or
#: capped runs), each reported on its own so a seed is never counted twice.
RESULT_DIRS = (
    "benchmarks/results/cpu/repro",
    "benchmarks/results/nvidia-h200/wikitext2_b9f166d",
)

COLUMNS = ("experiment", "task", "metric", "ours (mean ± std)", "seeds", "published", "match",
           "device", "results")


def _report():
  try:
    from seqbench import report  # pylint: disable=import-outside-toplevel
  except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from seqbench import report  # pylint: disable=import-outside-toplevel
  return report


def _link(root: str, d: str) -> str:
  label = os.path.relpath(d, "benchmarks/results")
  report_md = os.path.join(d, "report", "report.md")
  return f"[{label}]({report_md})" if os.path.exists(os.path.join(root, report_md)) else label


def table(root: str = ROOT, dirs=RESULT_DIRS) -> str:
  """The markdown table of every registered-setup group with a published number."""
  report = _report()
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
  for d in dirs:
    groups = report.summarize(report.read_rows(os.path.join(root, d)))
    for g in groups:
      if g.match is None or g.match == report.NOT_COMPARED:
        continue
      cells = [f"`{g.experiment}`", g.task, g.metric_name, report.ours_cell(g),
               report.n_cell(g), report.fmt(g.published), g.match, g.devices,
               _link(root, d)]
      lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(lines)


def folder_table(root: str, d: str) -> str:
  """Every group of one folder, other settings included, for that folder's README."""
  report = _report()
  cols = ("experiment", "settings", "ours (mean ± std)", "seeds", "published", "match")
  lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
  for g in report.summarize(report.read_rows(os.path.join(root, d))):
    cells = [f"`{g.experiment}`", g.variant.replace("|", "\\|") or "registered",
             report.ours_cell(g), report.n_cell(g), report.fmt(g.published), g.match or "–"]
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(lines)


def paper_tables(root: str = ROOT, dirs=RESULT_DIRS) -> str:
  """The published tables in their papers' layout, from the groups of all ``dirs``."""
  report = _report()
  groups = [g for d in dirs for g in report.summarize(report.read_rows(os.path.join(root, d)))]
  out = []
  for t in report.paper_tables(groups):
    out += ["", f"**{t['title']}** (ours (seeds) vs published: verdict)", ""]
    out += report.paper_table_markdown(t)
  return "\n".join(out[1:])


#: Folder READMEs that carry their own full table (between the same markers).
FOLDER_READMES = ("benchmarks/results/cpu/repro",)


def main(argv=None) -> int:
  files = {"README.md": {"results-table": table(), "paper-tables": paper_tables()}}
  for d in FOLDER_READMES:
    files[os.path.join(d, "README.md")] = {"results-table": folder_table(ROOT, d)}
  return readme_sections.main(files, "results_table.py", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
  sys.exit(main())
