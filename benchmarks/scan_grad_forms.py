"""LSTM scan gradient: autodiff vs the recurrent-weight gradient as one GEMM.

Differentiating ``lax.scan`` accumulates the recurrent weight's gradient
inside the backward loop: at each time step one small GEMM for
:math:`\\bar W \\mathrel{+}= h_{t-1}^\\top \\bar z_t` besides the one for
:math:`\\bar h_{t-1} = \\bar z_t W^\\top`, both on the sequential critical path.
The H100 profile of the LSTM train step (``benchmarks/results/nvidia-h100``)
shows three GEMM kernels per time step and ~2,200 kernels per step in all, so
the step is bound by their number, not by their work. The *hoisted* form here
keeps only :math:`\\bar z_t W^\\top` in the loop, stores :math:`\\bar z_t`, and
forms :math:`\\bar W = \\sum_t h_{t-1}^\\top \\bar z_t` as one
``(H, T*B) x (T*B, 4H)`` GEMM after it (a custom VJP).

The script checks that both forms give the library's forward pass
(``seqbench.unroll.scan``) and the same gradients, then times fwd+bwd of each
at ``--size`` for scan unroll 1 and 8. It is a measurement for deciding
whether the executor should adopt the hoisted form; the library does not
use it yet.

::

    python benchmarks/scan_grad_forms.py --size gpu --out $OUT/scan_grad_forms
    python benchmarks/scan_grad_forms.py --size tiny --n 2       # CPU check

Expected cost: ~30 s on one H100/H200, ~1 min on the 2-core CPU at ``cpu``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "src"))  # run from a checkout without installing

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
from jax import lax  # pylint: disable=wrong-import-position

import seqbench as sb  # pylint: disable=wrong-import-position
from seqbench.bench import run_metadata, time_compiled  # pylint: disable=wrong-import-position
from seqbench.provenance import write_atomic  # pylint: disable=wrong-import-position

SIZES = {
    "tiny": dict(batch=4, time=16, input_size=8, hidden=16),
    "cpu": dict(batch=16, time=128, input_size=64, hidden=128),
    "gpu": dict(batch=64, time=256, input_size=256, hidden=512),  # issue 6's reference size
}


def lstm_update(carry, pre):
  """The LSTM's elementwise part given ``pre = u_t + h_{t-1} W`` (gate order i, f, z, o)."""
  c, _ = carry
  i, f, z, o = jnp.split(pre, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(z)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


def autodiff_scan(w, u, carry0, unroll: int):
  """``ys`` of the recurrence over hoisted inputs ``u`` (T, B, 4H); JAX differentiates it."""
  def body(carry, u_t):
    return lstm_update(carry, u_t + carry[1] @ w)
  return lax.scan(body, carry0, u, unroll=unroll)[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def hoisted_scan(w, u, carry0, unroll: int):
  """The same function, with the recurrent weight's gradient as one GEMM."""
  return autodiff_scan(w, u, carry0, unroll)


def _hoisted_fwd(w, u, carry0, unroll):
  def body(carry, u_t):
    pre = u_t + carry[1] @ w
    new, y = lstm_update(carry, pre)
    return new, (y, carry, pre)
  _, (ys, carries, pres) = lax.scan(body, carry0, u, unroll=unroll)
  return ys, (w, carries, pres)


def _hoisted_bwd(unroll, residuals, ys_bar):
  w, carries, pres = residuals

  def body(carry_bar, inputs):
    carry_prev, pre, y_bar = inputs
    _, vjp = jax.vjp(lstm_update, carry_prev, pre)
    (c_bar, h_bar), pre_bar = vjp((carry_bar, y_bar))
    return (c_bar, h_bar + pre_bar @ w.T), pre_bar

  zeros = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a[0]), carries)
  carry0_bar, pre_bars = lax.scan(body, zeros, (carries, pres, ys_bar), reverse=True,
                                  unroll=unroll)
  w_bar = jnp.einsum("tbh,tbg->hg", carries[1], pre_bars)
  return w_bar, pre_bars, carry0_bar


hoisted_scan.defvjp(_hoisted_fwd, _hoisted_bwd)

