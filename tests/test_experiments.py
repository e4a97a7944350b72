"""seqbench.experiments: the registry, overrides, `seqbench list`, and that every
registered experiment's --smoke config builds and traces a training step."""

import dataclasses
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from seqbench import experiments as ex
from seqbench import train as train_lib
from seqbench.tasks import DataError

NAMES = ex.names()


def test_registry_covers_the_published_rows():
  groups = {}
  for e in ex.EXPERIMENTS.values():
    groups.setdefault(e.group, []).append(e)
  mh = {e.name: e for e in groups["mh-table1"]}
  for task in ("wikitext2", "ptb-char", "jsb"):
    for backbone in ("rnn", "lstm"):
      for variant in ("unstable", "stable"):
        assert f"mh-{task}-{backbone}-{variant}" in mh
  assert mh["mh-wikitext2-rnn-unstable"].published == 146.7
  assert mh["mh-wikitext2-lstm-stable"].published == 95.1
  w = mh["mh-wikitext2-lstm-stable"]
  assert (w.model.layers, w.model.embed_size, w.model.hidden_size, w.model.dropout) == (2, 200, 200, 0.2)
  assert (w.train.optimizer, w.train.lr, w.train.clip, w.train.batch_size, w.train.bptt,
          w.train.epochs, w.train.lr_schedule, w.train.lr_decay) == ("sgd", 20.0, 0.25, 20, 35, 40,
                                                                     "plateau", 4.0)
  assert w.train.stable and not mh["mh-wikitext2-lstm-unstable"].train.stable
  j = mh["mh-jsb-rnn-stable"]
  # The authors' poly_music forward() feeds the piano roll to the RNN: the
  # Linear encoder their model builds is never called.
  assert (j.model.input_kind, j.model.input_width, j.model.hidden_size, j.train.lr, j.train.clip,
          j.train.batch_size) == ("identity", 88, 256, 1e-2, 1.0, 1)
  # The Nottingham rows and the JSB study grids ran with that Linear and keep it.
  for name in ("mh-nottingham-rnn-stable", "trunc-eval-jsb-lstm-stable", "lam-jsb-rnn-lam0.9"):
    assert ex.EXPERIMENTS[name].model.input_kind == "linear", name
  # The authors' poly_music runs up to 500 epochs (paper.md §4).
  assert {mh[f"mh-jsb-{b}-{v}"].train.epochs for b in ("rnn", "lstm")
          for v in ("unstable", "stable")} == {500}
  tcn = {e.name for e in groups["tcn-table1"]}
  for task in ("adding", "copy", "smnist", "pmnist", "jsb", "nottingham", "ptb-word", "ptb-char"):
    for model in ("tcn", "lstm", "gru", "rnn"):
      assert f"tcn-{task}-{model}" in tcn
  assert ex.EXPERIMENTS["tcn-adding-tcn"].options() == {"length": 600}
  assert ex.EXPERIMENTS["tcn-copy-tcn"].options() == {"delay": 1000}
  c = ex.EXPERIMENTS["tcn-copy-tcn"]
  assert (c.model.kernel_size, c.model.levels, c.model.hidden_size, c.train.optimizer,
          c.train.lr) == (8, 8, 10, "rmsprop", 5e-4)


def test_grids_are_data_and_expand_to_registered_experiments():
  ks = [1, 2, 4, 8, 16, 32, 64, 128, 256]
  grid = ex.GRIDS["trunc-train-jsb-lstm-stable"]
  assert [o["model.k"] for _, o in grid.points] == ks
  for point in grid.expand():
    assert ex.EXPERIMENTS[point.name] == point
    assert point.model.executor == "truncated"
    # Its own k and 256 steps (the recurrent model for JSB's <= 160 frames).
    assert point.train.eval_ks == tuple(sorted({point.model.k, 256}))
  lam = ex.GRIDS["lam-jsb-rnn"]
  assert [ex.EXPERIMENTS[p.name].train.lam for p in lam.expand()] == [0.5, 0.8, 0.9, 0.95, 0.99, 1.0]
  for name in ("trunc-eval-jsb-rnn-unstable", "trunc-eval-wikitext2-lstm-stable"):
    assert list(ex.EXPERIMENTS[name].train.eval_ks) == ks


def test_jsb_studies_and_nottingham_keep_the_100_epochs_their_rows_ran_with():
  # Table 1's JSB rows train the authors' 500 epochs; what derives from them and
  # is ours (studies, Nottingham) stays at 100, so its committed rows keep their
  # run ids and count as the registered setup.
  derived = [e for e in ex.EXPERIMENTS.values() if e.task in ("jsb", "nottingham")
             and e.name.startswith(("trunc-eval-jsb", "trunc-train-jsb", "lam-jsb",
                                    "mh-nottingham"))]
  assert len(derived) == 4 + 4 * 9 + 2 * 6 + 4
  assert {e.train.epochs for e in derived} == {100}
  base = ex.EXPERIMENTS["mh-jsb-lstm-stable"]
  study = ex.EXPERIMENTS["trunc-eval-jsb-lstm-stable"]
  assert dataclasses.replace(study.train, epochs=base.train.epochs,
                             eval_ks=base.train.eval_ks) == base.train
  # ... and the input Linear the Table 1 rows dropped (miller_hardt.jsb).
  assert study.model == dataclasses.replace(base.model, input_kind="linear", embed_size=88)


