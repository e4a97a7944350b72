"""seqbench.train: projection every step, divergence, resume after SIGKILL, atomic rows,
vmapped runs == separate runs, the lr rules, and the CLI's errors."""

import fcntl
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqbench import stability
from seqbench import train as train_lib
from seqbench.experiments import TrainConfig

from helpers import signal_when

# A tiny adding-problem setup: seconds per run, one compiled shape.
TINY = {
    "task.length": 12, "task.n_train": 64, "task.n_test": 32,
    "model.hidden_size": 8, "train.batch_size": 16, "train.eval_batch_size": 32,
}
# A tiny JSB setup: one padded length, a few steps per epoch.
TINY_JSB = {
    "model.hidden_size": 16, "train.length_multiple": 512, "train.max_steps_per_epoch": 4,
    "train.max_eval_batches": 1, "train.eval_batch_size": 4, "train.contraction_steps": 8,
}


def _run(name, tmp_path, seed=0, smoke=True, **overrides):
  return train_lib.run_experiment(name, seed=seed, out_dir=str(tmp_path), smoke=smoke,
                                  overrides=overrides, progress=False)


def test_row_has_exactly_the_keys_and_is_appended(tmp_path):
  row = _run("tcn-adding-rnn", tmp_path, **TINY)
  assert tuple(row) == train_lib.RESULT_KEYS
  rows = train_lib.read_results(str(tmp_path))
  assert len(rows) == 1 and rows[0]["run_id"] == row["run_id"]
  assert row["metric_name"] == "mse" and row["valid_metric"] is None  # adding: no valid split
  assert np.isfinite(row["test_metric"]) and not row["diverged"]
  assert row["certified_bound"] > 0 and 0 < row["empirical_contraction"] <= row["certified_bound"] + 1e-5
  assert row["config"]["model"]["hidden_size"] == 8 and row["config"]["smoke"] is True
  assert row["versions"]["jax"] == jax.__version__
  curves = json.loads((tmp_path / "curves" / f"{row['run_id']}.json").read_text())
  assert len(curves["history"]) == row["epochs"]
  # Stability over training: the certified bound every epoch, the measured
  # contraction at least after the first and the last, never above the bound.
  hist = curves["history"]
  assert all(h["certified_bound"] > 0 for h in hist)
  measured = [h for h in hist if "empirical_contraction" in h]
  assert measured[0]["epoch"] == 1 and measured[-1]["epoch"] == row["epochs"]
  assert all(0 < h["empirical_contraction"] <= h["certified_bound"] + 1e-5 for h in measured)
  # The last epoch's params need not be the best-valid ones, but here (no
  # valid split) the row reports the last epoch's.
  assert measured[-1]["empirical_contraction"] == pytest.approx(row["empirical_contraction"])
  # The same run again is not repeated: same row back, no second line.
  again = _run("tcn-adding-rnn", tmp_path, **TINY)
  assert again == rows[0]
  assert len(train_lib.read_results(str(tmp_path))) == 1
  assert not (tmp_path / "checkpoints" / row["run_id"]).exists()


@pytest.mark.parametrize("backbone", ["lstm", "rnn"])
def test_projection_after_every_step_on_all_layers(backbone):
  lam = 0.8
  exp = train_lib.resolve("tcn-adding-lstm", {**TINY, "model.backbone": backbone,
                                              "model.layers": 2, "model.forget_bias": 0.0,
                                              "train.optimizer": "sgd", "train.lr": 3.0,
                                              "train.stable": True, "train.lam": lam},
                          smoke=True)
  trainer = train_lib._Trainer([train_lib._Member(exp, 0, "x")], "/nonexistent",
                               batched=False, smoke=True, progress=False)
  bounds = jax.jit(lambda layers: [stability.lipschitz_bound(c, p)
                                   for c, p in zip(trainer.model.cells, layers)])
  state = trainer._init_state()
  n = 0
  for epoch in range(2):
    for batch in trainer.data.batches("train", train=True, seed=0, epoch=epoch):
      state, _ = trainer._train_step(state, batch)
      n += 1
      for layer, bound in enumerate(bounds(state["params"]["backbone"])):
        assert float(bound) <= lam * (1 + 1e-5), (n, layer)
  assert n >= 8 and bool(state["alive"])
  if backbone != "rnn":
    return
  # Without the projection the same steps leave the stable set (the check bites).
  trainer.proj_index = [-1]
  trainer.proj_specs = ()
  trainer._compile()
  state = trainer._init_state()
  for batch in trainer.data.batches("train", train=True, seed=0, epoch=0):
    state, _ = trainer._train_step(state, batch)
  assert max(float(b) for b in bounds(state["params"]["backbone"])) > lam


