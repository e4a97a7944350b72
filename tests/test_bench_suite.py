"""The throughput suite's rows, ratios, crossover, atomic writes and CLI end to end."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.flatten_util
import numpy as np
import optax
import pytest

from seqbench import provenance as P
from seqbench.bench import run as R
from seqbench.bench import suite as S
from seqbench.bench.timing import Timing

#: Keys every measured row of bench.jsonl carries.
ROW_KEYS = {"model", "family", "framework", "executor", "k", "mode", "batch", "time",
            "input_size", "hidden", "dtype", "device_count", "tokens_per_s", "median_ms",
            "min_ms", "n", "suite", "meta"}
#: Keys of the JAX rows' timing (torch rows time themselves).
TIMING_KEYS = {"lower_s", "compile_s", "traces", "flops", "temp_bytes", "times_ms"}
META_KEYS = {"git_sha", "git_dirty", "versions", "device_kind", "platform", "dtype",
             "matmul_precision", "device_count", "process_count"}


# ---------------------------------------------------------------- ratios


def _r(model, family, median_ms, mode="train", time=128, batch=16, dtype="float32", **kw):
  return {"model": model, "family": family, "mode": mode, "time": time, "batch": batch,
          "dtype": dtype, "median_ms": median_ms, **kw}


def test_ratio_is_baseline_time_over_row_time_preferring_torch():
  rows = [_r("torch nn.LSTM", "recurrent", 10.0), _r("flax OptimizedLSTMCell", "recurrent", 20.0),
          _r("seqbench LSTM", "recurrent", 4.0), _r("seqbench RNN", "recurrent", 40.0)]
  out = {r["model"]: r for r in S.add_ratios(rows)}
  assert out["seqbench LSTM"]["ratio_to_baseline"] == 2.5
  assert out["seqbench LSTM"]["baseline"] == "torch nn.LSTM"
  assert out["seqbench RNN"]["ratio_to_baseline"] == 0.25
  assert out["torch nn.LSTM"]["ratio_to_baseline"] == 1.0
  assert out["flax OptimizedLSTMCell"]["ratio_to_baseline"] == 0.5  # vs torch, too
  assert "ratio_to_baseline" not in rows[0]  # inputs are not modified


def test_ratio_falls_back_to_flax_without_torch():
  rows = [_r("flax OptimizedLSTMCell", "recurrent", 20.0), _r("seqbench LSTM", "recurrent", 5.0)]
  out = S.add_ratios(rows)
  assert out[1]["ratio_to_baseline"] == 4.0 and out[1]["baseline"] == "flax OptimizedLSTMCell"


def test_rows_without_a_matching_baseline_get_none():
  rows = [
      _r("torch nn.LSTM", "recurrent", 10.0),
      _r("seqbench TCN", "conv", 3.0),  # no torch TCN in this run
      _r("seqbench LSTM", "recurrent", 5.0, mode="stream"),  # baseline only has train
      _r("seqbench LSTM", "recurrent", 5.0, batch=32),  # other size
      _r("seqbench LSTM", "recurrent", 5.0, time=64),
      _r("seqbench LSTM", "recurrent", 5.0, dtype="bfloat16"),
      _r("seqbench LSTM", "recurrent", 5.0, device_count=8),  # other device count
      _r("something", "other", 1.0),  # a family without baselines
  ]
  out = S.add_ratios(rows)
  for row in out[1:]:
    assert row["ratio_to_baseline"] is None and row["baseline"] is None, row


def test_conv_rows_compare_with_the_torch_tcn():
  rows = [_r("torch TCN", "conv", 6.0, mode="forward"), _r("seqbench TCN", "conv", 2.0,
                                                            mode="forward")]
  assert S.add_ratios(rows)[1]["ratio_to_baseline"] == 3.0


# ---------------------------------------------------------------- crossover


def _s(executor, time, tokens_per_s):
  return {"executor": executor, "time": time, "tokens_per_s": tokens_per_s}


def test_crossover_is_the_smallest_T_where_b_wins():
  rows = [_s("scan", 64, 100.0), _s("trunc", 64, 50.0),
          _s("scan", 256, 100.0), _s("trunc", 256, 150.0),
          _s("scan", 1024, 100.0), _s("trunc", 1024, 90.0),
          _s("scan", 4096, 10.0), _s("trunc", 4096, 900.0)]
  assert S.crossover(rows, "scan", "trunc") == 256
  assert S.crossover(rows, "trunc", "scan") == 64


def test_crossover_none_when_b_never_wins_or_is_missing():
  rows = [_s("scan", 64, 100.0), _s("trunc", 64, 100.0),  # a tie is not a win
          _s("scan", 256, 100.0), _s("trunc", 256, 99.0), _s("trunc", 1024, 500.0)]
  assert S.crossover(rows, "scan", "trunc") is None
  assert S.crossover([], "scan", "trunc") is None


def test_geometric_mean():
  assert S.geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
  assert S.geometric_mean([2.0, None, 8.0]) == pytest.approx(4.0)
  assert math.isnan(S.geometric_mean([None]))


# ---------------------------------------------------------------- rows


def test_row_schema_from_a_timing():
  timing = Timing(median_ms=2.0, min_ms=1.5, n=3, lower_s=0.1, compile_s=0.2, traces=1,
                  flops=1e9, temp_bytes=0, times_ms=(2.0, 1.5, 2.5))
  entry = S.entries(S.SUITES["tiny"])[0]
  size = S.SUITES["tiny"]
  make_row = S._row  # pylint: disable=protected-access
  row = make_row(entry, "train", size, size.time, size.batch, timing, "float32",
                 "NVIDIA H100 80GB HBM3")
  assert ROW_KEYS - {"suite", "meta"} <= set(row) and TIMING_KEYS <= set(row)
  assert row["device_count"] == 1
  assert row["tokens_per_s"] == pytest.approx(size.batch * size.time / 2e-3)
  assert row["pct_peak"] == pytest.approx(100 * 1e9 / 2e-3 / 494.5e12)
  stream = make_row(entry, "stream", size, size.time, size.batch, timing, "float32", "cpu")
  assert stream["tokens_per_s"] == pytest.approx(size.batch / 2e-3) and "pct_peak" not in stream


def test_suite_names_match_the_parser():
  assert set(R.SUITE_NAMES) == set(S.SUITES)
  tiny = S.SUITES["tiny"]
  assert tiny.n == 2 and tiny.batch * tiny.time <= 256


@pytest.mark.parametrize("spec,available,expected", [
    ("auto", 1, []), ("auto", 8, [1, 2, 4, 8]), ("all", 1, [1]), ("all", 6, [1, 2, 4, 6]),
    ("off", 8, []), ("4", 8, [1, 2, 4]), ("8,1", 8, [1, 8]), ("1", 8, [1]),
])
def test_parse_devices(spec, available, expected):
  assert R.parse_devices(spec, available) == expected


@pytest.mark.parametrize("spec", ["16", "0,2", "two", ","])
def test_parse_devices_rejects(spec):
  with pytest.raises(ValueError, match="--devices"):
    R.parse_devices(spec, 8)


def test_bad_devices_flag_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as e:
    R.main(["--suite", "tiny", "--devices", "two", "--out", "/nonexistent/never-written"])
  assert e.value.code == 2 and "--devices" in capsys.readouterr().err


def test_only_that_matches_nothing_is_a_usage_error_and_writes_nothing(capsys, tmp_path):
  out = tmp_path / "bench"
  with pytest.raises(SystemExit) as e:
    R.main(["--suite", "tiny", "--only", "transformer", "--out", str(out)])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "--only 'transformer' matches no entry" in err
  assert "seqbench LSTM" in err  # the names it could have matched
  assert not out.exists()


def test_output_directory_that_cannot_be_made_is_a_usage_error(capsys, tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(SystemExit) as e:
    R.main(["--suite", "tiny", "--only", "lstm", "--no-accuracy", "--no-scaling",
            "--out", str(tmp_path / "a_file" / "bench")])
  assert e.value.code == 2 and "cannot create output directory" in capsys.readouterr().err


def test_device_the_host_lacks_is_a_usage_error(tmp_path):
  if jax.default_backend() != "cpu":
    pytest.skip("this host has an accelerator")
  out = tmp_path / "never"
  proc = subprocess.run([sys.executable, "-m", "seqbench", "bench", "--suite", "tiny",
                         "--device", "gpu", "--out", str(out)],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "no usable backend for --device gpu" in proc.stderr
  assert "Traceback" not in proc.stderr and not out.exists()


def test_make_output_dir_creates_nested_folders_and_names_the_bad_one(tmp_path, monkeypatch):
  P.make_output_dir(str(tmp_path / "x" / "y"))
  assert (tmp_path / "x" / "y").is_dir()
  (tmp_path / "a_file").write_text("")
  with pytest.raises(P.OutputDirError, match=r"cannot create output directory .*a_file/z"):
    P.make_output_dir(str(tmp_path / "a_file" / "z"))
  # Root may write anywhere, so a read-only folder is simulated at os.access.
  monkeypatch.setattr(P.os, "access", lambda path, mode: False)
  with pytest.raises(P.OutputDirError, match=r"output directory '.*/x' is not writable"):
    P.make_output_dir(str(tmp_path / "x"))


# ---------------------------------------------------------------- atomic writes


def _leftovers(folder):
  return [f for f in os.listdir(folder) if f.startswith(".tmp-")]


def test_write_atomic_writes_text_and_bytes(tmp_path):
  P.write_atomic(str(tmp_path / "a.txt"), "héllo\n")
  P.write_atomic(str(tmp_path / "sub" / "b.bin"), b"\x00\x01")
  assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
  assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
  assert not _leftovers(tmp_path)
  # The mode a plain open() gives (mkstemp's temporary file is private to its owner).
  mask = os.umask(0o022)
  P._umask.cache_clear()
  try:
    P.write_atomic(str(tmp_path / "c.txt"), "x")
  finally:
    os.umask(mask)
    P._umask.cache_clear()
  assert (os.stat(tmp_path / "c.txt").st_mode & 0o777) == 0o644


class _FailingFile:
  """Writes the first half of what it is given, then fails (a full disk, a kill)."""

  def __init__(self, f, exc):
    self.f, self.exc = f, exc

  def write(self, data):
    self.f.write(data[:len(data) // 2])
    self.f.flush()
    raise self.exc

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()
    return False


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_the_old_file_and_no_partial(tmp_path, monkeypatch, exc):
  path = tmp_path / "bench.jsonl"
  path.write_text('{"old": 1}\n')
  real_fdopen = os.fdopen
  monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), exc))
  with pytest.raises(type(exc)):
    P.write_atomic(str(path), '{"new": 2}\n' * 1000)
  monkeypatch.undo()
  assert path.read_text() == '{"old": 1}\n'
  assert not _leftovers(tmp_path)
  # A new file that fails mid-write does not appear at all.
  monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode), exc))
  with pytest.raises(type(exc)):
    P.write_atomic(str(tmp_path / "REPORT.md"), "# report\n" * 100)
  monkeypatch.undo()
  assert not (tmp_path / "REPORT.md").exists() and not _leftovers(tmp_path)


def test_failure_at_rename_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "REPORT.md"
  path.write_text("old")

  def boom(src, dst):
    raise OSError("rename failed")

  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(OSError, match="rename failed"):
    P.write_atomic(str(path), "new")
  monkeypatch.undo()
  assert path.read_text() == "old" and not _leftovers(tmp_path)


_WRITER = r'''
import sys
from seqbench.provenance import write_atomic
path, n = sys.argv[1], 1 << 21
print("ready", flush=True)
i = 0
while True:
  write_atomic(path, ("AB"[i % 2] * n) + "\n")
  i += 1
'''


def test_sigkill_during_writes_never_leaves_a_partial_file(tmp_path):
  """A real process killed with SIGKILL while it rewrites a 2 MiB file."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  path = tmp_path / "bench.jsonl"
  for delay in (0.05, 0.13, 0.31):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 30
    while not path.exists() and time.time() < deadline:
      time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    data = path.read_text()
    assert len(data) == (1 << 21) + 1 and data[:-1] in ("A" * (1 << 21), "B" * (1 << 21))
  # A kill can leave a hidden temporary file behind, never a partial target.
  assert [f for f in os.listdir(tmp_path) if not f.startswith(".tmp-")] == ["bench.jsonl"]


