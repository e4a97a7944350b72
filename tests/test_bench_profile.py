"""The step profiler: interval arithmetic, which trace lines count, a real CPU trace."""

import jax
import jax.numpy as jnp
import pytest

from seqbench.bench import profile

from helpers import load_script


def _meta(pid, tid, pname, tname):
  return [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": pname}},
          {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": tname}}]


def _x(pid, tid, ts, dur, name):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name}


def test_union_counts_overlaps_once():
  assert profile.union_length([]) == 0
  assert profile.union_length([(0, 2), (1, 3), (5, 6)]) == 4
  assert profile.union_length([(0, 10), (2, 3), (4, 5)]) == 10
  assert profile.union_length([(3, 4), (0, 1)]) == 2


def test_gpu_trace_counts_stream_lines_only():
  events = (_meta(1, 10, "/device:GPU:0", "Stream #13(Compute)")
            + _meta(1, 11, "/device:GPU:0", "Stream #14(MemcpyD2D)")
            + _meta(1, 12, "/device:GPU:0", "XLA Ops")
            + _meta(2, 20, "/host:CPU", "python"))
  # Two calls: on stream 13 kernels a (2x) and b, on stream 14 one copy that
  # overlaps b; the "XLA Ops" line repeats them and must not count.
  events += [_x(1, 10, 0, 100, "a"), _x(1, 10, 150, 50, "b"), _x(1, 11, 180, 40, "copy"),
             _x(1, 10, 1000, 100, "a"), _x(1, 12, 0, 300, "fusion"),
             _x(2, 20, 0, 2000, "python step")]
  s = profile.summarize(events, n=2, wall_ms=1.0)
  assert s.kernels_per_call == 2.0                   # 4 kernels over 2 calls
  assert s.busy_ms == pytest.approx((100 + 70 + 100) / 1e3 / 2)   # b and copy overlap
  assert s.kernel_sum_ms == pytest.approx((100 + 50 + 40 + 100) / 1e3 / 2)
  assert s.idle_ms == pytest.approx(1.0 - s.busy_ms)
  assert s.top_kernels[0] == ("a", 1.0, pytest.approx(0.1))
  assert all("Stream" in line for line in s.lines)
  assert {x[1] for x in s.all_lines} == {"Stream #13(Compute)", "Stream #14(MemcpyD2D)",
                                         "XLA Ops", "python"}


def test_cpu_trace_counts_xla_worker_threads():
  events = (_meta(5, 1, "/host:CPU", "python")
            + _meta(5, 2, "/host:CPU", "tf_XLAEigen/123"))
  events += [_x(5, 1, 0, 500, "dispatch"), _x(5, 2, 10, 30, "dot"), _x(5, 2, 40, 5, "tanh")]
  s = profile.summarize(events, n=1, wall_ms=0.5)
  assert s.kernels_per_call == 2
  assert s.busy_ms == pytest.approx(0.035)
  assert s.lines == ("/host:CPU / tf_XLAEigen/123",)


def test_bad_n():
  with pytest.raises(ValueError, match="n must be >= 1"):
    profile.summarize([], n=0, wall_ms=1.0)


def test_profile_of_a_real_cpu_step():
  a = jnp.ones((128, 128), jnp.float32)
  s = profile.profile_compiled(lambda x: jnp.tanh(x @ x).sum(), a, n=3)
  assert s.n == 3 and s.wall_ms > 0
  assert s.kernels_per_call >= 1
  assert 0 < s.busy_ms <= s.wall_ms
  assert s.to_json()["busy_fraction"] == pytest.approx(s.busy_ms / s.wall_ms)


def test_profile_calls_threads_state_through_a_donating_step():
  step = jax.jit(lambda s: s + 1.0, donate_argnums=0)
  holder = {"s": jnp.zeros((64,), jnp.float32)}

  def call():
    holder["s"] = step(holder["s"])
    return holder["s"]

  s = profile.profile_calls(call, n=4, warmup=1)
  assert s.n == 4
  assert float(holder["s"][0]) == 5.0   # 1 warm-up + 4 profiled calls, each one step


def test_profile_steps_script_writes_a_table(tmp_path):
  import importlib.util
  import json
  import os
  path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "profile_steps.py")
  spec = importlib.util.spec_from_file_location("profile_steps", path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  # optax's Adam mixes its int32 step count with floats, which strict
  # promotion rejects (as in test_bench_suite's train rows).
  with jax.numpy_dtype_promotion("standard"):
    assert script.main(["--suite", "tiny", "--targets", "lstm-scan,tcn", "--n", "2",
                        "--out", str(tmp_path)]) == 0
  rows = json.loads((tmp_path / "profile.json").read_text())["rows"]
  assert [r["target"] for r in rows] == ["lstm-scan", "tcn"]
  for r in rows:
    assert 0 < r["profile"]["busy_ms"] <= r["profile"]["wall_ms"]
  table = (tmp_path / "profile.md").read_text()
  assert "| lstm-scan | seqbench LSTM scan(unroll=8) train, B=8 T=16 H=16 |" in table
  with pytest.raises(SystemExit):
    script.main(["--targets", "no-such-step", "--out", str(tmp_path)])


def test_scan_grad_forms_agree_and_are_timed(tmp_path):
  import json
  script = load_script("scan_grad_forms", "benchmarks")
  assert script.main(["--size", "tiny", "--unrolls", "1,2", "--n", "2", "--out", str(tmp_path)]) == 0
  result = json.loads((tmp_path / "scan_grad_forms_tiny_float32.json").read_text())
  assert result["max_difference"] < 1e-4
  assert [(r["form"], r["unroll"]) for r in result["rows"]] == [
      ("autodiff", 1), ("hoisted", 1), ("autodiff", 2), ("hoisted", 2)]
  # The hoisted form's backward loop holds one GEMM per step, autodiff's two.
  cfg = script.SIZES["tiny"]
  _, params, xs = script._setup(cfg, jnp.float32)

  def loop_dots(form):
    # dot_generals per scan body in the gradient's jaxpr (the forward scan
    # has one; autodiff's backward scan two, the hoisted one one).
    counts = []

    def walk(jaxpr):
      for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
          body = eqn.params["jaxpr"].jaxpr
          counts.append(sum(e.primitive.name == "dot_general" for e in body.eqns))
        for v in eqn.params.values():  # into jit and custom-VJP calls
          inner = getattr(v, "jaxpr", None)
          if inner is not None:
            walk(getattr(inner, "jaxpr", inner))

    walk(jax.make_jaxpr(jax.grad(script._loss(form, 1)))(params, xs).jaxpr)
    return counts

  assert max(loop_dots("autodiff")) == 2
  assert max(loop_dots("hoisted")) == 1


def test_projection_forms_agree_with_the_float64_svd_clip(tmp_path):
  import json
  script = load_script("projection_forms", "benchmarks")
  script.main(["--out", str(tmp_path), "--batch", "2", "--hidden", "24", "--repeats", "2"])
  result = json.loads((tmp_path / "projection_forms.json").read_text())
  assert [r["method"] for r in result["rows"]] == ["gram", "polar", "svd"]
  for r in result["rows"]:
    assert r["singular_values_above_lam"] > 0  # the clip binds
    assert r["max_abs_diff_vs_svd64"] < 1e-5, r
    assert r["max_spectral_norm"] <= 1 + 1e-5, r
    assert r["median_ms"] > 0
  assert "| polar | 2 x 24 |" in (tmp_path / "projection_forms.md").read_text()