def test_authors_projection_touches_only_the_first_layer():
  exp = train_lib.resolve("tcn-adding-lstm", {**TINY, "model.layers": 2,
                                              "train.optimizer": "sgd", "train.lr": 3.0,
                                              "train.stable": True,
                                              "train.projection": "authors"}, smoke=True)
  trainer = train_lib._Trainer([train_lib._Member(exp, 0, "x")], "/nonexistent",
                               batched=False, smoke=True, progress=False)
  state = trainer._init_state()
  init_second = jnp.array(state["params"]["backbone"][1]["recurrent_kernel"])
  for batch in trainer.data.batches("train", train=True, seed=0, epoch=0):
    state, _ = trainer._train_step(state, batch)
  first, second = state["params"]["backbone"]
  h = trainer.model.config.hidden_size
  norms = stability.AUTHORS_LSTM_NORMS
  for g, gate in enumerate("ifzo"):
    block = first["recurrent_kernel"][:, g * h:(g + 1) * h]
    np.testing.assert_allclose(jnp.sum(jnp.abs(block), axis=1), norms[gate], rtol=1e-5)
  # The second layer trained freely: it moved, and was not rescaled to the constants.
  assert not np.allclose(second["recurrent_kernel"], init_second)
  row_sums = jnp.sum(jnp.abs(second["recurrent_kernel"][:, h:2 * h]), axis=1)
  assert float(jnp.max(row_sums) - jnp.min(row_sums)) > 1e-3


#: The Linear(88, 88) input layer the JSB Table 1 rows had until 2026-11-29
#: (the authors' forward() never called theirs): what names the committed runs.
JSB_INPUT_LAYER = {"model.input_kind": "linear", "model.embed_size": 88}


def test_projection_setting_is_checked_and_keeps_old_run_ids():
  with pytest.raises(train_lib.ConfigError, match="train.projection must be one of"):
    train_lib.resolve("mh-jsb-lstm-stable", {"train.projection": "mine"})
  with pytest.raises(train_lib.ConfigError, match="needs train.lam=1"):
    train_lib.resolve("mh-jsb-lstm-stable", {"train.projection": "authors", "train.lam": 0.9})
  base = train_lib.resolve("mh-jsb-lstm-stable")
  authors = train_lib.resolve("mh-jsb-lstm-stable", {"train.projection": "authors"})
  assert train_lib.run_id(authors, 0) != train_lib.run_id(base, 0)
  # Pinned: committed runs made before projection, lr_decay_window and
  # init_scheme existed keep their ids (the stable LSTM with PyTorch's init and
  # the 100 epochs registered then, in benchmarks/results/cpu/repro; a study (b)
  # point in .../trunc-train).
  old = train_lib.resolve("mh-jsb-lstm-stable", {"model.init_scheme": "pytorch",
                                                 "train.epochs": 100, **JSB_INPUT_LAYER})
  assert train_lib.run_id(old, 0) == "76d30792a707fa97"
  assert train_lib.run_id(train_lib.resolve("trunc-train-jsb-rnn-stable-k8"), 0) == (
      "e9113510a31b4390")
  from seqbench import report  # pylint: disable=g-import-not-at-top
  from seqbench.experiments import config  # pylint: disable=g-import-not-at-top
  assert report.FIELDS_ADDED_LATER == train_lib.FIELDS_ADDED_LATER
  assert config.PROJECTIONS == stability.PROJECTION_SCHEMES


def test_test_every_epoch_logs_without_changing_the_run(tmp_path):
  plain = _run("tcn-adding-rnn", tmp_path / "a", **TINY, **{"train.epochs": 2})
  logged = _run("tcn-adding-rnn", tmp_path / "b", **TINY,
                **{"train.epochs": 2, "train.test_every_epoch": True})
  assert logged["run_id"] == plain["run_id"] and logged["test_metric"] == plain["test_metric"]
  hist = json.loads((tmp_path / "b" / "curves" / f"{logged['run_id']}.json").read_text())
  tests = [e["test_metric"] for e in hist["history"]]
  assert len(tests) == 2 and all(np.isfinite(tests))
  # adding has no valid split: its reported test metric is the final params', the last entry.
  assert tests[-1] == pytest.approx(logged["test_metric"], rel=1e-6)


def test_divergence_is_recorded_and_ends_cleanly(tmp_path):
  row = _run("tcn-adding-rnn", tmp_path, **TINY, **{"train.optimizer": "sgd",
                                                   "train.lr": 1e30, "train.clip": 0.0,
                                                   "train.epochs": 3})
  assert row["diverged"] is True
  assert isinstance(row["diverged_step"], int) and 0 <= row["diverged_step"] < 10
  assert row["test_metric"] is None and row["epochs"] == 1  # stopped after that epoch
  assert row["steps"] == row["diverged_step"]  # the bad update was not applied
  assert train_lib.read_results(str(tmp_path))[0]["diverged"] is True