# ---------------------------------------------------------------- plots


def test_plot_accuracy_vs_throughput(tmp_path):
  rows = [  # hand-made: these numbers are test data, not results
      {"model": "seqbench LSTM", "executor": "scan", "tokens_per_s": 2e5, "nll": 8.6},
      {"model": "seqbench LSTM", "executor": "truncated(k=16)", "tokens_per_s": 5e4, "nll": 8.7},
      {"label": "TCN", "tokens_per_s": 9e5, "nll": 8.4},
      {"model": "no metric", "executor": "x", "tokens_per_s": 1e5},
  ]
  path = tmp_path / "acc.png"
  assert R.plot_accuracy_vs_throughput(rows, str(path), metric="nll",
                                       metric_label="test NLL") == str(path)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert R.plot_accuracy_vs_throughput(rows[3:], str(tmp_path / "none.png"), metric="nll") is None
  assert not (tmp_path / "none.png").exists()


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench")
  cmd = [sys.executable, "-m", "seqbench", "bench", "--suite", "tiny", "--device", "cpu",
         "--only", "LSTM truncated,flax,TCN", "--cpu-devices", "2", "--out", str(out)]
  # Its own cache home: the command adds XLA's GPU autotune cache under it.
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "SEQBENCH_AUTOTUNE_CACHE")}
  env["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(out), env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
  return out, proc.stdout, rows, env["XDG_CACHE_HOME"]


def test_end_to_end_writes_rows_report_and_plot(bench_run):
  out, _, rows, _ = bench_run
  assert sorted(os.listdir(out)) == ["REPORT.md", "bench.jsonl", "throughput_vs_T.png"]
  assert (out / "throughput_vs_T.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  report = (out / "REPORT.md").read_text()
  assert report.startswith("# seqbench bench — suite `tiny`")
  assert "## Train throughput vs sequence length" in report
  assert "## Data-parallel train step" in report and "fake CPU devices" in report
  main = [r for r in rows if "sweep" not in r]
  for r in main:
    assert r["model"] in report
  assert all(r["output_dtype"] == "float32" for r in main
             if r["framework"] == "jax" and r["mode"] != "stream")
  assert "Computed in another dtype" not in report


def test_precision_note_names_models_whose_outputs_left_the_row_dtype():
  rows = [{"model": "seqbench LSTM", "dtype": "bfloat16", "output_dtype": "bfloat16"},
          {"model": "flax OptimizedLSTMCell", "dtype": "bfloat16", "output_dtype": "float32"},
          {"model": "flax OptimizedLSTMCell", "dtype": "bfloat16", "output_dtype": "float32"},
          {"model": "torch nn.LSTM", "dtype": "bfloat16"}]
  assert R.precision_note(rows) == \
      "Computed in another dtype than the row's: flax OptimizedLSTMCell (float32)."
  assert R.precision_note(rows[:1] + rows[3:]) == ""


def test_end_to_end_jsonl_schema(bench_run):
  _, _, rows, cache_home = bench_run
  main = [r for r in rows if "sweep" not in r]
  assert {r["mode"] for r in main} == {"train", "forward", "stream"}
  # torch rows join when torch is importable (`make bench` installs it; `make test` does not).
  jax_models = {r["model"] for r in main if r["framework"] == "jax"}
  assert jax_models == {"seqbench LSTM", "seqbench TCN", "flax OptimizedLSTMCell"}
  assert {r["model"] for r in main if r["framework"] != "jax"} <= {"torch nn.LSTM", "torch TCN"}
  for r in rows:
    assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
    if r["framework"] == "jax":
      assert TIMING_KEYS <= set(r) and r["traces"] == 1
    assert r["suite"] == "tiny" and r["dtype"] == "float32"
    assert META_KEYS <= set(r["meta"]), META_KEYS - set(r["meta"])
    assert r["meta"]["versions"]["jax"] and r["meta"]["platform"] == "cpu"
    assert r["meta"]["device_count"] == 2 and r["meta"]["matmul_precision"]
    cache_dir = os.path.join(cache_home, "seqbench", "xla-autotune")
    assert f"--xla_gpu_per_fusion_autotune_cache_dir={cache_dir}" in r["meta"]["xla_flags"]
    assert r["meta"]["xla_autotune_cache"]["dir"] == cache_dir
    assert r["tokens_per_s"] > 0 and r["min_ms"] <= r["median_ms"]
    assert len(r["times_ms"]) == r["n"] == 2
  for r in main:
    assert "ratio_to_baseline" in r and "baseline" in r and r["device_count"] == 1
  # Each train row says which optimizer its step ran.
  for r in rows:
    if r["mode"] == "train" and r["framework"] == "jax":
      assert r["optimizer"] == S.BENCH_OPTIMIZERS["cpu"], r["model"]
    elif r["mode"] == "train":
      assert r["optimizer"].startswith("torch.optim.Adam"), r["model"]
    else:
      assert "optimizer" not in r, (r["model"], r["mode"])
  lstm = [r for r in main if r["model"] == "seqbench LSTM"]
  # The baseline preference: torch's LSTM when it was measured, else flax's.
  expected = ("torch nn.LSTM" if any(r["model"] == "torch nn.LSTM" for r in main)
              else "flax OptimizedLSTMCell")
  assert all(r["baseline"] == expected and r["ratio_to_baseline"] > 0 for r in lstm)
  scaling = [r for r in rows if r.get("sweep") == "scaling"]
  assert {r["time"] for r in scaling} == set(S.SUITES["tiny"].scaling_times)
  assert all(r["mode"] == "train" for r in scaling)
  devices = [r for r in rows if r.get("sweep") == "devices"]
  assert sorted((r["executor"], r["device_count"]) for r in devices) == [
      ("conv", 1), ("conv", 2), ("truncated(k=16)", 1), ("truncated(k=16)", 2)]
  assert all(r["batch"] == r["per_device_batch"] * r["device_count"] for r in devices)
  assert all(r["speedup_vs_1_device"] > 0 for r in devices)


def test_end_to_end_stdout_table_has_one_line_per_row(bench_run):
  _, stdout, rows, _ = bench_run
  lines = stdout.splitlines()
  head = lines.index("| model | executor | mode | median ms | min ms | k tokens/s | compile s "
                     "| vs baseline | baseline |")
  body = []
  for line in lines[head + 2:]:
    if not line.startswith("|"):
      break
    body.append(line)
  main = [r for r in rows if "sweep" not in r]
  assert len(body) == len(main)
  for line, r in zip(body, main):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == [r["model"], r["executor"], r["mode"]]
  assert any(l.startswith("| model | executor | devices |") for l in lines)
  assert "wrote" in lines[-1]


def test_every_suite_entry_builds_and_runs_in_bfloat16():
  # The bf16 suite on an H200 stopped twice at an entry that could not be
  # built in bfloat16 (the LRU's complex state; flax's orthogonal init, a QR
  # with no bfloat16 form). Every entry at the tiny size; the train mode
  # differs from forward only by the optimizer, so forward and stream cover
  # every parameter and state path at a third of the compile time.
  size = dataclasses.replace(S.SUITES["tiny"], n=1)
  for entry in S.entries(size):
    # Standard promotion here: optax's Adam bias correction mixes a Python
    # float with its int32 step count, which strict promotion rejects in
    # bfloat16 (not our code; the bench runs with standard promotion).
    with jax.numpy_dtype_promotion("standard"):
      rows = list(S.run_entry(entry, size, jnp.bfloat16, modes=("forward", "stream")))
    assert rows, entry.name
    for row in rows:
      assert row["dtype"] == "bfloat16" and row["median_ms"] > 0, (entry.name, row["mode"])


def test_the_accelerator_bench_optimizer_updates_every_entry_as_per_leaf_adam_does():
  # On GPU/TPU train rows step Adam on one raveled vector (torch's multi-tensor
  # Adam, in effect); the CPU keeps per-leaf Adam. Adam is elementwise, so
  # both are the same update; and raveling must not promote: every entry's
  # params share one dtype.
  assert S.bench_optimizer_name("cpu") == S.BENCH_OPTIMIZERS["cpu"]
  assert S.bench_optimizer_name("gpu") == S.bench_optimizer_name("tpu") == \
      S.BENCH_OPTIMIZERS["accelerator"]
  size = dataclasses.replace(S.SUITES["tiny"], n=1)
  xs = jax.random.normal(jax.random.PRNGKey(1), (size.batch, size.time, size.input_size))
  per_leaf = optax.adam(1e-3)
  checked = set()
  for entry in S.entries(size):
    # The executor does not change the parameters: one check per model.
    if entry.name in checked:
      continue
    checked.add(entry.name)
    for dtype in (jnp.bfloat16, jnp.float32):
      shapes = jax.eval_shape(lambda key: entry.build(size, dtype, key)[0],  # pylint: disable=cell-var-from-loop
                              jax.random.PRNGKey(0))
      assert {l.dtype for l in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(dtype)}, \
          (entry.name, entry.executor)
    # The step itself for each parameter layout (the RNN's and GRU's first
    # entries unroll 8 steps and cost 3-8 s of compile for nothing new).
    if entry.executor not in ("scan", "parallel", "conv", "nn.RNN"):
      continue
    params, apply, _ = entry.build(size, jnp.float32, jax.random.PRNGKey(0))
    # The CPU's optimizer keeps a moment per leaf; the accelerators' one vector.
    cpu_moments = S.bench_optimizer("cpu").init(params)[0].mu
    assert jax.tree_util.tree_structure(cpu_moments) == jax.tree_util.tree_structure(params)
    flat = S.bench_optimizer("gpu")
    assert len(jax.tree_util.tree_leaves(flat.init(params))) <= 3
    # Standard promotion: optax's bias correction mixes a Python float with
    # its int32 step count (as in the bf16 test below).
    with jax.numpy_dtype_promotion("standard"):
      new_flat, _, loss_flat = jax.jit(S.train_step(apply, flat))(params, flat.init(params), xs)
      new_leaf, _, loss_leaf = jax.jit(S.train_step(apply, per_leaf))(
          params, per_leaf.init(params), xs)
    assert float(loss_flat) == float(loss_leaf)
    for a, b, p in zip(*(jax.tree_util.tree_leaves(t) for t in (new_flat, new_leaf, params))):
      assert a.dtype == p.dtype and a.shape == p.shape
      # The first Adam step moves each weight by ~lr; the two agree to rounding.
      np.testing.assert_allclose(np.asarray(a - p), np.asarray(b - p), rtol=1e-4, atol=1e-9,
                                 err_msg=f"{entry.name} {entry.executor}")
    assert np.max(np.abs(np.asarray(jax.flatten_util.ravel_pytree(new_flat)[0]
                                    - jax.flatten_util.ravel_pytree(params)[0]))) > 5e-4


def test_every_suite_entry_computes_in_bfloat16_and_agrees_with_float32():
  # A bfloat16 row must be bfloat16 arithmetic: flax's default float32 initial
  # carry once promoted the flax baseline's recurrent matmul to float32 in its
  # "bfloat16" rows. Each entry's forward output is bfloat16, and within
  # bfloat16 round-off of the float32 model with the same (rounded) weights.
  size = dataclasses.replace(S.SUITES["tiny"], n=1)
  xs = jax.random.normal(jax.random.PRNGKey(1), (size.batch, size.time, size.input_size))
  for entry in S.entries(size):
    p32, apply32, _ = entry.build(size, jnp.float32, jax.random.PRNGKey(0))
    p16, apply16, _ = entry.build(size, jnp.bfloat16, jax.random.PRNGKey(0))
    rounded = jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), p32, p16)
    with jax.numpy_dtype_promotion("standard"):
      y32 = np.asarray(jax.jit(apply32)(p32, xs), np.float64)
      y16 = jax.jit(apply16)(rounded, xs.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16, (entry.name, entry.executor, y16.dtype)
    # bf16 has 8 significant bits (2**-8 = 0.4 %); 16 steps of it measured
    # <= 1.4 % of the output's scale for every entry.
    err = np.max(np.abs(np.asarray(y16, np.float64) - y32)) / np.max(np.abs(y32))
    assert err < 0.04, (entry.name, entry.executor, err)


def test_launcher_git_sha_wins_over_the_copy_s_own_git(monkeypatch):
  # Inside this checkout git answers; the launcher's SHA must still win (a
  # remote copy's .git can be stale). git_state is cached per process.
  def fresh():
    P.git_state.cache_clear()
    return P.git_state()

  try:
    assert fresh()["git_sha"] != "0" * 40
    monkeypatch.setenv("SEQBENCH_GIT_SHA", "0" * 40)
    monkeypatch.setenv("SEQBENCH_GIT_DIRTY", "1")
    assert fresh() == {"git_sha": "0" * 40, "git_dirty": True}
    monkeypatch.setenv("SEQBENCH_GIT_DIRTY", "0")
    assert fresh()["git_dirty"] is False
    # Not passed: unknown, not clean.
    monkeypatch.delenv("SEQBENCH_GIT_DIRTY")
    assert fresh()["git_dirty"] is None
  finally:
    monkeypatch.undo()
    P.git_state.cache_clear()


@pytest.mark.parametrize("status, dirty", [
    ("", False),
    (" M src/seqbench/train.py", True),            # a changed tracked file
    ("?? benchmarks/new_script.py", True),          # the code behind a result, not committed
    ("?? benchmarks/results/x/results.jsonl\n?? benchmarks/results/x/report.md", False),
    ("?? out/plots/a.png\n?? scripts/run.sh", True),
    # A sweep appending to committed results and its log changes no code...
    (" M benchmarks/results/cpu/repro/sweep.log\n M benchmarks/results/cpu/repro/results.jsonl",
     False),
    # ...but code next to them, or a tracked file renamed into code, does.
    (" M benchmarks/results/cpu/repro/sweep.log\n M src/seqbench/cells.py", True),
    ("R  old.txt -> benchmarks/tool.py", True),
])
def test_dirty_counts_uncommitted_code_not_new_results(status, dirty):
  assert P.dirty_from_status(status) is dirty
