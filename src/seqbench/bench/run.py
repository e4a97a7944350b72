"""``seqbench bench``: run a suite, print a table, write rows, report and plots.

Output folder (``--out``): ``bench.jsonl`` (one JSON row per measurement, with
run metadata), ``REPORT.md`` (generated from the rows) and ``throughput_vs_T.png``.
All files are written atomically (temporary file, then rename), so a killed
run never leaves a half-written result.

Several devices: ``--devices`` adds data-parallel train rows for 1, 2, 4, ...
devices (:mod:`seqbench.bench.sharding`; on by default when more than one
device is present; ``--cpu-devices N`` splits a CPU into N devices to try it).
``--distributed`` calls ``jax.distributed.initialize()`` first, for multi-host
runs (untested: this project has no multi-host machine); every process must
run the same command, and processes other than 0 write under
``OUT/process-<i>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

from seqbench.provenance import OutputDirError, make_output_dir, write_atomic

DTYPES = {"f32": "float32", "bf16": "bfloat16", "float32": "float32", "bfloat16": "bfloat16"}

#: ``seqbench.bench.suite.SUITES`` (named here so parsing needs no JAX); "tiny"
#: is for tests.
SUITE_NAMES = ("default", "full", "tiny")


def _fmt(x, digits=2) -> str:
  if x is None:
    return "–"
  if isinstance(x, float):
    return f"{x:,.{digits}f}"
  return str(x)


def precision_note(rows: list) -> str:
  """One line naming the models whose outputs are not in their row's dtype, or "".

  Such a row's ratio compares different arithmetic (e.g. a bfloat16 run whose
  baseline keeps a float32 state), so the report says so next to the table.
  """
  promoted = sorted({(r["model"], r["output_dtype"]) for r in rows
                     if r.get("output_dtype") not in (None, r["dtype"])})
  if not promoted:
    return ""
  return ("Computed in another dtype than the row's: " +
          ", ".join(f"{model} ({dtype})" for model, dtype in promoted) + ".")


def markdown_table(rows: list) -> str:
  head = ("| model | executor | mode | median ms | min ms | k tokens/s | compile s "
          "| vs baseline | baseline |")
  lines = [head, "|" + "---|" * 9]
  for r in rows:
    ratio = r.get("ratio_to_baseline")
    lines.append(
        f"| {r['model']} | {r['executor']} | {r['mode']} | {_fmt(r['median_ms'])} | "
        f"{_fmt(r['min_ms'])} | {_fmt(r['tokens_per_s'] / 1e3, 1)} | {_fmt(r.get('compile_s'))} | "
        f"{_fmt(ratio) + 'x' if ratio else '–'} | {r.get('baseline') or '–'} |")
  return "\n".join(lines)


def scaling_table(rows: list) -> str:
  times = sorted({r["time"] for r in rows})
  executors = []
  for r in rows:
    label = f"{r['model']} {r['executor']}"
    if label not in executors:
      executors.append(label)
  lines = ["| T | " + " | ".join(executors) + " |", "|---|" + "---|" * len(executors)]
  for t in times:
    cells = []
    for label in executors:
      match = [r for r in rows if r["time"] == t and f"{r['model']} {r['executor']}" == label]
      cells.append(_fmt(match[0]["tokens_per_s"] / 1e3, 1) if match else "–")
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _save_png(fig, path: str) -> str:
  """Render ``fig`` to PNG bytes and write them atomically to ``path``."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  write_atomic(path, buf.getvalue())
  return path


def plot_scaling(rows: list, path: str, title: str) -> Optional[str]:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  labels = []
  for r in rows:
    label = f"{r['model']} {r['executor']}"
    if label not in labels:
      labels.append(label)
  for label in labels:
    pts = sorted((r["time"], r["tokens_per_s"]) for r in rows
                 if f"{r['model']} {r['executor']}" == label)
    ax.plot([p[0] for p in pts], [p[1] / 1e3 for p in pts], marker="o", label=label)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("sequence length T")
  ax.set_ylabel("train k tokens/s")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(True, which="both", alpha=0.3)
  return _save_png(fig, path)


def device_table(rows: list) -> str:
  """Data-parallel rows: throughput and speed-up per device count."""
  lines = ["| model | executor | devices | global batch | median ms | k tokens/s | speed-up "
           "| efficiency |", "|" + "---|" * 8]
  for r in rows:
    speedup, eff = r.get("speedup_vs_1_device"), r.get("scaling_efficiency")
    lines.append(
        f"| {r['model']} | {r['executor']} | {r['device_count']} | {r['batch']} | "
        f"{_fmt(r['median_ms'])} | {_fmt(r['tokens_per_s'] / 1e3, 1)} | "
        f"{_fmt(speedup) + 'x' if speedup else '–'} | {_fmt(eff)} |")
  return "\n".join(lines)