def test_a_run_another_process_is_training_is_not_trained_twice(tmp_path):
  # The other process is simulated by this one holding the run's lock on a
  # second descriptor (flock locks belong to the open file, not the process).
  exp = train_lib.resolve("tcn-adding-rnn", TINY, smoke=True)
  rid = train_lib.run_id(exp, 0, smoke=True)
  lock = tmp_path / "checkpoints" / f"{rid}.lock"
  lock.parent.mkdir(parents=True)
  fd = os.open(lock, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  try:
    with pytest.raises(train_lib.RunInProgress, match=f"another process is training run {rid}"):
      _run("tcn-adding-rnn", tmp_path, **TINY)
    assert train_lib.read_results(str(tmp_path)) == []
    # A vmapped sweep of seeds 0 and 1: seed 0 is the other process's, and
    # seed 1, which nobody trains, trains without it.
    from seqbench import sweep  # pylint: disable=g-import-not-at-top
    lines = []
    grid = sweep.build_grid(["tcn-adding-rnn"], 2, TINY, smoke=True)
    assert [len(g) for g in sweep.vmap_groups(grid, vmap=True, smoke=True)] == [2]
    assert sweep.run_sweep(grid, str(tmp_path), smoke=True, vmap=True, log=lines.append) == 0
    assert any("seed 0: skipped (another process is training run" in m for m in lines), lines
    assert [(r["seed"], r["run_id"] != rid) for r in train_lib.read_results(str(tmp_path))] == [
        (1, True)]
  finally:
    os.close(fd)
  # Released (its holder closed it, as a killed process would): the run trains.
  row = _run("tcn-adding-rnn", tmp_path, **TINY)
  assert row["run_id"] == rid
  assert sorted(r["seed"] for r in train_lib.read_results(str(tmp_path))) == [0, 1]


def _append_many(args):
  out_dir, worker = args
  for i in range(50):
    train_lib.append_result(out_dir, {"worker": worker, "i": i, "pad": "x" * 5000})


@pytest.mark.filterwarnings("ignore:os.fork")
def test_concurrent_appends_never_tear_rows(tmp_path):
  # fork: the workers only call os.write (no JAX), and spawn would re-import JAX 4 times.
  with multiprocessing.get_context("fork").Pool(4) as pool:
    pool.map(_append_many, [(str(tmp_path), w) for w in range(4)])
  lines = (tmp_path / "results.jsonl").read_bytes().split(b"\n")
  assert lines[-1] == b""
  rows = [json.loads(line) for line in lines[:-1]]
  assert len(rows) == 200 and sorted((r["worker"], r["i"]) for r in rows) == sorted(
      (w, i) for w in range(4) for i in range(50))
  # A torn last line (a writer killed mid-line by something else) is skipped.
  with open(tmp_path / "results.jsonl", "ab") as f:
    f.write(b'{"worker": 9')
  assert len(train_lib.read_results(str(tmp_path))) == 200
  # The next row is not glued onto the torn one: it reads back, and so does the report.
  train_lib.append_result(str(tmp_path), {"worker": 10, "i": 0})
  rows = train_lib.read_results(str(tmp_path))
  assert len(rows) == 201 and rows[-1] == {"worker": 10, "i": 0}


def test_a_group_of_rows_is_appended_in_one_write(tmp_path, monkeypatch):
  writes = []
  real_write = os.write
  monkeypatch.setattr(train_lib.os, "write", lambda fd, data: writes.append(data) or
                      real_write(fd, data))
  train_lib.append_results(str(tmp_path), [{"i": i} for i in range(3)])
  train_lib.append_results(str(tmp_path), [])
  assert writes == [b'{"i": 0}\n{"i": 1}\n{"i": 2}\n']
  assert train_lib.read_results(str(tmp_path)) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_vmapped_runs_equal_separate_runs(tmp_path, monkeypatch):
  # Seeds differ (so each model gets its own shuffled batches, padded to a
  # common length) and so do stable/unstable and λ.
  specs = [("mh-jsb-rnn-unstable", 0, {}), ("mh-jsb-rnn-stable", 1, {"train.lam": 0.9}),
           ("mh-jsb-rnn-stable", 2, {"train.lam": 0.5})]
  common = {**TINY_JSB, "train.epochs": 2, "train.length_multiple": 64}
  specs = [(e, s, {**common, **o}) for e, s, o in specs]
  appends = []
  real_append = train_lib.append_results
  monkeypatch.setattr(train_lib, "append_results",
                      lambda out, rows: appends.append(len(rows)) or real_append(out, rows))
  vm = train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path / "vmap"), smoke=True,
                                         progress=False)
  # The group's three rows went out together: a kill cannot leave some of them.
  assert appends == [3]
  for (name, seed, overrides), row in zip(specs, vm):
    sep = train_lib.run_experiment(name, seed=seed, out_dir=str(tmp_path / "sep"), smoke=True,
                                   overrides=overrides, progress=False)
    assert row["run_id"] == sep["run_id"]
    for key in ("valid_metric", "test_metric", "certified_bound", "empirical_contraction"):
      np.testing.assert_allclose(row[key], sep[key], rtol=2e-5, err_msg=key)
    assert row["steps"] == sep["steps"] and row["epochs"] == sep["epochs"] == 2
    assert row["config"]["vmap_group_size"] == 3
  # Each member projected for its own λ only (the projection is gathered by λ).
  assert vm[2]["certified_bound"] <= 0.5 * (1 + 1e-5) < vm[1]["certified_bound"]
  assert vm[1]["certified_bound"] <= 0.9 * (1 + 1e-5) < vm[0]["certified_bound"]