def test_every_experiment_documents_command_cost_and_published():
  for e in ex.EXPERIMENTS.values():
    doc = e.doc
    assert f"seqbench train {e.name}" in doc
    assert e.cost_cpu and e.cost_gpu and "Cost:" in doc
    assert "Published:" in doc
    if e.group in ("mh-table1", "tcn-table1") and e.name != "mh-jsb-lstm-authors-layout":
      assert e.published is not None, e.name
    hash(e)  # frozen, hashable


def test_measured_cpu_costs_of_the_gpu_rows_are_the_committed_estimate():
  # The registry's CPU hours for the GPU-only rows are read off a committed
  # measurement; a re-measurement that changes them must change both.
  from seqbench.experiments import miller_hardt, tcn
  path = (pathlib.Path(__file__).resolve().parents[1] / tcn.CAPPED_CPU_RUNS / "estimate.json")
  hours = {tuple(sorted(g["experiments"])): g["estimated_hours"]
           for g in json.loads(path.read_text())["groups"]}
  for task, by_model in tcn.CPU_TRAINING_HOURS.items():
    for backbone, h in by_model.items():
      measured = hours[(f"tcn-{task}-{backbone}",)]
      assert round(measured, 1) == h, (task, backbone, measured)
      assert f"~{h:g} h" in ex.EXPERIMENTS[f"tcn-{task}-{backbone}"].cost_cpu
  for backbone, h in miller_hardt.PTB_CHAR_CPU_PAIR_HOURS.items():
    pair = (f"mh-ptb-char-{backbone}-stable", f"mh-ptb-char-{backbone}-unstable")
    assert round(hours[pair], 1) == h, (backbone, hours[pair])
    assert all(f"~{h:g} h" in ex.EXPERIMENTS[name].cost_cpu for name in pair)


def test_list_json(capsys):
  assert ex.list_main(["--json"]) == 0
  items = json.loads(capsys.readouterr().out)
  assert [i["name"] for i in items] == NAMES
  for item in items:
    assert {"name", "task", "model", "published", "expected_cost"} <= set(item)
  assert ex.list_main(["mh-jsb-*"]) == 0
  text = capsys.readouterr().out
  assert "mh-jsb-rnn-stable" in text and "tcn-" not in text


@pytest.mark.parametrize("argv,needle", [
    (["--jsn"], "unrecognized arguments"),
    (["mh-jsb-rnn-stabel"], "did you mean mh-jsb-rnn-stable"),
    (["--json", "zz-*"], "no experiment matches 'zz-*'"),
])
def test_list_bad_input_is_one_line(argv, needle, capsys):
  assert ex.list_main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == ""  # not an empty table or `[]` that reads as "no experiments"
  assert len(captured.err.strip().splitlines()) == 1 and needle in captured.err


def test_list_expands_grid_names(capsys):
  assert ex.list_main(["--json", "lam-jsb-rnn"]) == 0
  names = [i["name"] for i in json.loads(capsys.readouterr().out)]
  assert names == [e.name for e in ex.GRIDS["lam-jsb-rnn"].expand()] and len(names) == 6


def test_overrides_parse_against_fields():
  base = ex.get_experiment("tcn-adding-lstm")
  e = ex.apply_overrides(base, {"lr": "0.5", "model.hidden_size": "7", "task.length": "20",
                                "stable": "true", "eval_ks": "1,2,4", "context": "none"})
  assert (e.train.lr, e.model.hidden_size, e.options()["length"], e.train.stable,
          e.train.eval_ks, e.train.context) == (0.5, 7, 20, True, (1, 2, 4), None)
  assert base.train.lr == 2e-3  # frozen originals are untouched
  with pytest.raises(ex.ConfigError, match="did you mean model.hidden_size"):
    ex.apply_overrides(base, {"model.hiden_size": "3"})
  with pytest.raises(ex.ConfigError, match="expected int"):
    ex.apply_overrides(base, {"hidden_size": "3.5"})
  with pytest.raises(ex.ConfigError, match="optimizer"):
    ex.apply_overrides(base, {"optimizer": "lbfgs"})
  with pytest.raises(ex.ConfigError, match="task.length"):
    ex.apply_overrides(base, {"task.length": "long"})
  with pytest.raises(ex.ConfigError, match="KEY=VALUE"):
    ex.parse_set_args(["lr"])
  with pytest.raises(ex.ConfigError, match="unknown experiment"):
    ex.get_experiment("mh-jsb")


