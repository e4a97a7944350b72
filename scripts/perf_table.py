"""Generate the README's performance table from committed benchmark results.

    python scripts/perf_table.py           # rewrite the table in README.md
    python scripts/perf_table.py --check   # exit 1 if README.md is out of date

Reads every ``benchmarks/results/<device>/**/bench.jsonl`` (rows of
``seqbench bench``; also ``bench.partial.jsonl``, the rows a run wrote before it
stopped, marked "partial run") and ``scan_vs_truncated_*.json``, and writes
the issue-6 headline ratios between the ``perf-table`` markers of README.md,
and each bench run's slowest compile between the ``compile-table`` markers.
A truncated row is compared with the fastest full scan of its run (the issue's
target is "vs full scan", and a faster scan is the harder baseline). Numbers
are never typed into the README by hand.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import readme_sections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTOTUNE_CACHE_FLAG = "--xla_gpu_per_fusion_autotune_cache_dir"


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
  return (base["median_ms"] / row["median_ms"], row["median_ms"], base["median_ms"],
          _precision_note(row, base))


def _precision_note(*rows) -> str:
  """Which side of a comparison did not compute in the row's dtype."""
  notes = []
  for r in rows:
    out = r.get("output_dtype")
    if out is None and r["model"] == "flax OptimizedLSTMCell" and r["dtype"] != "float32":
      # Rows from before output_dtype was recorded: flax's default float32
      # initial carry promoted its recurrent matmul (and outputs) to float32.
      out = "float32"
    if out and out != r["dtype"]:
      notes.append(f"{r['model']} computed in {out}")
    if (r["model"] == "torch nn.LSTM" and r["mode"] in ("forward", "stream")
        and "torch_module_mode" not in r):
      # Rows from before the inference rows put the module in eval mode: cuDNN
      # ran its training forward (activations kept for a backward), so the
      # baseline's time is an overestimate.
      notes.append("torch nn.LSTM in training mode")
  return f" ({'; '.join(notes)})" if notes else ""


def _other_flags(meta) -> str:
  """XLA flags of the run besides the autotune cache (which changes no timing)."""
  return " ".join(f for f in meta.get("xla_flags", "").split()
                  if not f.startswith(AUTOTUNE_CACHE_FLAG))


def _bench_paths(root):
  return sorted(p for name in ("bench.jsonl", "bench.partial.jsonl")
                for p in glob.glob(os.path.join(root, "benchmarks/results/*/**", name),
                                   recursive=True))


def table(root: str = ROOT) -> str:
  lines = ["| device | dtype | comparison (same run) | seqbench ms | baseline ms | speed-up | source |",
           "|---|---|---|---:|---:|---:|---|"]
  # Baselines by model name: torch's LSTM is cuDNN on GPU and ATen on CPU.
  lstm_torch = ("torch nn.LSTM", None)
  tcn_torch = ("torch TCN", None)
  for path in _bench_paths(root):
    rows = _rows(path)
    if not rows:
      continue
    meta = rows[0]["meta"]
    rel = os.path.relpath(path, root)
    partial = " (partial run)" if path.endswith(".partial.jsonl") else ""
    flags = f" [XLA_FLAGS `{_other_flags(meta)}`]" if _other_flags(meta) else ""
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
        lines.append(f"| {meta['device_kind']} | {meta['dtype']} | {label}{got[3]}{flags} | "
                     f"{got[1]:.2f} | {got[2]:.2f} | {got[0]:.2f}x | `{rel}`{partial} |")
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


def _cache_state(meta) -> str:
  if meta.get("platform") == "cpu":
    return "n/a (CPU: no autotuning)"
  if "autotune_level=0" in _other_flags(meta):
    return "autotuning off"
  state = meta.get("xla_autotune_cache")
  if state is not None:
    return f"warm ({state['entries']} entries)" if state["entries"] else "cold (empty)"
  if AUTOTUNE_CACHE_FLAG in meta.get("xla_flags", ""):
    return "set (state not recorded)"
  return "none"


def compile_table(root: str = ROOT) -> str:
  """Each bench run's slowest seqbench compile (issue 6: < 5 s, stretch < 2 s)."""
  lines = ["| device | dtype | autotune cache | slowest compile | step | steps over 5 s | source |",
           "|---|---|---|---:|---|---:|---|"]
  for path in _bench_paths(root):
    rows = [r for r in _rows(path) if r.get("framework") == "jax" and "compile_s" in r
            and r.get("sweep") is None]
    if not rows:
      continue
    meta, rel = rows[0]["meta"], os.path.relpath(path, root)
    partial = " (partial run)" if path.endswith(".partial.jsonl") else ""
    worst = max(rows, key=lambda r: r["compile_s"])
    over = sum(r["compile_s"] >= 5.0 for r in rows)
    lines.append(f"| {meta['device_kind']} | {meta['dtype']} | {_cache_state(meta)} | "
                 f"{worst['compile_s']:.2f} s | "
                 f"{worst['model']} {worst['executor']} {worst['mode']} | "
                 f"{over} of {len(rows)} | `{rel}`{partial} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  return readme_sections.main(
      {"README.md": {"perf-table": table(), "compile-table": compile_table()}},
      "perf_table.py", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
  sys.exit(main())