def test_vmapped_mixed_projection_schemes_equal_separate_runs(tmp_path):
  # One program holding an unstable, a certified and an authors'-update LSTM
  # (2 layers): each member gets its own scheme, as when it trains alone.
  common = {**TINY_JSB, "train.epochs": 2, "model.layers": 2}
  specs = [("mh-jsb-lstm-unstable", 0, common), ("mh-jsb-lstm-stable", 0, common),
           ("mh-jsb-lstm-stable", 0, {**common, "train.projection": "authors"})]
  vm = train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path / "vmap"), smoke=True,
                                         progress=False)
  for (name, seed, overrides), row in zip(specs, vm):
    sep = train_lib.run_experiment(name, seed=seed, out_dir=str(tmp_path / "sep"), smoke=True,
                                   overrides=overrides, progress=False)
    for key in ("valid_metric", "test_metric"):
      np.testing.assert_allclose(row[key], sep[key], rtol=2e-5, err_msg=key)
    assert (row["certified_bound"] is None) == (sep["certified_bound"] is None)
    if row["certified_bound"] is not None:
      np.testing.assert_allclose(row["certified_bound"], sep["certified_bound"], rtol=2e-5)
    assert row["config"]["train"]["projection"] == overrides.get("train.projection", "certified")
  # The certified member is inside its set. The authors' update leaves layer 1
  # and the biases free, so, like the unstable LSTM's, its bound is infinite
  # (a row's non-finite number is written as null).
  assert vm[1]["certified_bound"] <= 1 + 1e-5
  assert vm[0]["certified_bound"] is None and vm[2]["certified_bound"] is None
  assert vm[2]["test_metric"] != vm[1]["test_metric"]


def test_vmapped_rejects_different_shapes(tmp_path):
  with pytest.raises(train_lib.ConfigError, match="hidden_size"):
    train_lib.run_experiments_vmapped(
        [("tcn-adding-rnn", 0, TINY), ("tcn-adding-rnn", 0, {**TINY, "model.hidden_size": 4})],
        out_dir=str(tmp_path), smoke=True)


def _cmd(out, epochs):
  sets = {**TINY_JSB, "train.epochs": epochs, "train.max_steps_per_epoch": 3}
  cmd = [sys.executable, "-m", "seqbench.train", "mh-jsb-rnn-stable", "--smoke", "--seed", "3",
         "--out", str(out), "--no-progress"]
  for k, v in sets.items():
    cmd += ["--set", f"{k}={v}"]
  return cmd, sets


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
  epochs = 40
  cmd, sets = _cmd(tmp_path / "run", epochs)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  first_checkpoint = lambda: list((tmp_path / "run" / "checkpoints").glob("*/state.msgpack"))
  # Once the first checkpoint exists, let it get a little further into the run.
  killed = signal_when(proc, first_checkpoint, signal.SIGKILL, settle=0.3)
  proc.wait(timeout=30)
  assert killed, "the run finished or stalled before its first checkpoint"
  assert proc.returncode == -signal.SIGKILL
  assert train_lib.read_results(str(tmp_path / "run")) == []  # killed: no row yet
  # Re-run: resumes from the checkpoint and finishes.
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "resuming" in done.stderr
  rows = train_lib.read_results(str(tmp_path / "run"))
  assert len(rows) == 1
  # The same run uninterrupted (in this process).
  ref = train_lib.run_experiment("mh-jsb-rnn-stable", seed=3, out_dir=str(tmp_path / "ref"),
                                 smoke=True, overrides=sets, progress=False)
  assert rows[0]["run_id"] == ref["run_id"]
  for key in ("valid_metric", "test_metric", "epochs", "steps", "certified_bound",
              "empirical_contraction", "diverged"):
    assert rows[0][key] == ref[key], key
  assert rows[0]["epochs"] == epochs
  # The row names both processes: the first from the start, the second from the checkpoint.
  first, second = rows[0]["sessions"]
  assert (first["epoch"], first["step_in_epoch"]) == (0, 0)
  assert (second["epoch"], second["step_in_epoch"]) > (0, 0)
  assert second["git_sha"] == rows[0]["git_sha"] and second["device_kind"] == "cpu"
  assert [(e["epoch"], e["step_in_epoch"]) for e in ref["sessions"]] == [(0, 0)]