def test_smoke_keeps_the_architecture():
  for name in ("mh-ptb-char-lstm-stable", "tcn-ptb-char-tcn", "tcn-copy-tcn"):
    full, small = ex.get_experiment(name), ex.smoke(ex.get_experiment(name))
    assert small.model == full.model
    assert small.train.epochs == 1 and small.train.max_steps_per_epoch <= 3
    assert small.train.optimizer == full.train.optimizer and small.train.lr == full.train.lr


def _needs_data(exc):
  if os.environ.get("SEQBENCH_DATA"):
    raise exc
  pytest.skip(f"data not available ({exc}); CI sets SEQBENCH_DATA to ../shared/data")


@pytest.mark.parametrize("name", NAMES)
def test_every_smoke_config_builds_and_traces_one_step(name):
  """Build task + model + optimiser and trace one training step (no compile)."""
  exp = ex.smoke(ex.get_experiment(name))
  try:
    trainer = train_lib._Trainer([train_lib._Member(exp, 0, "trace")], "/nonexistent",
                                 batched=False, smoke=True, progress=False)
    batch = next(trainer.data.batches("train", train=True, seed=0, epoch=0))
  except DataError as e:
    _needs_data(e)
  state = jax.eval_shape(trainer._init_state)
  new_state, loss = jax.eval_shape(trainer._train_step, state, batch)
  assert loss.shape == () and jax.tree_util.tree_structure(new_state) == \
      jax.tree_util.tree_structure(state)
  out_shape = jax.eval_shape(lambda p, x: trainer.model.apply(p, x)[0], state["params"],
                             batch["inputs"])
  assert out_shape.shape[0] == batch["inputs"].shape[0]


@pytest.mark.parametrize("name,sets", [
    ("tcn-jsb-tcn", ["length_multiple=512"]),  # one padded shape: one compilation
    # The LM path (carried state, stable 2-layer LSTM, embedding clip); narrower
    # layers keep the compile short.
    ("mh-wikitext2-lstm-stable", ["hidden_size=32", "embed_size=32"]),
])
def test_full_smoke_run(name, sets, tmp_path, capsys):
  """`seqbench train NAME --smoke` end to end (the CLI function)."""
  argv = [name, "--smoke", "--out", str(tmp_path), "--no-progress"]
  for item in sets:
    argv += ["--set", item]
  rc = train_lib.train_main(argv)
  out = capsys.readouterr()
  assert rc == 0, out.err
  (row,) = train_lib.read_results(str(tmp_path))
  assert row["experiment"] == name and row["config"]["smoke"] is True
  assert row["test_metric"] is not None and not row["diverged"]
  if name.startswith("mh-"):
    assert row["certified_bound"] <= 1.0 + 1e-5 and row["empirical_contraction"] is not None
    assert row["valid_metric"] is not None
  else:
    assert row["certified_bound"] is None and row["empirical_contraction"] is None
    assert row["executor"] == "conv"


def test_trunc_eval_smoke_writes_curves(tmp_path):
  row = train_lib.run_experiment(
      "trunc-eval-jsb-rnn-stable", out_dir=str(tmp_path), smoke=True, progress=False,
      overrides={"hidden_size": 8, "length_multiple": 512, "eval_batch_size": 4,
                 "max_eval_batches": 1})
  curves = json.loads((tmp_path / "curves" / f"{row['run_id']}.json").read_text())
  trunc = curves["truncation"]
  assert [c["k"] for c in trunc] == [1, 2, 4]
  gaps = [c["gap_mean"] for c in trunc]
  assert all(g >= 0 for g in gaps) and gaps[0] >= gaps[-1]
  # Each k's metric is the truncated model's own, not the full model's: k = 1
  # (every frame from the zero state) scores differently; with k past the
  # longest test sequence (160 frames) truncated(k) is the recurrent model, so
  # the gap vanishes and the metric is the row's test metric.
  row = train_lib.run_experiment(
      "trunc-eval-jsb-rnn-stable", out_dir=str(tmp_path / "long"), smoke=True, progress=False,
      overrides={"hidden_size": 8, "length_multiple": 512, "eval_batch_size": 4,
                 "max_eval_batches": 1, "train.eval_ks": "1,256"})
  k1, k256 = json.loads((tmp_path / "long" / "curves" / f"{row['run_id']}.json").read_text())[
      "truncation"]
  assert k256["k"] == 256 and k256["gap_max"] < 1e-5
  np.testing.assert_allclose(k256["test_metric"], row["test_metric"], rtol=1e-5)
  assert abs(k1["test_metric"] - row["test_metric"]) > 1e-3 * row["test_metric"]
  assert k1["gap_mean"] > 1e-3
  assert dataclasses.asdict(ex.smoke(ex.get_experiment("trunc-eval-jsb-rnn-stable")).train)[
      "eval_ks"] == (1, 2, 4)