FORMS = {"autodiff": autodiff_scan, "hoisted": hoisted_scan}


def _setup(cfg: dict, dtype):
  cell = sb.cells.LSTM(cfg["hidden"], dtype=dtype)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  params = cell.init(keys[0], cfg["input_size"])
  xs = jax.random.normal(keys[1], (cfg["batch"], cfg["time"], cfg["input_size"]), dtype)
  return cell, params, xs


def _loss(form, unroll):
  def loss(params, xs):
    u = jnp.moveaxis(xs, 1, 0) @ params["input_kernel"] + params["bias"]
    carry0 = (jnp.zeros(u.shape[1:2] + (u.shape[-1] // 4,), u.dtype),) * 2
    ys = FORMS[form](params["recurrent_kernel"], u, carry0, unroll)
    return jnp.mean(jnp.square(ys.astype(jnp.float32)))
  return loss


def check(cfg: dict, dtype, tol: float) -> float:
  """Largest difference: each form's outputs vs the library scan, and the gradients."""
  cell, params, xs = _setup(cfg, dtype)
  ref = sb.unroll.scan(cell, params, xs, unroll=1, hoist=True)
  u = jnp.moveaxis(xs, 1, 0) @ params["input_kernel"] + params["bias"]
  carry0 = cell.initial_state((cfg["batch"],))
  worst = 0.0
  for fn in FORMS.values():
    ys = jnp.moveaxis(fn(params["recurrent_kernel"], u, carry0, 1), 0, 1)
    worst = max(worst, float(jnp.max(jnp.abs(ys - ref))))
  grads = [jax.grad(_loss(form, 1))(params, xs) for form in FORMS]
  for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
    worst = max(worst, float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30)))
  if not worst <= tol:
    raise SystemExit(f"scan_grad_forms: the forms disagree by {worst:.3g} (> {tol})")
  return worst


def rows(cfg: dict, dtype, unrolls, n: int) -> list:
  _, params, xs = _setup(cfg, dtype)
  out = []
  for unroll in unrolls:
    for form in FORMS:
      grad = jax.grad(_loss(form, unroll))
      t = time_compiled(grad, params, xs, n=n)
      out.append({"form": form, "unroll": unroll, **cfg, **t.to_json()})
    base = out[-2]["median_ms"]
    for r in out[-2:]:
      r["speedup_vs_autodiff"] = base / r["median_ms"]
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", choices=sorted(SIZES), default="cpu")
  ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  ap.add_argument("--unrolls", default="1,8")
  ap.add_argument("--n", type=int, default=20)
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  cfg, dtype = SIZES[args.size], jnp.dtype(args.dtype)
  # Relative gradient tolerance: the forms sum the same products in another order.
  worst = check(cfg, dtype, tol=1e-3 if dtype == jnp.float32 else 5e-2)
  result = {"command": " ".join(["scan_grad_forms.py"] + (argv if argv is not None else sys.argv[1:])),
            "size": args.size, "max_difference": worst, "meta": run_metadata(args.dtype),
            "rows": rows(cfg, dtype, [int(u) for u in args.unrolls.split(",")], args.n)}
  lines = [f"# LSTM scan gradient forms ({args.size}, {args.dtype})", "",
           f"Device: {result['meta']['device_kind']}, git {result['meta']['git_sha']} "
           f"(dirty={result['meta']['git_dirty']}). Command: `{result['command']}`. "
           f"B={cfg['batch']} T={cfg['time']} D={cfg['input_size']} H={cfg['hidden']}; "
           f"forms agree to {worst:.2g}.", "",
           "| form | unroll | fwd+bwd median ms | min ms | compile s | vs autodiff |",
           "|---|---:|---:|---:|---:|---:|"]
  for r in result["rows"]:
    lines.append(f"| {r['form']} | {r['unroll']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                 f"{r['compile_s']:.2f} | {r['speedup_vs_autodiff']:.2f}x |")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    tag = f"scan_grad_forms_{args.size}_{args.dtype}"
    write_atomic(os.path.join(args.out, tag + ".json"), json.dumps(result, indent=1))
    write_atomic(os.path.join(args.out, tag + ".md"), text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
