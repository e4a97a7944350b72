"""Times the ways of computing a TCN's causal dilated convolutions, one run.

For each ``conv_impl`` of :mod:`seqbench.convnets` this times ``fwd``
(``net.apply``) and ``fwd+bwd`` (gradient of ``mean(y**2)``) with the suite's
timing method (:func:`seqbench.bench.time_compiled`: AOT compile timed apart,
2 warm-ups, median/min of ``--repeats`` synchronised calls). When ``torch`` is
importable, the PyTorch TCN of the same shape
(:class:`seqbench.bench.torch_baselines.TorchTCN`) is timed in the same run and
each JAX row gets its speed-up over it (torch time / JAX time, > 1: faster).

Usage::

    python benchmarks/tcn_forms.py --size cpu --out benchmarks/results/cpu
    python benchmarks/tcn_forms.py --size gpu --forms im2col shifted_matmul --out $OUT

Expected cost: ~3 min on the 2-core CPU; ~1 min on an H100 without the
``lax_conv`` forms (those compile for up to a minute there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))  # run from a checkout without installing

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from seqbench import convnets  # pylint: disable=wrong-import-position
from seqbench.bench import run_metadata, time_compiled  # pylint: disable=wrong-import-position
from seqbench.provenance import write_atomic  # pylint: disable=wrong-import-position

SIZES = {
    "cpu": dict(batch=32, time=128, input_size=128, levels=6, kernel_size=3, hidden=256),
    "gpu": dict(batch=64, time=256, input_size=256, levels=8, kernel_size=3, hidden=512),
}


def model_flops(cfg: dict) -> float:
  """Forward FLOPs of the TCN's convolutions (2 per multiply-add)."""
  b, t, d, h, k = cfg["batch"], cfg["time"], cfg["input_size"], cfg["hidden"], cfg["kernel_size"]
  flops = 0
  for i in range(cfg["levels"]):
    d_in = d if i == 0 else h
    flops += 2 * b * t * k * (d_in * h + h * h) + (2 * b * t * d_in * h if d_in != h else 0)
  return float(flops)


def jax_rows(cfg: dict, forms, repeats: int, dtype) -> list:
  key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
  xs = jax.random.normal(key_x, (cfg["batch"], cfg["time"], cfg["input_size"]), dtype)
  shape = (cfg["hidden"], cfg["levels"], cfg["kernel_size"])
  params = convnets.TCN(*shape).init(key_p, cfg["input_size"], dtype=dtype)
  fwd_flops = model_flops(cfg)
  rows, reference = [], None
  for form in forms:
    net = convnets.TCN(*shape, conv_impl=form)
    grad = jax.grad(lambda p, x, net=net: jnp.mean(jnp.square(net.apply(p, x).astype(jnp.float32))))
    for mode, fn, flops in (("fwd+bwd", grad, 3 * fwd_flops), ("fwd", net.apply, fwd_flops)):
      timing = time_compiled(fn, params, xs, n=repeats)
      row = {"framework": "jax", "form": form, "mode": mode, **timing.to_json(),
             "tflops_at_median": flops / (timing.median_ms * 1e-3) / 1e12}
      if mode == "fwd":  # every form must compute the same numbers
        out = np.asarray(net.apply(params, xs), np.float64)
        reference = out if reference is None else reference
        row["max_abs_diff_vs_first_form"] = float(np.max(np.abs(out - reference)))
      rows.append(row)
      print(f"  jax {form:15s} {mode:8s} compile {timing.compile_s:7.2f}s  median "
            f"{timing.median_ms:9.3f} ms  min {timing.min_ms:9.3f} ms", flush=True)
  return rows


def torch_rows(cfg: dict, repeats: int, dtype: str) -> list:
  try:
    from seqbench.bench import torch_baselines as tb  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("  torch not importable: no PyTorch reference row")
    return []
  times = tb.tcn_rows(cfg["batch"], cfg["time"], cfg["input_size"], cfg["hidden"], cfg["levels"],
                      cfg["kernel_size"], dtype, repeats, modes=("fwd+bwd", "forward"))
  rows = []
  for mode, t in times.items():
    mode = "fwd" if mode == "forward" else mode
    rows.append({"framework": "torch", "form": "Conv1d", "mode": mode, **t,
                 "torch_version": tb.version(), "torch_device": tb.device_kind(),
                 "torch_matmul_precision": tb.matmul_precision()})
    print(f"  torch Conv1d          {mode:8s} median {t['median_ms']:9.3f} ms", flush=True)
  return rows


def markdown(result: dict) -> str:
  meta, cfg = result["meta"], result["config"]
  lines = [
      "# TCN causal-conv forms: time per call", "",
      f"Device: {meta['device_kind']} ({meta['platform']}), jax {meta['versions']['jax']}, "
      f"dtype {meta['dtype']}, git {meta['git_sha']} (dirty: {meta['git_dirty']}).  ",
      f"Command: `{result['command']}`  ",
      f"Shape: B={cfg['batch']}, T={cfg['time']}, D={cfg['input_size']}, {cfg['levels']} levels, "
      f"kernel {cfg['kernel_size']}, {cfg['hidden']} channels. Median and min of "
      f"{result['repeats']} calls after 2 warm-ups; compile = AOT `.compile()`.", "",
      "| framework | form | mode | compile s | median ms | min ms | vs torch |",
      "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
  for r in result["rows"]:
    ratio = r.get("speedup_vs_torch")
    lines.append(f"| {r['framework']} | {r['form']} | {r['mode']} | {r.get('compile_s', 0):.2f} | "
                 f"{r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                 f"{'' if ratio is None else f'{ratio:.2f}x'} |")
  lines += ["", "vs torch = torch median / JAX median (> 1: JAX faster)."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
  ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/<size>)")
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  ap.add_argument("--forms", nargs="+", default=list(convnets.CONV_IMPLS),
                  choices=list(convnets.CONV_IMPLS))
  ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  args = ap.parse_args(argv)
  cfg = SIZES[args.size]
  print(f"device: {jax.devices()[0].device_kind}; config {cfg}", flush=True)
  rows = jax_rows(cfg, args.forms, args.repeats, jnp.dtype(args.dtype))
  t_rows = [] if args.no_torch else torch_rows(cfg, args.repeats, args.dtype)
  by_mode = {r["mode"]: r["median_ms"] for r in t_rows}
  for r in rows:
    if r["mode"] in by_mode:
      r["speedup_vs_torch"] = by_mode[r["mode"]] / r["median_ms"]
  result = {"benchmark": "tcn_forms", "config": cfg, "repeats": args.repeats,
            "command": "python benchmarks/tcn_forms.py " + " ".join(argv if argv is not None
                                                                     else sys.argv[1:]),
            "meta": run_metadata(args.dtype), "fwd_flops": model_flops(cfg), "rows": rows + t_rows}
  out = args.out or os.path.join(REPO, "benchmarks", "results", args.size)
  write_atomic(os.path.join(out, "tcn_forms.json"), json.dumps(result, indent=1, default=str))
  write_atomic(os.path.join(out, "tcn_forms.md"), markdown(result))
  print(f"wrote {out}/tcn_forms.json and tcn_forms.md")
  return result


if __name__ == "__main__":
  main()