def test_next_lr_rules():
  t = TrainConfig(lr_decay=4.0)
  assert train_lib.next_lr("plateau", 20.0, t, 3, [5.0, 6.0], improved=False) == 5.0
  assert train_lib.next_lr("plateau", 20.0, t, 3, [5.0, 4.0], improved=True) == 20.0
  j = TrainConfig(lr_decay=10.0, lr_decay_after=10)
  hist = [9.0, 8.0, 7.0, 6.5, 6.4, 6.3, 6.2, 6.1, 6.0, 5.9, 5.8]
  assert train_lib.next_lr("jsb", 1e-2, j, 11, hist + [5.7], improved=True) == 1e-2
  assert train_lib.next_lr("jsb", 1e-2, j, 11, hist + [6.1], improved=False) == pytest.approx(1e-3)
  assert train_lib.next_lr("jsb", 1e-2, j, 5, hist[:4] + [9.5], improved=False) == 1e-2
  # word_cnn's window of 5: 6.1 exceeds the max of the last 3 (6.0), not of the last 5 (6.2).
  w5 = TrainConfig(lr_decay=2.0, lr_decay_after=5, lr_decay_window=5)
  assert train_lib.next_lr("jsb", 4.0, w5, 12, hist + [6.1], improved=False) == 4.0
  assert train_lib.next_lr("jsb", 4.0, j, 12, hist + [6.1], improved=False) == pytest.approx(4e-1)
  s = TrainConfig(lr_decay=10.0, lr_step_epochs=10)
  assert train_lib.next_lr("step", 1.0, s, 10, [], False) == pytest.approx(0.1)
  assert train_lib.next_lr("step", 1.0, s, 9, [], False) == 1.0
  # A NaN validation loss is the worst, wherever it sits in the window.
  nan = float("nan")
  assert train_lib.next_lr("jsb", 1e-2, j, 11, hist + [nan], improved=False) == pytest.approx(1e-3)
  assert train_lib.next_lr("jsb", 1e-2, j, 12, hist + [nan, 5.7], improved=False) == 1e-2


def test_checkpoint_metadata_keeps_non_finite_numbers(tmp_path):
  # Written as null, a NaN best-valid would come back as "no best yet" on resume.
  path = str(tmp_path / "state.msgpack")
  meta = {"best_valid": [float("nan"), 1.5], "valid_hist": [[float("inf"), 2.0]], "epoch": 3}
  train_lib._save_checkpoint(path, {"w": jnp.zeros(2)}, meta)
  _, back = train_lib._load_checkpoint(path, {"w": jnp.zeros(2)})
  assert np.isnan(back["best_valid"][0]) and back["best_valid"][1] == 1.5
  assert back["valid_hist"] == [[float("inf"), 2.0]] and back["epoch"] == 3


DIVERGING = {**TINY, "train.optimizer": "sgd", "train.lr": 1e30, "train.clip": 0.0,
             "train.epochs": 3}


def test_vmapped_diverged_member_ends_as_a_separate_run_does(tmp_path):
  specs = [("tcn-adding-rnn", 0, DIVERGING), ("tcn-adding-rnn", 0, {**DIVERGING, "train.lr": 1e-3})]
  vm = train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path / "vmap"), smoke=True,
                                         progress=False)
  sep = _run("tcn-adding-rnn", tmp_path / "sep", **DIVERGING)
  assert vm[0]["diverged"] and sep["diverged"]
  assert vm[0]["epochs"] == sep["epochs"] == 1 and vm[0]["steps"] == sep["steps"]
  assert vm[1]["epochs"] == 3 and not vm[1]["diverged"]
  curves = json.loads((tmp_path / "vmap" / "curves" / f"{vm[0]['run_id']}.json").read_text())
  assert [h["epoch"] for h in curves["history"]] == [1]


