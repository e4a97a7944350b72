"""Times the ways of computing a TCN's causal dilated convolutions.

For each ``conv_impl`` of :mod:`seqbench.convnets` (``shifted_matmul``,
``im2col``, ``shifted_output``, ``lax_conv`` in channels-last layout, and the
channels-first ``lax_conv_ncw`` reference form) this times

* ``fwd``:     ``net.apply(params, x)``
* ``fwd+bwd``: ``jax.grad(lambda p: mean(net.apply(p, x) ** 2))(params)``

Method: ``jax.jit``, lowered and compiled ahead of time (compile seconds are
recorded apart), 2 warm-up calls, then ``--repeats`` timed calls, each ended by
``block_until_ready``; median and min are reported. If ``torch`` is importable
an equivalent PyTorch TCN (``Conv1d`` with padding + chomp, weight norm, as in
Bai et al.'s reference code) is timed in the same run on the same device kind
and each JAX row gets its speed-up over it (torch time / JAX time; > 1: JAX faster, the
convention of every seqbench report).

Usage::

    python benchmarks/tcn_forms.py [--out DIR] [--size cpu|gpu] [--repeats N]

Writes ``DIR/tcn_forms.json`` (rows + metadata) and ``DIR/tcn_forms.md``
(default DIR: ``benchmarks/results/<size>``). Only needs jax, numpy and
(optionally) torch, so it runs on a machine without this repo's venv.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

try:
    from seqbench import convnets
except ImportError:  # not installed (e.g. on the GPU machine): use the checkout
    sys.path.insert(0, str(REPO / "src"))
    from seqbench import convnets

import jax
import jax.numpy as jnp
import numpy as np

SIZES = {
    # batch, time, input width, levels, kernel, channels
    "cpu": dict(batch=32, time=128, input_size=128, levels=6, kernel_size=3, hidden=256),
    "gpu": dict(batch=64, time=256, input_size=256, levels=8, kernel_size=3, hidden=512),
}


def _time_calls(fn, args, repeats: int, warmup: int = 2, sync=None) -> list[float]:
    """Calls ``fn(*args)`` warmup + repeats times; returns the timed ones in ms."""
    sync = sync or jax.block_until_ready
    for _ in range(warmup):
        sync(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _model_flops(cfg: dict) -> float:
    """Forward multiply-add FLOPs of the TCN (2 per MAC); backward counted as 2x forward."""
    b, t, d, h, k = cfg["batch"], cfg["time"], cfg["input_size"], cfg["hidden"], cfg["kernel_size"]
    flops = 0
    for i in range(cfg["levels"]):
        d_in = d if i == 0 else h
        flops += 2 * b * t * k * (d_in * h + h * h)
        if d_in != h:
            flops += 2 * b * t * d_in * h
    return float(flops)


# ---------------------------------------------------------------------------
# JAX forms
# ---------------------------------------------------------------------------


def bench_jax(cfg: dict, forms: list[str], repeats: int, dtype: str) -> tuple[list[dict], dict]:
    key = jax.random.PRNGKey(0)
    kp, kx = jax.random.split(key)
    jdtype = jnp.dtype(dtype)
    x = jax.random.normal(kx, (cfg["batch"], cfg["time"], cfg["input_size"]), jdtype)
    base = convnets.TCN(cfg["hidden"], cfg["levels"], cfg["kernel_size"])
    params = base.init(kp, cfg["input_size"], dtype=jdtype)
    flops_fwd = _model_flops(cfg)
    rows, ref_out = [], None
    for form in forms:
        net = convnets.TCN(cfg["hidden"], cfg["levels"], cfg["kernel_size"], conv_impl=form)

        def fwd(p, xs, net=net):
            return net.apply(p, xs)

        def loss(p, xs, net=net):
            y = net.apply(p, xs)
            return jnp.mean(jnp.square(y.astype(jnp.float32)))

        fwd_bwd = jax.grad(loss)
        for mode, fn, flops in (("fwd+bwd", fwd_bwd, 3 * flops_fwd), ("fwd", fwd, flops_fwd)):
            t0 = time.perf_counter()
            lowered = jax.jit(fn).lower(params, x)
            t1 = time.perf_counter()
            compiled = lowered.compile()
            t2 = time.perf_counter()
            times = _time_calls(compiled, (params, x), repeats)
            row = dict(
                framework="jax", form=form, mode=mode,
                lower_s=round(t1 - t0, 4), compile_s=round(t2 - t1, 4),
                median_ms=statistics.median(times), min_ms=min(times), n=len(times),
                times_ms=[round(v, 4) for v in times],
            )
            row["tflops_at_median"] = flops / (row["median_ms"] * 1e-3) / 1e12
            if mode == "fwd":
                out = np.asarray(compiled(params, x), dtype=np.float64)
                if ref_out is None:
                    ref_out = out
                row["max_abs_diff_vs_first_form"] = float(np.max(np.abs(out - ref_out)))
            rows.append(row)
            print(f"  jax {form:15s} {mode:8s} compile {row['compile_s']:7.2f}s  "
                  f"median {row['median_ms']:9.3f} ms  min {row['min_ms']:9.3f} ms", flush=True)
    return rows, dict(flops_fwd=flops_fwd)


# ---------------------------------------------------------------------------
# PyTorch reference
# ---------------------------------------------------------------------------


def bench_torch(cfg: dict, repeats: int, dtype: str) -> list[dict]:
    import torch
    from torch import nn

    if hasattr(nn.utils, "parametrizations") and hasattr(nn.utils.parametrizations, "weight_norm"):
        weight_norm = nn.utils.parametrizations.weight_norm
    else:  # older torch
        weight_norm = nn.utils.weight_norm

    class Chomp(nn.Module):
        """Drops the last ``n`` steps: Conv1d pads both sides, causality needs left only."""

        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return x[:, :, : -self.n].contiguous() if self.n else x

    class Block(nn.Module):
        def __init__(self, d_in, d_out, k, dil):
            super().__init__()
            pad = (k - 1) * dil
            self.net = nn.Sequential(
                weight_norm(nn.Conv1d(d_in, d_out, k, padding=pad, dilation=dil)), Chomp(pad), nn.ReLU(),
                weight_norm(nn.Conv1d(d_out, d_out, k, padding=pad, dilation=dil)), Chomp(pad), nn.ReLU(),
            )
            self.down = nn.Conv1d(d_in, d_out, 1) if d_in != d_out else None
            for m in self.modules():
                if isinstance(m, nn.Conv1d):
                    w = m.parametrizations.weight.original1 if hasattr(m, "parametrizations") else (
                        m.weight_v if hasattr(m, "weight_v") else m.weight)
                    w.data.normal_(0, 0.01)

        def forward(self, x):
            res = x if self.down is None else self.down(x)
            return torch.relu(self.net(x) + res)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = getattr(torch, dtype)
    blocks = [
        Block(cfg["input_size"] if i == 0 else cfg["hidden"], cfg["hidden"], cfg["kernel_size"], 2**i)
        for i in range(cfg["levels"])
    ]
    model = nn.Sequential(*blocks).to(dev, tdtype)
    x = torch.randn(cfg["batch"], cfg["input_size"], cfg["time"], device=dev, dtype=tdtype)  # NCW

    def sync(_=None):
        if dev == "cuda":
            torch.cuda.synchronize()

    def fwd_bwd(x):
        model.zero_grad(set_to_none=True)
        loss = model(x).float().pow(2).mean()
        loss.backward()

    def fwd(x):
        with torch.no_grad():
            return model(x)

    flops_fwd = _model_flops(cfg)
    rows = []
    for mode, fn, flops in (("fwd+bwd", fwd_bwd, 3 * flops_fwd), ("fwd", fwd, flops_fwd)):
        times = _time_calls(fn, (x,), repeats, warmup=3, sync=sync)
        row = dict(framework="torch", form="torch_conv1d_chomp", mode=mode,
                   median_ms=statistics.median(times), min_ms=min(times), n=len(times),
                   times_ms=[round(v, 4) for v in times])
        row["tflops_at_median"] = flops / (row["median_ms"] * 1e-3) / 1e12
        rows.append(row)
        print(f"  torch {mode:8s} median {row['median_ms']:9.3f} ms  min {row['min_ms']:9.3f} ms", flush=True)
    return rows


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repo, or None (no git / not a checkout)."""
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    """Writes via a temp file in the same folder + os.replace, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _markdown(result: dict) -> str:
    m, c = result["metadata"], result["config"]
    lines = [
        "# TCN causal-conv forms: time per call",
        "",
        f"Device: {m['device_kind']} ({m['platform']}), jax {m['jax_version']}, dtype {m['dtype']}, "
        f"git {m['git_sha'] or 'n/a'}, {m['date_utc']}, {m['cpu_count']} CPUs, "
        f"1-min load average {m['loadavg_1m_start']} at start / {m['loadavg_1m_end']} at end.",
        f"Shape: B={c['batch']}, T={c['time']}, D={c['input_size']}, {c['levels']} levels, "
        f"kernel {c['kernel_size']}, {c['hidden']} channels (receptive field {c['receptive_field']}). "
        f"Median and min of {result['repeats']} calls after 2 warm-ups; compile = AOT `.compile()`.",
        "",
        "| form | mode | compile s | median ms | min ms | vs torch | GFLOP/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        ratio = r.get("ratio_to_torch")
        lines.append(
            f"| {r['form']} | {r['mode']} | {'' if 'compile_s' not in r else format(r['compile_s'], '.2f')} | "
            f"{r['median_ms']:.2f} | "
            f"{r['min_ms']:.2f} | {'' if ratio is None else f'{ratio:.2f}x'} | {1e3 * r['tflops_at_median']:.1f} |"
        )
    if not m.get("torch_version"):
        lines += ["", "torch not importable here: no PyTorch reference row."]
    lines += ["", "vs torch = torch median / JAX median (> 1: JAX faster)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<size>)")
    ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--forms", nargs="+", default=list(convnets.CONV_IMPLS), choices=list(convnets.CONV_IMPLS))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    out_dir = args.out or REPO / "benchmarks" / "results" / args.size
    cfg = dict(SIZES[args.size])
    cfg["receptive_field"] = convnets.TCN(cfg["hidden"], cfg["levels"], cfg["kernel_size"]).receptive_field

    load_start = _loadavg()
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}); config {cfg}", flush=True)
    rows, extra = bench_jax(cfg, args.forms, args.repeats, args.dtype)

    torch_version, torch_info = None, {}
    if not args.no_torch:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:
            print("  torch not importable: skipping the PyTorch reference", flush=True)
    if torch_version:
        t_rows = bench_torch(cfg, args.repeats, args.dtype)
        torch_info = dict(
            torch_device=("cuda:" + torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
            torch_cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            torch_cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
            torch_matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
            torch_num_threads=torch.get_num_threads(),
        )
        by_mode = {r["mode"]: r["median_ms"] for r in t_rows}
        for r in rows:
            r["ratio_to_torch"] = by_mode[r["mode"]] / r["median_ms"]
        rows += t_rows

    result = dict(
        benchmark="tcn_forms",
        config=cfg,
        repeats=args.repeats,
        warmup=2,
        rows=rows,
        metadata=dict(
            jax_version=jax.__version__,
            jaxlib_version=_jaxlib_version(),
            device_kind=dev.device_kind,
            platform=dev.platform,
            device_count=jax.device_count(),
            default_matmul_precision=str(jax.config.jax_default_matmul_precision),
            dtype=args.dtype,
            numpy_version=np.__version__,
            torch_version=torch_version,
            **torch_info,
            python=platform.python_version(),
            machine=platform.machine(),
            cpu_count=os.cpu_count(),
            # Other processes on the machine skew timings; record how busy it was.
            loadavg_1m_start=load_start,
            loadavg_1m_end=_loadavg(),
            git_sha=_git("rev-parse", "HEAD") or None,
            # Uncommitted changes to the files this benchmark runs.
            git_dirty=(None if _git("rev-parse", "HEAD") is None else bool(
                _git("status", "--porcelain", "--", "src/seqbench/convnets.py", "benchmarks/tcn_forms.py"))),
            date_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            argv=sys.argv[1:] if argv is None else list(argv),
            **extra,
        ),
    )
    out_dir = Path(out_dir)
    _atomic_write(out_dir / "tcn_forms.json", json.dumps(result, indent=2) + "\n")
    _atomic_write(out_dir / "tcn_forms.md", _markdown(result))
    print(f"wrote {out_dir / 'tcn_forms.json'} and tcn_forms.md", flush=True)
    return result


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


if __name__ == "__main__":
    main()
