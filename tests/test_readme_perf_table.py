"""The README's performance table is generated from committed results, never typed."""

import json
import os
import subprocess
import sys

from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_performance_table_matches_committed_results():
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "perf_table.py"), "--check"],
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr


def test_table_rows_point_at_existing_result_files():
  perf_table = load_script("perf_table")
  for body in (perf_table.table(), perf_table.compile_table()):
    sources = [line.rsplit("`", 2)[1] for line in body.splitlines()[2:]]
    assert sources, "no benchmark results found"
    for rel in sources:
      assert os.path.exists(os.path.join(ROOT, rel)), rel


def _row(model, compile_s, flags="", cache=None):
  meta = {"device_kind": "gpu0", "dtype": "float32", "xla_flags": flags}
  if cache is not None:
    meta["xla_autotune_cache"] = cache
  return {"framework": "jax", "model": model, "executor": "conv", "mode": "train",
          "compile_s": compile_s, "meta": meta}


def test_compile_table_takes_the_slowest_step_and_says_the_cache_state(tmp_path):
  perf_table = load_script("perf_table")
  cache = "--xla_gpu_per_fusion_autotune_cache_dir=/c"
  empty, full = {"dir": "/c", "entries": 0}, {"dir": "/c", "entries": 3}
  runs = {
      "cold": [_row("A", 7.5, cache, empty), _row("B", 5.0, cache, empty),
               _row("C", 1.0, cache, empty)],
      "warm": [_row("A", 2.4, cache, full)],
      "off": [_row("A", 3.4, "--xla_gpu_autotune_level=0")],
  }
  for name, rows in runs.items():
    d = tmp_path / "benchmarks" / "results" / "gpu0" / name
    d.mkdir(parents=True)
    (d / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  lines = perf_table.compile_table(str(tmp_path)).splitlines()[2:]
  by_run = {line.rsplit("/", 2)[1]: line for line in lines}
  assert "| cold (empty) | 7.50 s | A conv train | 2 of 3 |" in by_run["cold"]
  assert "| warm (3 entries) | 2.40 s | A conv train | 0 of 1 |" in by_run["warm"]
  assert "| autotuning off | 3.40 s |" in by_run["off"]


def test_precision_note_names_a_side_that_computed_in_another_dtype():
  perf_table = load_script("perf_table")
  ours = {"model": "seqbench LSTM", "dtype": "bfloat16", "output_dtype": "bfloat16"}
  flax_new = {"model": "flax OptimizedLSTMCell", "dtype": "bfloat16", "output_dtype": "bfloat16"}
  # Rows from before output_dtype existed: flax's float32 carry promoted them.
  flax_old = {"model": "flax OptimizedLSTMCell", "dtype": "bfloat16"}
  flax_f32 = {"model": "flax OptimizedLSTMCell", "dtype": "float32"}
  mixed = {"model": "seqbench LSTM", "dtype": "bfloat16", "output_dtype": "float32"}
  assert perf_table._precision_note(ours, flax_new) == ""
  assert perf_table._precision_note(ours, flax_f32) == ""
  assert perf_table._precision_note(ours, flax_old) == \
      " (flax OptimizedLSTMCell computed in float32)"
  assert perf_table._precision_note(mixed, flax_new) == " (seqbench LSTM computed in float32)"


def test_torch_lstm_inference_rows_without_their_module_mode_are_marked():
  perf_table = load_script("perf_table")
  ours = {"model": "seqbench LSTM", "mode": "forward", "dtype": "float32"}
  old = {"model": "torch nn.LSTM", "mode": "forward", "dtype": "float32"}
  new = dict(old, torch_module_mode="eval")
  assert perf_table._precision_note(ours, old) == " (torch nn.LSTM in training mode)"
  assert perf_table._precision_note(ours, new) == ""
  # Train rows always ran in training mode, as they should.
  assert perf_table._precision_note(dict(ours, mode="train"), dict(old, mode="train")) == ""