def test_vmapped_stable_conv_net_is_rejected_like_a_separate_run(tmp_path):
  specs = [("tcn-adding-tcn", 0, TINY), ("tcn-adding-tcn", 0, {**TINY, "train.stable": True})]
  with pytest.raises(train_lib.ConfigError, match="stable=True needs a recurrent backbone"):
    train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path), smoke=True, progress=False)
  assert not (tmp_path / "results.jsonl").exists()


class _Killed(Exception):
  pass


def test_kill_after_the_last_epoch_resumes_without_training_more(tmp_path, monkeypatch):
  # A run whose members all diverged stops early; killed while it evaluates, its
  # rerun must not train the epoch after.
  finish = train_lib._Trainer._finish

  def killed(self, *args, **kwargs):
    raise _Killed()

  monkeypatch.setattr(train_lib._Trainer, "_finish", killed)
  with pytest.raises(_Killed):
    _run("tcn-adding-rnn", tmp_path, **DIVERGING)
  monkeypatch.setattr(train_lib._Trainer, "_finish", finish)
  row = _run("tcn-adding-rnn", tmp_path, **DIVERGING)
  assert row["epochs"] == 1 and row["diverged"]
  assert [s["epoch"] for s in row["sessions"]] == [0, 1]


def test_a_group_s_rows_are_written_together(tmp_path, monkeypatch):
  # Killed while measuring the second member's contraction: no row of the
  # group is written, so the rerun resumes the whole group's checkpoint.
  specs = [("tcn-adding-rnn", s, {**TINY, "train.epochs": 1, "train.contraction_every": 0})
           for s in (0, 1)]
  contraction = train_lib._Trainer.contraction
  calls = []

  def second_call_killed(self, p):
    calls.append(1)
    if len(calls) == 2:
      raise _Killed()
    return contraction(self, p)

  monkeypatch.setattr(train_lib._Trainer, "contraction", second_call_killed)
  with pytest.raises(_Killed):
    train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path), smoke=True, progress=False)
  assert train_lib.read_results(str(tmp_path)) == []
  monkeypatch.setattr(train_lib._Trainer, "contraction", contraction)
  rows = train_lib.run_experiments_vmapped(specs, out_dir=str(tmp_path), smoke=True,
                                           progress=False)
  assert [len(r["sessions"]) for r in rows] == [2, 2]  # resumed, not restarted
  assert len(train_lib.read_results(str(tmp_path))) == 2


@pytest.mark.parametrize("argv,needle", [
    (["no-such-experiment"], "unknown experiment"),
    (["mh-jsb-rnn-stable", "--set", "lr0.1"], "KEY=VALUE"),
    (["mh-jsb-rnn-stable", "--set", "model.hiden_size=3"], "unknown key"),
    (["mh-jsb-rnn-stable", "--set", "nosuchkey=3"], "unknown key"),
    (["mh-jsb-rnn-stable", "--set", "train.lr=fast"], "expected float"),
    (["mh-jsb-rnn-stable", "--set", "model.backbone=transformer"], "backbone"),
    (["mh-jsb-rnn-stable", "--seed", "x"], "invalid int"),
    (["mh-jsb-rnn-stable", "--seed", "-1"], "seed must be an integer in [0, 2**32)"),
    (["tcn-adding-tcn", "--set", "model.levels=0"], "levels must be an integer >= 1"),
    (["mh-jsb-rnn-stable", "--set", "train.clip=-1"], "train.clip must be >= 0"),
    (["mh-jsb-rnn-stable", "--set", "train.clip=nan"], "train.clip must be >= 0"),
    (["mh-jsb-rnn-stable", "--set", "train.momentum=1.5"], "train.momentum must be in [0, 1)"),
    (["mh-jsb-rnn-stable", "--set", "train.lam=1.2"], "train.lam must be in (0, 1]"),
    (["mh-jsb-rnn-stable", "--set", "train.lam=0"], "train.lam must be in (0, 1]"),
    (["tcn-ptb-char-tcn", "--set", "model.output_channels=-1"], "output_channels must be >= 0"),
    (["tcn-ptb-char-tcn", "--set", "model.output_channels=7"],
     "embed_size equal to the backbone's output width (7)"),
    ([], "required"),
])
def test_bad_cli_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
  rc = train_lib.train_main(argv + ["--out", str(tmp_path)])
  err = capsys.readouterr().err
  assert rc == 2
  assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert not (tmp_path / "results.jsonl").exists()


