"""Generate the README's performance table from committed benchmark results.

    python scripts/perf_table.py           # rewrite the table in README.md
    python scripts/perf_table.py --check   # exit 1 if README.md is out of date

Reads every ``benchmarks/results/<device>/**/bench.jsonl`` (rows of
``seqbench bench``; also ``bench.partial.jsonl``, the rows a run wrote before it
stopped, marked "partial run") and ``scan_vs_truncated_*.json``, and writes
the issue-6 headline ratios between the ``perf-table`` markers of README.md.
A truncated row is compared with the fastest full scan of its run (the issue's
target is "vs full scan", and a faster scan is the harder baseline). Numbers
are never typed into the README by hand.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _find(rows, model, executor, mode):
  for r in rows:
    if (r["model"] == model and executor in (None, r["executor"]) and r["mode"] == mode and
        r.get("sweep") is None and r.get("device_count", 1) == 1):
      return r
  return None


def _ratio(rows, model, executor, mode, baseline):
  row, base = _find(rows, model, executor, mode), _find(rows, *baseline, mode)
  if not row or not base:
    return None
  return base["median_ms"] / row["median_ms"], row["median_ms"], base["median_ms"]


def table(root: str = ROOT) -> str:
  lines = ["| device | dtype | comparison (same run) | seqbench ms | baseline ms | speed-up | source |",
           "|---|---|---|---:|---:|---:|---|"]
  # Baselines by model name: torch's LSTM is cuDNN on GPU and ATen on CPU.
  lstm_torch = ("torch nn.LSTM", None)
  tcn_torch = ("torch TCN", None)
  paths = [p for name in ("bench.jsonl", "bench.partial.jsonl")
           for p in glob.glob(os.path.join(root, "benchmarks/results/*/**", name), recursive=True)]
  for path in sorted(paths):
    rows = _rows(path)
    if not rows:
      continue
    meta = rows[0]["meta"]
    rel = os.path.relpath(path, root)
    partial = " (partial run)" if path.endswith(".partial.jsonl") else ""
    checks = [
        ("LSTM train step, scan(unroll=8) vs torch nn.LSTM", "seqbench LSTM", "scan(unroll=8)",
         "train", lstm_torch),
        ("LSTM forward, scan(unroll=8) vs torch nn.LSTM", "seqbench LSTM", "scan(unroll=8)",
         "forward", lstm_torch),
        ("TCN train step vs PyTorch TCN", "seqbench TCN", "conv", "train", tcn_torch),
        ("LSTM train step vs flax OptimizedLSTMCell", "seqbench LSTM", "scan", "train",
         ("flax OptimizedLSTMCell", None)),
    ]
    for label, model, executor, mode, baseline in checks:
      got = _ratio(rows, model, executor, mode, baseline)
      if got:
        lines.append(f"| {meta['device_kind']} | {meta['dtype']} | {label} | {got[1]:.2f} | "
                     f"{got[2]:.2f} | {got[0]:.2f}x | `{rel}`{partial} |")
  for path in sorted(glob.glob(os.path.join(root, "benchmarks/results/*/**/scan_vs_truncated_*.json"),
                               recursive=True)):
    with open(path) as f:
      res = json.load(f)
    meta, rel = res["meta"], os.path.relpath(path, root)
    for r in res["rows"]:
      if r["executor"].startswith("truncated") and r["mode"] == "fwd+bwd":
        base = min((b for b in res["rows"] if b["cell"] == r["cell"] and b["mode"] == "fwd+bwd"
                    and b["executor"].startswith("scan")), key=lambda b: b["median_ms"])
        lines.append(
            f"| {meta['device_kind']} | {meta['dtype']} | {r['cell'].upper()} {r['executor']} vs "
            f"{base['executor']}, fwd+bwd, B={res['batch']} T={res['time']} H={res['hidden']} | "
            f"{r['median_ms']:.2f} | {base['median_ms']:.2f} | "
            f"{base['median_ms'] / r['median_ms']:.2f}x | `{rel}` |")
  return "\n".join(lines)


def render(readme: str, body: str) -> str:
  if START not in readme or END not in readme:
    raise SystemExit(f"README.md has no {START} ... {END} markers")
  head, rest = readme.split(START, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--check", action="store_true")
  args = ap.parse_args(argv)
  path = os.path.join(ROOT, "README.md")
  with open(path) as f:
    readme = f.read()
  new = render(readme, table())
  if args.check:
    if new != readme:
      print("README.md performance table is out of date: run python scripts/perf_table.py",
            file=sys.stderr)
      return 1
    return 0
  with open(path, "w") as f:
    f.write(new)
  return 0


if __name__ == "__main__":
  sys.exit(main())
