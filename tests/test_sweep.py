"""Sweeps: grid as data, shard partitioning, resume after SIGKILL, bad input."""

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from seqbench import provenance, sweep
from seqbench.experiments import ConfigError

from helpers import signal_when

# A tiny adding-problem setup (as in test_train): seconds per run.
TINY = {
    "task.length": 12, "task.n_train": 64, "task.n_test": 32,
    "model.hidden_size": 8, "train.batch_size": 16, "train.eval_batch_size": 32,
}
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _sets(overrides):
  out = []
  for k, v in overrides.items():
    out += ["--set", f"{k}={v}"]
  return out


def test_grid_is_deterministic_data():
  a = sweep.build_grid(["tcn-adding-*", "tcn-copy-rnn"], 3, {"model.hidden_size": 8}, smoke=True)
  b = sweep.build_grid(["tcn-adding-*", "tcn-copy-rnn"], 3, {"model.hidden_size": 8}, smoke=True)
  assert a == b
  assert [p.index for p in a] == list(range(len(a)))
  assert [(p.experiment, p.seed) for p in a[:3]] == [("tcn-adding-tcn", s) for s in range(3)]
  assert a[-1].experiment == "tcn-copy-rnn" and a[-1].seed == 2
  assert len({p.run_id for p in a}) == len(a)
  # A name matched twice appears once; grid names expand to their points.
  assert len(sweep.build_grid(["tcn-adding-rnn", "tcn-adding-r*"], 1)) == 1
  lam = sweep.build_grid(["lam-jsb-rnn"], 1)
  assert [p.experiment for p in lam][0] == "lam-jsb-rnn-lam0.5" and len(lam) == 6


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 64])
def test_shards_partition_the_grid(n):
  grid = sweep.build_grid(["tcn-*"], 3)
  shards = [sweep.shard(grid, i, n) for i in range(n)]
  ids = [p.run_id for s in shards for p in s]
  assert sorted(ids) == sorted(p.run_id for p in grid)  # every run in exactly one shard
  assert len(ids) == len(set(ids))
  assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
  assert shards == [sweep.shard(sweep.build_grid(["tcn-*"], 3), i, n) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_vmap_shards_keep_each_group_on_one_host(n):
  grid = sweep.build_grid(["mh-jsb-*", "tcn-jsb-*"], 3)
  groups = sweep.vmap_groups(grid, vmap=True)
  shards = [sweep.shard(grid, i, n, vmap=True) for i in range(n)]
  ids = [p.run_id for s in shards for p in s]
  assert sorted(ids) == sorted(p.run_id for p in grid) and len(ids) == len(set(ids))
  where = {p.run_id: i for i, s in enumerate(shards) for p in s}
  for g in groups:
    assert len({where[p.run_id] for p in g}) == 1  # no group is split across hosts
  assert shards == [sweep.shard(sweep.build_grid(["mh-jsb-*", "tcn-jsb-*"], 3), i, n, vmap=True)
                    for i in range(n)]


def test_vmap_groups_join_variants_that_share_shapes():
  # (The λ grid keeps PyTorch's init, 100 epochs and the input Linear: the same
  # overrides put the Table 1 rows on its settings.)
  grid = sweep.build_grid(["mh-jsb-rnn-*", "mh-jsb-lstm-unstable", "lam-jsb-rnn"], 1,
                          {"model.init_scheme": "pytorch", "train.epochs": 100,
                           "model.input_kind": "linear", "model.embed_size": 88})
  groups = sweep.vmap_groups(grid, vmap=True)
  names = [sorted({p.experiment for p in g}) for g in groups]
  # Stable/unstable RNN and the RNN λ sweep share every shape and setting but
  # stable/lam: one program. The LSTM (other cell) and the authors'-layout
  # LSTM (truncated executor) cannot join it.
  rnn = [g for g in names if "mh-jsb-rnn-stable" in g]
  assert len(rnn) == 1 and "mh-jsb-rnn-unstable" in rnn[0]
  assert {n for n in rnn[0] if n.startswith("lam-")} == {
      p.experiment for p in grid if p.experiment.startswith("lam-")}
  assert ["mh-jsb-lstm-unstable"] in names
  # Every point is in exactly one group, and seeds stay with their experiment.
  flat = [p.index for g in groups for p in g]
  assert sorted(flat) == [p.index for p in grid]
  without = sweep.vmap_groups(grid, vmap=False)
  assert [[p.index] for p in grid] == [[p.index for p in g] for g in without]


def test_vmap_groups_join_the_projection_schemes_of_a_row():
  # Wikitext-2 LSTM: unstable, stable (certified) and stable by the authors'
  # update differ only in stable/projection, so each seed's three are one program.
  grid = sweep.build_grid(["mh-wikitext2-lstm-*"], 2)
  groups = sweep.vmap_groups(grid, vmap=True)
  assert len(groups) == 1
  assert sorted({p.experiment for p in groups[0]}) == [
      "mh-wikitext2-lstm-stable", "mh-wikitext2-lstm-stable-authors",
      "mh-wikitext2-lstm-unstable"]


def test_vmap_groups_keep_seeds_together_unless_their_batches_differ_in_length():
  # Pixel tasks: every seed's batch has one shape, so each experiment's 3 seeds are one program.
  pixel = sweep.build_grid(["tcn-smnist-*"], 3)
  pixel_groups = sweep.vmap_groups(pixel, vmap=True)
  by_exp = {}
  for g in pixel_groups:
    by_exp.setdefault(g[0].experiment, []).append(sorted(p.seed for p in g))
  assert all(seeds == [[0, 1, 2]] for seeds in by_exp.values())
  # Music: one shuffled piece per batch, so a group holds one seed's variants.
  music = sweep.build_grid(["mh-nottingham-rnn-*"], 3)
  groups = sweep.vmap_groups(music, vmap=True)
  assert len(groups) == 3
  for g in groups:
    assert len({p.seed for p in g}) == 1
    assert sorted(p.experiment for p in g) == ["mh-nottingham-rnn-stable",
                                               "mh-nottingham-rnn-unstable"]
  # ... and a --vmap sweep says so, naming them; pixel seeds do vmap, and one seed is no news.
  assert sweep.seeds_apart_note(music) == (
      "--vmap: the seeds of mh-nottingham-rnn-unstable, mh-nottingham-rnn-stable train one at a "
      "time (each seed's batches have other lengths; seqbench.train.vmap_seeds_together)")
  assert sweep.seeds_apart_note(pixel) is None
  assert sweep.seeds_apart_note(sweep.build_grid(["mh-nottingham-rnn-*"], 1)) is None


def test_dry_run_shards_via_cli(capsys, tmp_path):
  seen = []
  for i in range(3):
    assert sweep.sweep_main(["tcn-adding-*", "--seeds", "2", "--out", str(tmp_path),
                             "--dry-run", "--shard", f"{i}/3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    seen += [ln.split("\t")[1] for ln in lines]
    assert all(int(ln.split("\t")[0]) % 3 == i for ln in lines)
  assert sorted(seen) == sorted(p.run_id for p in sweep.build_grid(["tcn-adding-*"], 2))


@pytest.mark.parametrize("text,ok", [("0/1", (0, 1)), ("2/3", (2, 3)), ("3/2", None),
                                     ("2/2", None), ("a/b", None), ("-1/2", None),
                                     ("1/0", None), ("1", None), ("", None)])
def test_parse_shard(text, ok):
  if ok:
    assert sweep.parse_shard(text) == ok
  else:
    with pytest.raises(ConfigError, match="--shard"):
      sweep.parse_shard(text)


@pytest.mark.parametrize("argv,needle", [
    (["nosuch-experiment"], "unknown experiment 'nosuch-experiment'"),
    (["zz-*"], "no experiment matches 'zz-*'"),
    (["tcn-adding-rnn", "--set", "lr0.1"], "KEY=VALUE"),
    (["tcn-adding-rnn", "--set", "nosuchkey=3"], "unknown key"),
    (["tcn-adding-rnn", "--set", "train.lr=fast"], "expected float"),
    (["tcn-adding-rnn", "--shard", "3/2"], "--shard"),
    (["tcn-adding-rnn", "--shard", "a/b"], "--shard"),
    (["tcn-adding-rnn", "--shard", "-1/2"], "--shard"),
    (["tcn-adding-rnn", "--seeds", "0"], "--seeds"),
    (["tcn-adding-rnn", "--seeds", "x"], "invalid int"),
    (["tcn-adding-tcn", "--set", "model.levels=0"], "levels must be an integer >= 1"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
  assert sweep.sweep_main(argv + ["--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("seqbench sweep: ") and needle in err, err
  assert not (tmp_path / "o").exists()  # nothing ran


def test_output_directory_that_cannot_be_made_is_one_line_exit_2(capsys, tmp_path):
  (tmp_path / "a_file").write_text("")
  out = tmp_path / "a_file" / "runs"
  assert sweep.sweep_main(["tcn-adding-rnn", "--smoke", "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("seqbench sweep: cannot create output directory") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["nosuch-experiment"], ["tcn-adding-rnn", "--shard", "-1/2"]])
def test_bad_input_subprocess_has_no_traceback(argv, tmp_path):
  out = subprocess.run([sys.executable, "-m", "seqbench.sweep", *argv, "--out", str(tmp_path)],
                       env=ENV, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def _results(out):
  path = out / "results.jsonl"
  if not path.exists():
    return []
  text = path.read_text()
  assert text == "" or text.endswith("\n")
  return [json.loads(line) for line in text.splitlines()]  # every line parses


def _two_run_sweep(out):
  """The command of a 2-run tiny sweep (25 epochs each: long enough to interrupt)."""
  sets = {**TINY, "train.epochs": 25}
  return [sys.executable, "-m", "seqbench.sweep", "tcn-adding-rnn", "--seeds", "2", "--smoke",
          "--out", str(out), *_sets(sets)], sets


def test_resume_after_sigkill(tmp_path):
  out = tmp_path / "sweep"
  cmd, sets = _two_run_sweep(out)
  proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

  def run_2_checkpointed():
    rows = _results(out) if (out / "results.jsonl").exists() else []
    done_ids = {r["run_id"] for r in rows}
    # Run 1's own checkpoint can outlive its row for a moment: wait for run 2's.
    ckpts = [c for c in (out / "checkpoints").glob("*/state.msgpack")
             if c.parent.name not in done_ids] if rows else []
    return rows and ckpts  # run 1 done, run 2 in progress with a checkpoint

  killed = signal_when(proc, run_2_checkpointed, signal.SIGKILL)
  proc.wait(timeout=30)
  assert killed, "the sweep finished or stalled before the second run's first checkpoint"
  assert proc.returncode == -signal.SIGKILL
  first = _results(out)
  assert len(first) == 1 and first[0]["seed"] == 0
  # Re-run the same command: skips run 1, resumes run 2 from its checkpoint.
  done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
  assert done.returncode == 0, done.stderr
  assert "resuming" in done.stderr
  lines = [ln for ln in done.stdout.splitlines() if ln.startswith("[")]
  assert lines[0] == "[1/2] tcn-adding-rnn seed 0: skipped (already in results.jsonl)"
  assert lines[1].startswith("[2/2] tcn-adding-rnn seed 1: done test mse")
  rows = _results(out)
  grid = sweep.build_grid(["tcn-adding-rnn"], 2, sets, smoke=True)
  assert sorted(r["run_id"] for r in rows) == sorted(p.run_id for p in grid)  # each once
  assert rows[0] == first[0]
  assert rows[1]["epochs"] == 25
  # A third run does nothing.
  again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and again.stdout.count("skipped") == 2
  assert _results(out) == rows


def test_sigterm_stops_the_sweep_with_a_checkpoint_and_no_later_run(tmp_path):
  out = tmp_path / "sweep"
  cmd, _ = _two_run_sweep(out)
  proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert signal_when(proc, lambda: list((out / "checkpoints").glob("*/state.msgpack")),
                     signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 143, err
  assert "Traceback" not in err.decode()
  assert "runs still pending stay pending" in err.decode()
  assert _results(out) == []        # stopped inside run 1: no row, and run 2 never started
  done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
  assert done.returncode == 0 and "resuming" in done.stderr
  assert len(_results(out)) == 2


def test_the_commit_is_read_before_the_sweep_writes_its_log(monkeypatch, tmp_path):
  # `seqbench sweep ... >> results/DIR/sweep.log`: once the sweep has printed
  # its first line, git sees that tracked log as changed. The rows must record
  # the tree as it was when the command started, not as its own log left it.
  log = io.StringIO()
  monkeypatch.delenv("SEQBENCH_GIT_SHA", raising=False)
  monkeypatch.setattr(sys, "stdout", log)
  monkeypatch.setattr(provenance, "_git", lambda *a: "a" * 40 if a[0] == "rev-parse" else (
      " M benchmarks/results/x/sweep.log" if log.getvalue() else ""))
  seen = []
  monkeypatch.setattr(sweep, "run_sweep", lambda *a, **k: seen.append(provenance.git_state()) or 0)
  provenance.git_state.cache_clear()
  try:
    assert sweep.sweep_main(["tcn-adding-tcn", "--out", str(tmp_path)]) == 0
  finally:
    provenance.git_state.cache_clear()
  assert log.getvalue().startswith("seqbench sweep: 1 runs")
  assert seen == [{"git_sha": "a" * 40, "git_dirty": False}]