def test_output_directory_that_cannot_be_made_is_one_line_exit_2(capsys, tmp_path):
  (tmp_path / "a_file").write_text("")
  out = tmp_path / "a_file" / "runs"
  assert train_lib.train_main(["tcn-adding-rnn", "--smoke", "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("seqbench train: cannot create output directory") and "Traceback" not in err
  assert err.count("\n") == 1, err


def test_api_rejects_a_seed_numpy_cannot_take(tmp_path):
  with pytest.raises(train_lib.ConfigError, match="seed must be"):
    train_lib.run_experiment("tcn-adding-rnn", seed=-3, out_dir=str(tmp_path), smoke=True)
  assert not os.listdir(tmp_path)


def test_module_entry_point_reports_errors_without_traceback():
  out = subprocess.run([sys.executable, "-m", "seqbench.train", "mh-jsb-rnn-stabel"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "seqbench train: unknown experiment 'mh-jsb-rnn-stabel'; did you mean "
      "mh-jsb-rnn-stable or mh-jsb-rnn-unstable? (`seqbench list` shows all "
      f"{len(train_lib.get_experiment.__globals__['EXPERIMENTS'])})"]


def test_run_identity_ignores_bookkeeping_and_is_stable():
  base = train_lib.resolve("mh-jsb-rnn-unstable")
  logged = train_lib.resolve("mh-jsb-rnn-unstable", {"train.eval_ks": "1,2,4",
                                                     "train.contraction_every": 1})
  assert logged.train.eval_ks == (1, 2, 4)
  assert train_lib.run_id(logged, 0) == train_lib.run_id(base, 0)
  assert train_lib.run_id(base, 1) != train_lib.run_id(base, 0)
  trained_differently = train_lib.resolve("mh-jsb-rnn-unstable", {"train.lr": 0.1})
  assert train_lib.run_id(trained_differently, 0) != train_lib.run_id(base, 0)
  # Pinned: the id of a committed run (benchmarks/results/cpu/repro, 100 epochs).
  # A change here renames every finished run, so that resumed sweeps would redo them.
  pytorch_init = train_lib.resolve("mh-jsb-rnn-unstable", {"model.init_scheme": "pytorch",
                                                           "train.epochs": 100,
                                                           **JSB_INPUT_LAYER})
  assert train_lib.run_id(pytorch_init, 0) == "321d0b633c0e4238"
  # The row registered until 2026-11-29 (500 epochs), run as `--set
  # train.epochs=500` before 500 was registered: the same id.
  assert train_lib.run_id(train_lib.resolve("mh-jsb-rnn-stable", JSB_INPUT_LAYER), 0) == (
      "d57679ec4c742b1e")
  # Saved every 60 s instead of 300: the same run, resumed rather than redone.
  often = train_lib.resolve("mh-jsb-rnn-stable", {**JSB_INPUT_LAYER,
                                                  "train.checkpoint_seconds": 60})
  assert train_lib.run_id(often, 0) == "d57679ec4c742b1e"


def test_unstable_run_ids_ignore_the_stability_settings_they_never_use():
  # `sweep 'mh-jsb-*' --set train.lam=0.9` must not retrain finished unstable rows.
  for name in ("mh-jsb-rnn-unstable", "mh-jsb-lstm-unstable"):
    base = train_lib.run_id(train_lib.resolve(name), 0)
    for sets in ({"train.lam": 0.9}, {"train.projection": "authors"}):
      assert train_lib.run_id(train_lib.resolve(name, sets), 0) == base, (name, sets)
  stable = train_lib.resolve("mh-jsb-lstm-stable")
  for sets in ({"train.lam": 0.9}, {"train.projection": "authors"}):
    assert train_lib.run_id(train_lib.resolve("mh-jsb-lstm-stable", sets), 0) != (
        train_lib.run_id(stable, 0)), sets


def test_a_task_option_set_to_its_default_leaves_the_run_as_it_is():
  base = train_lib.resolve("mh-jsb-rnn-stable")
  same = train_lib.resolve("mh-jsb-rnn-stable", {"task.score_first_frame": "false"})
  assert same == base and train_lib.run_id(same, 0) == train_lib.run_id(base, 0)
  changed = train_lib.resolve("mh-jsb-rnn-stable", {"task.score_first_frame": "true"})
  assert changed.options() == {"score_first_frame": True}
  assert train_lib.run_id(changed, 0) != train_lib.run_id(base, 0)
  # An option the experiment (here its smoke version) sets is kept when set to
  # the class default: that is a real change.
  smoke = train_lib.resolve("tcn-adding-rnn", smoke=True)
  assert smoke.options()["n_train"] != 50000
  assert train_lib.resolve("tcn-adding-rnn", {"task.n_train": "50000"},
                           smoke=True).options()["n_train"] == 50000


def test_lr_must_be_finite_and_momentum_must_reach_the_optimiser():
  with pytest.raises(train_lib.ConfigError, match="train.lr must be a finite number > 0"):
    train_lib.resolve("mh-jsb-rnn-stable", {"train.lr": "inf"})
  with pytest.raises(train_lib.ConfigError, match="momentum applies to sgd and rmsprop"):
    train_lib.resolve("tcn-nottingham-lstm", {"train.momentum": "0.9"})
  assert train_lib.resolve("mh-jsb-rnn-stable", {"train.momentum": "0.9"}).train.momentum == 0.9


def test_sigterm_checkpoints_at_the_current_step_and_the_rerun_resumes(tmp_path):
  # What `timeout` (and the GPU scripts' step caps) send: the run must save
  # where it is, exit 143, and resume from exactly there.
  epochs = 12
  cmd, sets = _cmd(tmp_path / "run", epochs)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  first_checkpoint = lambda: list((tmp_path / "run" / "checkpoints").glob("*/state.msgpack"))
  assert signal_when(proc, first_checkpoint, signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  err = err.decode()
  assert proc.returncode == 143, err
  stopped = re.search(r"SIGTERM in epoch (\d+) after step (\d+); checkpointed to .*"
                      r"the same command resumes it", err)
  assert stopped, err
  assert train_lib.read_results(str(tmp_path / "run")) == []
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  # The checkpoint is the step SIGTERM stopped at, not the last periodic one.
  epoch, step = int(stopped[1]) - 1, int(stopped[2])
  assert f"resuming mh-jsb-rnn-stable from epoch {epoch} step {step}" in done.stderr
  rows = train_lib.read_results(str(tmp_path / "run"))
  ref = train_lib.run_experiment("mh-jsb-rnn-stable", seed=3, out_dir=str(tmp_path / "ref"),
                                 smoke=True, overrides=sets, progress=False)
  for key in ("valid_metric", "test_metric", "epochs", "steps", "certified_bound"):
    assert rows[0][key] == ref[key], key


def _carried_reference(grads, clip):
  """copymem_test.py's order in plain numpy: clip .grad, backward adds g, step reads .grad."""
  carried, seen = np.zeros_like(grads[0]), []
  for g in grads:
    norm = np.linalg.norm(carried)
    if clip > 0 and norm > clip:
      carried = carried * (clip / norm)
    carried = carried + g
    seen.append(carried.copy())
  return seen


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_carried_gradients_match_a_loop_that_never_zeroes(clip):
  rng = np.random.default_rng(0)
  grads = [rng.normal(size=5).astype(np.float32) * s for s in (3.0, 0.1, 0.2, 2.0, 0.05)]
  tx = train_lib.carried_gradients(clip)
  # Two leaves, so the clip is the global norm over the tree.
  params = {"a": jnp.zeros(2, jnp.float32), "b": jnp.zeros(3, jnp.float32)}
  state = tx.init(params)
  for g, want in zip(grads, _carried_reference(grads, clip)):
    out, state = tx.update({"a": jnp.asarray(g[:2]), "b": jnp.asarray(g[2:])}, state)
    got = np.concatenate([np.asarray(out["a"]), np.asarray(out["b"])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert out["a"].dtype == jnp.float32


def test_zero_grad_false_changes_the_optimiser_and_the_run_id():
  grads = {"w": jnp.asarray([3.0, 4.0], jnp.float32)}  # norm 5
  params = {"w": jnp.zeros(2, jnp.float32)}

  def two_steps(t):
    tx = train_lib.make_optimizer(t)
    state, p = tx.init(params), params
    for _ in range(2):
      upd, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, upd)
    return np.asarray(p["w"])

  sgd = dict(optimizer="sgd", lr=0.1, clip=1.0)
  # Zeroed: each step clipped to norm 1 -> 2 * 0.1 * (0.6, 0.8).
  np.testing.assert_allclose(two_steps(TrainConfig(**sgd)), [-0.12, -0.16], rtol=1e-6)
  # Never zeroed: g, then clip(g) + g = (0.6, 0.8) + (3, 4).
  np.testing.assert_allclose(two_steps(TrainConfig(**sgd, zero_grad=False)),
                             [-0.1 * (3 + 3.6), -0.1 * (4 + 4.8)], rtol=1e-6)
  base = train_lib.resolve("tcn-copy-gru")
  bug = train_lib.resolve("tcn-copy-gru", {"train.zero_grad": "false"})
  assert bug.train.zero_grad is False
  assert train_lib.run_id(bug, 0) != train_lib.run_id(base, 0)
  # The committed copy GRU seed 0 (benchmarks/results/cpu/repro) keeps its id.
  assert train_lib.run_id(base, 0) == "1b7b8c1615f02530"
  with pytest.raises(train_lib.ConfigError, match="expected true or false"):
    train_lib.resolve("tcn-copy-gru", {"train.zero_grad": "sometimes"})
  with pytest.raises(train_lib.ConfigError, match="train.zero_grad must be true or false"):
    TrainConfig(zero_grad=1)