def plot_accuracy_vs_throughput(rows: list, path: str, metric: str = "metric",
                                metric_label: Optional[str] = None,
                                title: str = "") -> Optional[str]:
  """Scatter of a quality metric against train tokens/s, one labelled point per row.

  Each row needs ``tokens_per_s`` and ``row[metric]`` (rows missing either are
  skipped); the point's label is ``row["label"]`` or ``"model executor"``.
  Returns ``path``, or ``None`` when there is nothing to plot or no
  matplotlib. Rows come from real training runs: the bench never makes up
  accuracy numbers.
  """
  points = [r for r in rows if r.get("tokens_per_s") and r.get(metric) is not None]
  if not points:
    return None
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in points:
    label = r.get("label") or f"{r.get('model', '')} {r.get('executor', '')}".strip()
    x, y = r["tokens_per_s"] / 1e3, float(r[metric])
    ax.scatter([x], [y], s=24)
    ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("train k tokens/s")
  ax.set_ylabel(metric_label or metric)
  ax.set_title(title, fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  return _save_png(fig, path)


def parse_devices(spec: str, available: int) -> list:
  """Device counts of ``--devices``: [] for off, 1,2,4,..,N for "all"/"auto"/N, or a list.

  "auto" sweeps only when more than one device is present.
  """
  from seqbench.bench.sharding import device_counts  # pylint: disable=g-import-not-at-top
  spec = spec.strip().lower()
  if spec in ("off", "none", "0"):
    return []
  if spec == "auto":
    return device_counts(available) if available > 1 else []
  if spec == "all":
    return device_counts(available)
  try:
    counts = [int(c) for c in spec.split(",") if c.strip()]
  except ValueError:
    raise ValueError(f"--devices: expected auto, all, off, N or a list like 1,2,8; "
                     f"got {spec!r}") from None
  if not counts or any(c < 1 or c > available for c in counts):
    raise ValueError(f"--devices {spec}: counts must be between 1 and the {available} "
                     f"device(s) present")
  return device_counts(counts[0]) if len(counts) == 1 else sorted(set(counts))


#: Suites with an accuracy part (the test suite ``tiny`` has none).
ACCURACY_SUITES_NAMES = ("default", "full")


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="seqbench bench", description=(
      "Throughput of recurrent, truncated and convolutional models, with other "
      "frameworks' baselines measured in the same run."))
  ap.add_argument("--suite", choices=SUITE_NAMES, default="default",
                  help="reference sizes (tiny: for tests, numbers mean nothing)")
  ap.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None,
                  help="JAX platform to measure (default: JAX's default backend)")
  ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
  ap.add_argument("--out", default="benchmarks/results/local")
  ap.add_argument("--no-scaling", action="store_true", help="skip the T-scaling sweep")
  ap.add_argument("--no-accuracy", action="store_true",
                  help="skip the accuracy comparison (short JSB training runs)")
  ap.add_argument("--only", default=None,
                  help="comma-separated substrings (any case): run only entries whose name/executor "
                  "match")
  ap.add_argument("--devices", nargs="?", const="all", default="auto", metavar="SPEC",
                  help="data-parallel train rows per device count: 'all' (the flag alone: "
                  "1, 2, 4, ... up to every local device), N (1, 2, 4, ... up to N), a list "
                  "'1,2,8', or 'off'; default 'auto' = 'all' when more than one device is "
                  "present")
  ap.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                  help="split the CPU into N XLA devices, to try --devices without "
                  "accelerators (applied before JAX starts its backends)")
  ap.add_argument("--distributed", action="store_true",
                  help="call jax.distributed.initialize() first (multi-host; untested "
                  "here); the device sweep then uses all processes' devices")
  return ap


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  # Everything that configures the backends comes before the first device query.
  if args.device:
    jax.config.update("jax_platforms", args.device)
  if args.cpu_devices is not None:
    if args.cpu_devices < 1:
      parser.error(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)
  if args.distributed:
    jax.distributed.initialize()  # cluster auto-detected (TPU VM, SLURM, ...)
  try:
    jax.devices()  # the first device query starts the backends
  except RuntimeError as e:  # e.g. --device gpu on a machine without one
    parser.error(f"no usable backend{f' for --device {args.device}' if args.device else ''}: "
                 f"{str(e).splitlines()[0]}")
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from seqbench.bench import suite as S  # pylint: disable=g-import-not-at-top
  from seqbench.provenance import run_metadata  # pylint: disable=g-import-not-at-top

  from seqbench.bench import sharding as SH  # pylint: disable=g-import-not-at-top

  dtype_name = DTYPES[args.dtype]
  dtype = jnp.dtype(dtype_name)
  size = S.SUITES[args.suite]
  if jax.process_count() > 1:
    # A sub-mesh of the first devices would leave other processes out.
    counts = [jax.device_count()] if args.devices.strip().lower() != "off" else []
    if jax.process_index() != 0:
      args.out = os.path.join(args.out, f"process-{jax.process_index()}")
  else:
    try:
      counts = parse_devices(args.devices, jax.local_device_count())
    except ValueError as e:
      parser.error(str(e))
  meta = run_metadata(dtype_name)
  command = "seqbench bench " + " ".join(argv if argv is not None else sys.argv[1:])
  print(f"seqbench bench: suite={args.suite} device={meta['device_kind']} ({meta['platform']}) "
        f"dtype={dtype_name} B={size.batch} T={size.time} D={size.input_size} H={size.hidden}",
        flush=True)
  started = time.time()
  rows = []

  def wanted(entry) -> bool:
    if not args.only:
      return True
    text = f"{entry.name} {entry.executor}".lower()
    return any(s.strip().lower() in text for s in args.only.split(","))

  entries = [e for e in S.entries(size) if wanted(e)]
  if args.only and not entries and not any(
      wanted(e) for e in S.scaling_entries(size) + S.device_entries(size)):
    names = sorted({e.name for e in S.entries(size)})
    parser.error(f"--only {args.only!r} matches no entry of suite {args.suite!r}; "
                 f"entries: {', '.join(names)}")
  try:
    make_output_dir(args.out)
  except OutputDirError as e:
    parser.error(str(e))
  # Rows also stream to a partial file as they are measured, so a run cut off
  # by a time limit still leaves what it measured (the final file is atomic).
  partial_path = os.path.join(args.out, "bench.partial.jsonl")
  partial = open(partial_path, "w")

  def keep(row):
    rows.append(row)
    partial.write(json.dumps({**row, "suite": args.suite, "meta": meta}, default=str) + "\n")
    partial.flush()

  # Baselines first: every later row is compared with them.
  for row in S.torch_rows(size, dtype_name):
    keep(row)
    print(f"[torch] {row['model']:24s} {row['executor']:18s} {row['mode']:8s}"
          f" {row['median_ms']:10.3f} ms", flush=True)
  for i, entry in enumerate(entries):
    for row in S.run_entry(entry, size, dtype):
      keep(row)
      print(f"[{i + 1}/{len(entries)}] {row['model']:24s} {row['executor']:18s} {row['mode']:8s}"
            f" {row['median_ms']:10.3f} ms  compile {row['compile_s']:.2f} s", flush=True)
  rows = S.add_ratios(rows)

  scaling = []
  if not args.no_scaling:
    for t in size.scaling_times:
      for entry in S.scaling_entries(size):
        if args.only and not wanted(entry):
          continue
        for row in S.run_entry(entry, size, dtype, modes=("train",), time_len=t,
                               batch=size.scaling_batch):
          scaling.append({**row, "sweep": "scaling"})
          partial.write(json.dumps({**row, "sweep": "scaling", "meta": meta}, default=str) + "\n")
          partial.flush()
          print(f"[scaling T={t}] {row['model']:20s} {row['executor']:18s}"
                f" {row['tokens_per_s'] / 1e3:10.1f} k tok/s", flush=True)

  device_rows = []
  if counts:
    for entry in S.device_entries(size):
      if args.only and not wanted(entry):
        continue
      for row in SH.device_rows(entry, size, dtype, counts):
        device_rows.append(row)
        partial.write(json.dumps({**row, "meta": meta}, default=str) + "\n")
        partial.flush()
        print(f"[devices={row['device_count']}] {row['model']:20s} {row['executor']:18s}"
              f" B={row['batch']:<5d} {row['tokens_per_s'] / 1e3:10.1f} k tok/s", flush=True)
    device_rows = SH.add_device_speedups(device_rows)

  accuracy_rows = []
  if not args.no_accuracy and args.suite in ACCURACY_SUITES_NAMES:
    from seqbench.bench import accuracy as A  # pylint: disable=g-import-not-at-top
    accuracy_rows = A.run_accuracy(args.suite, os.path.join(args.out, "accuracy_runs"),
                                   progress=False)
    write_atomic(os.path.join(args.out, "accuracy.jsonl"),
                 "".join(json.dumps({**r, "meta": meta}, default=str) + "\n"
                         for r in accuracy_rows))

  wall = time.time() - started
  all_rows = [{**r, "suite": args.suite, "meta": meta} for r in rows + scaling + device_rows]
  write_atomic(os.path.join(args.out, "bench.jsonl"),
               "".join(json.dumps(r, default=str) + "\n" for r in all_rows))
  partial.close()
  os.unlink(partial_path)
  table = markdown_table(rows)
  title = f"{meta['device_kind']} · {dtype_name} · B={size.scaling_batch}"
  plot = plot_scaling(scaling, os.path.join(args.out, "throughput_vs_T.png"), title) \
      if scaling else None
  cross = S.crossover(scaling, "scan(unroll=8)", "truncated(k=16)") if scaling else None
  report = [
      f"# seqbench bench — suite `{args.suite}`",
      "",
      f"Command: `{command}`  ",
      f"Device: **{meta['device_kind']}** ({meta['platform']}, {meta['device_count']} device(s)), "
      f"dtype {dtype_name}, JAX matmul precision `{meta['matmul_precision']}`  ",
      f"Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "  ",
      f"Git: `{meta['git_sha']}` (dirty: {meta['git_dirty']}); wall time {wall:.0f} s",
      "",
      f"Reference size: B={size.batch}, T={size.time}, D={size.input_size}, H={size.hidden}; "
      f"TCN {size.tcn_levels} levels, kernel {size.tcn_kernel}, {size.hidden} channels. "
      "Times are the median and min of "
      f"n={size.n} calls after 2 warm-ups, compile timed apart. `train` = fwd+bwd+Adam update "
      f"(ours: {S.bench_optimizer_name()}; torch: its default Adam, multi-tensor on CUDA); "
      "`stream` = latency of one new output (k tokens/s there counts batch outputs per second). "
      "`vs baseline` = baseline time / row time in this run (> 1 is faster).",
      "",
      table,
      "",
  ]
  note = precision_note(rows)
  if note:
    report += [note, ""]
  if scaling:
    report += [
        f"## Train throughput vs sequence length (B={size.scaling_batch}, k tokens/s)",
        "",
        scaling_table(scaling),
        "",
        ("Crossover: truncated(k=16) first beats the LSTM scan at "
         f"T = {cross}." if cross else
         "Crossover: truncated(k=16) did not beat the LSTM scan at any T measured here."),
        "",
    ]
    if plot:
      report += ["![throughput vs T](throughput_vs_T.png)", ""]
  if device_rows:
    per_device = size.device_batch or size.batch
    report += [
        f"## Data-parallel train step (batch {per_device} per device, T={size.time})",
        "",
        "One 1-D `data` mesh, batch sharded `P('data')`, parameters replicated "
        "(`seqbench.bench.sharding`). Speed-up = tokens/s over the 1-device row; "
        "efficiency = speed-up / devices (1.0 is perfect weak scaling)"
        + (" — these are XLA's fake CPU devices sharing one host's cores, which shows "
           "the rows work, not how real devices scale." if meta["platform"] == "cpu" and
           jax.device_count() > 1 else "."),
        "",
        device_table(device_rows),
        "",
    ]
  if accuracy_rows:
    acc_plot = plot_accuracy_vs_throughput(
        accuracy_rows, os.path.join(args.out, "accuracy_vs_throughput.png"),
        metric="test_metric", metric_label="JSB test NLL (lower is better)",
        title=f"{meta['device_kind']} · JSB · {accuracy_rows[0]['epochs']} epochs")
    report += [
        "## Accuracy at equal size and budget (JSB Chorales, frame NLL)",
        "",
        f"Every model trained {accuracy_rows[0]['epochs']} epochs with one shared setting "
        "(Adam 1e-3, clip 1, batch 16, hidden 128; `seqbench.bench.accuracy`): **fewer epochs "
        "than the published experiments**, so compare the rows with each other, not with the "
        "papers (TCN paper, 8.1-8.9 after full training). Stable = projected after every update "
        "(λ = 1 as in the paper). `as truncated` = the trained model evaluated as its k-step "
        "feed-forward version. tokens/s = training throughput of that run per model; models "
        "trained together in one vmapped program share its clock, so tokens/s compares as a "
        "speed only between rows with the same `models trained together`.",
        "",
        A.accuracy_table(accuracy_rows),
        "",
    ]
    if acc_plot:
      report += ["![accuracy vs throughput](accuracy_vs_throughput.png)", ""]
  write_atomic(os.path.join(args.out, "REPORT.md"), "\n".join(report))
  print()
  print(table)
  if accuracy_rows:
    print()
    print(A.accuracy_table(accuracy_rows))
  if device_rows:
    print()
    print(device_table(device_rows))
  print(f"\nwrote {args.out}/bench.jsonl, REPORT.md ({wall:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
