"""Reports: numbers recomputed from hand-made rows, the match rule, LaTeX, shard merge."""

import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from seqbench import report
from seqbench.experiments import EXPERIMENTS

from helpers import load_script


def _row(experiment, seed, test, *, metric="perplexity", diverged=False, config=None, **kw):
  row = {
      "experiment": experiment, "task": "wikitext2", "model": "lstm", "executor": "scan",
      "k": None, "stable": False, "lam": None, "seed": seed, "metric_name": metric,
      "valid_metric": None if test is None else test + 1.0, "test_metric": test, "epochs": 3,
      "steps": 30, "wall_s": 10.0 + seed, "tokens_per_s": 1000.0, "diverged": diverged,
      "diverged_step": 7 if diverged else None, "certified_bound": 0.9,
      "empirical_contraction": 0.5 + 0.1 * seed, "config": config or {"smoke": False},
      "git_sha": "abc", "git_dirty": False, "versions": {}, "device_kind": "cpu",
      "device_count": 1, "dtype": "float32", "run_id": f"{experiment}-{seed}",
  }
  row.update(kw)
  return row


def _write(folder, rows, curves=()):
  os.makedirs(folder / "curves", exist_ok=True)
  with open(folder / "results.jsonl", "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  for c in curves:
    (folder / "curves" / f"{c['run_id']}.json").write_text(json.dumps(c))


def test_mean_std_recomputed_from_rows():
  vals = [92.1, 95.3, 93.7]
  rows = [_row("mh-wikitext2-lstm-unstable", s, v) for s, v in enumerate(vals)]
  rows.append(_row("mh-wikitext2-lstm-unstable", 3, None, diverged=True))
  (g,) = report.summarize(rows)
  assert g.n == 3 and g.diverged == 1 and g.seeds == (0, 1, 2, 3)
  assert g.mean == pytest.approx(statistics.mean(vals), abs=1e-12)
  assert g.std == pytest.approx(statistics.stdev(vals), abs=1e-12)
  assert g.wall_mean == pytest.approx(statistics.mean([10, 11, 12, 13]))
  assert g.contraction_mean == pytest.approx(statistics.mean([0.5, 0.6, 0.7]))
  assert g.published == EXPERIMENTS["mh-wikitext2-lstm-unstable"].published
  md = report.render_markdown([g], n_rows=4, dirs=["d"])
  assert f"{report.fmt(g.mean)} ± {report.fmt(g.std)}" in md
  assert "3 (+1 diverged)" in md
  # A seed that finished without a test metric (not diverged) is said too, not dropped silently.
  (gm,) = report.summarize(rows + [_row("mh-wikitext2-lstm-unstable", 4, None)])
  assert gm.n == 3 and report.n_cell(gm) == "3 (+1 diverged) (+1 without a test metric)"
  assert report.fmt(g.published) in md
  # One seed: no std.
  (g1,) = report.summarize(rows[:1])
  assert g1.mean == 92.1 and g1.std is None and report.ours_cell(g1) == report.fmt(92.1)


def test_every_number_in_the_table_comes_from_rows():
  rows = [_row("x-unregistered", s, v, metric="accuracy") for s, v in enumerate([0.5, 0.7])]
  (g,) = report.summarize(rows)
  assert g.published is None and g.match is None and g.variant == "unregistered"
  line = [ln for ln in report.render_markdown([g], n_rows=2, dirs=["d"]).splitlines()
          if ln.startswith("| x-unregistered")][0]
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells[5] == f"{report.fmt(0.6)} ± {report.fmt(statistics.stdev([0.5, 0.7]))}"
  assert cells[7] == "–" and cells[8] == "–"


@pytest.mark.parametrize("ours,published,metric,verdict", [
    (146.7, 146.7, "perplexity", "yes"),
    (146.7 * 1.0199, 146.7, "perplexity", "yes"),
    (146.7 * 1.021, 146.7, "perplexity", "no (worse)"),
    (146.7 * 0.979, 146.7, "perplexity", "no (better)"),
    (8.9 * 1.019, 8.9, "nll", "yes"),
    (1.40, 1.36, "bpc", "no (worse)"),
    (0.986, 0.990, "accuracy", "yes"),
    (0.984, 0.990, "accuracy", "no (worse)"),
    (0.996, 0.990, "accuracy", "no (better)"),
    (None, 0.99, "accuracy", None),
    (0.99, None, "accuracy", None),
])
def test_match_rule(ours, published, metric, verdict):
  assert report.matches(ours, published, metric) == verdict


def test_smoke_rows_get_no_verdict():
  rows = [_row("mh-wikitext2-lstm-unstable", 0, 92.3, config={"smoke": True})]
  (g,) = report.summarize(rows)
  assert g.match == report.NOT_COMPARED and g.variant.startswith("smoke")
  assert report.summarize([_row("mh-wikitext2-lstm-unstable", 0, 92.3)])[0].match == "yes"
  assert report._summary_lines([g])[0].startswith("0 of 0 rows")


def _registered_config(name, **train):
  cfg = EXPERIMENTS[name].resolved_dict()
  return {**cfg, "smoke": False, "train": {**cfg["train"], **train}}


def test_overrides_void_the_verdict_but_implementation_choices_do_not():
  name = "tcn-jsb-tcn"
  cfg = EXPERIMENTS[name].resolved_dict()
  lax = {**cfg, "smoke": False, "model": {**cfg["model"], "conv_impl": "lax_conv"}}
  short = _registered_config(name, epochs=6)
  rows = ([_row(name, s, 8.15, metric="frame_nll", config=lax, run_id=f"a{s}") for s in range(2)]
          + [_row(name, s, 8.10, metric="frame_nll", config=short, run_id=f"b{s}")
             for s in range(2)])
  groups = {g.variant: g for g in report.summarize(rows)}
  assert groups["model.conv_impl=lax_conv"].match == "yes"
  # The 6-epoch run equals the published number, and is still not a reproduction of it.
  assert groups["train.epochs=6"].match == report.NOT_COMPARED
  lines = report._summary_lines(list(groups.values()))
  assert lines[0].startswith("1 of 1 rows")
  assert lines[-1] == ("Not compared (not the published setup): "
                       "tcn-jsb-tcn [train.epochs=6].")


def test_diverged_seeds_make_a_no_and_are_counted():
  name = "mh-jsb-rnn-unstable"
  all_gone = [_row(name, s, None, metric="frame_nll", diverged=True) for s in range(3)]
  (g,) = report.summarize(all_gone)
  assert g.n == 0 and g.match == "no (3 of 3 seeds diverged)"
  assert report._summary_lines([g])[0].startswith("0 of 1 rows")
  # Survivors that match do not make a reproduction that lost a seed.
  some = [_row(name, 0, 8.9, metric="frame_nll"), _row(name, 1, None, metric="frame_nll",
                                                        diverged=True)]
  (g,) = report.summarize(some)
  assert g.mean == 8.9 and g.match == "no (1 of 2 seeds diverged)"


def test_truncation_table_leaves_out_diverged_seeds(tmp_path):
  name = "trunc-eval-jsb-rnn-stable"
  rows = [_row(name, 0, 8.5, metric="nll"), _row(name, 1, None, metric="nll", diverged=True)]
  _write(tmp_path, rows, [_curves(rows[0]["run_id"], 0, (0.4, 0.2, 0.1)),
                          _curves(rows[1]["run_id"], 1, (9.0, 9.0, 9.0))])
  (g,) = report.summarize(report.merge([str(tmp_path)]))
  tt = report.truncation_table(g)
  assert [e["n"] for e in tt] == [1, 1, 1] and tt[0]["gap_mean"] == pytest.approx(0.4)


def test_wall_time_of_a_vmapped_group_is_labelled_as_the_group_s():
  name = "mh-jsb-rnn-unstable"
  cfg = {**_registered_config(name), "vmap_group_size": 3}
  g = report.summarize([_row(name, s, 9.0 + s, metric="frame_nll", config=cfg, wall_s=300.0)
                        for s in range(3)])[0]
  assert g.group_size == 3 and report._wall_cell(g) == "300.00 (group of 3)"
  assert "| 300.00 (group of 3) |" in report.render_markdown([g], n_rows=3, dirs=["d"])


def test_latex_has_booktabs_rules():
  rows = [_row("mh-wikitext2-rnn-stable", s, v) for s, v in enumerate([143.0, 144.0])]
  tex = report.render_latex(report.summarize(rows), n_rows=2, dirs=["a_b"])
  for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
    assert rule in tex
  assert r"143.50 $\pm$ 0.7071" in tex
  assert "mh-wikitext2-rnn-stable" in tex and "% Generated by `seqbench report` from a_b" in tex


def _curves(rid, seed, gaps):
  return {"run_id": rid, "seed": seed, "metric_name": "nll", "lam": 0.9,
          "certified_bound": 0.8,
          "history": [{"epoch": e, "train_loss": 1.0, "valid_metric": 1.0, "lr": 0.1,
                       "certified_bound": 0.9 - 0.1 * e} for e in (1, 2)],
          "truncation": [{"k": k, "test_metric": 9.0 - k / 10 + seed, "gap_mean": g,
                          "gap_max": 2 * g} for k, g in zip((1, 2, 4), gaps)]}


def test_merge_of_shard_dirs_dedupes_and_reads_curves(tmp_path, capsys):
  name = "trunc-eval-jsb-rnn-stable"
  rows = [_row(name, s, 8.5 + s, metric="nll", stable=True, lam=0.9) for s in range(3)]
  _write(tmp_path / "s0", [rows[0], rows[2]], [_curves(rows[0]["run_id"], 0, (0.4, 0.2, 0.1))])
  _write(tmp_path / "s1", [rows[1], rows[2]], [_curves(rows[1]["run_id"], 1, (0.6, 0.3, 0.2))])
  merged = report.merge([str(tmp_path / "s0"), str(tmp_path / "s1")])
  assert sorted(r["run_id"] for r in merged) == sorted(r["run_id"] for r in rows)
  (g,) = report.summarize(merged)
  assert g.n == 3 and g.mean == pytest.approx(9.5)
  tt = report.truncation_table(g)
  assert [e["k"] for e in tt] == [1, 2, 4] and all(e["n"] == 2 for e in tt)
  assert tt[0]["gap_mean"] == pytest.approx(0.5) and tt[2]["gap_max"] == pytest.approx(0.4)
  assert tt[1]["test_metric"] == pytest.approx(statistics.mean([8.8, 9.8]))
  # The CLI: stdout markdown; a file; plots.
  assert report.report_main([str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
  md = capsys.readouterr().out
  assert "3 runs from" in md and "## Truncation: trunc-eval-jsb-rnn-stable" in md
  pytest.importorskip("matplotlib")
  out = tmp_path / "rep"
  assert report.report_main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--plots",
                             "--out", str(out), "--format", "latex"]) == 0
  assert (out / "report.tex").read_text().count(r"\toprule") == 2
  pngs = sorted(os.listdir(out / "plots"))
  assert pngs == ["contraction_over_training.png", "gap_vs_k.png", "metric_vs_k.png"]


def test_merge_keeps_a_copied_run_once_and_refuses_a_run_done_twice(tmp_path):
  name = "mh-jsb-rnn-stable"
  row = _row(name, 0, 9.4, metric="frame_nll")
  _write(tmp_path / "a", [row])
  _write(tmp_path / "copy", [row])
  _write(tmp_path / "rerun", [{**row, "test_metric": 9.9, "git_sha": "def"}])
  assert len(report.merge([str(tmp_path / "a"), str(tmp_path / "copy")])) == 1
  with pytest.raises(report.ReportError) as err:
    report.merge([str(tmp_path / "a"), str(tmp_path / "rerun")])
  msg = str(err.value)
  assert row["run_id"] in msg and "test_metric (9.4 vs 9.9)" in msg
  assert "git_sha ('abc' vs 'def')" in msg and "report these folders separately" in msg
  # The CLI: one line, no traceback.
  proc = subprocess.run([sys.executable, "-m", "seqbench", "report", str(tmp_path / "a"),
                         str(tmp_path / "rerun")], capture_output=True, text=True)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "report these folders separately" in proc.stderr


def test_plot_legends_tell_variants_of_one_experiment_apart(tmp_path, monkeypatch):
  pytest.importorskip("matplotlib")
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  legends = {}
  save = Figure.savefig

  def spy(fig, path, *args, **kwargs):
    legends[os.path.basename(path).removesuffix(".tmp.png")] = [t.get_text() for ax in fig.axes if ax.get_legend()
                                       for t in ax.get_legend().get_texts()]
    return save(fig, path, *args, **kwargs)

  monkeypatch.setattr(Figure, "savefig", spy)
  # The same experiment at its registered settings (500 epochs) and at 100,
  # each with a truncation study and curves.
  name = "mh-jsb-rnn-stable"
  rows = [_row(name, 0, 9.3, metric="frame_nll", stable=True, lam=1.0, run_id="r100",
               config=_registered_config(name, epochs=100)),
          _row(name, 0, 9.2, metric="frame_nll", stable=True, lam=1.0, run_id="r500",
               config=_registered_config(name))]
  _write(tmp_path, rows, [_curves("r100", 0, (0.4, 0.2, 0.1)), _curves("r500", 0, (0.3, 0.1, 0.05))])
  report.make_plots(report.summarize(report.merge([str(tmp_path)])), str(tmp_path / "plots"))
  for plot in ("metric_vs_k.png", "gap_vs_k.png", "contraction_over_training.png"):
    labels = [l for l in legends[plot] if l.startswith(name)]
    assert len(labels) == len(set(labels)) >= 2, (plot, legends[plot])
  assert f"{name} [train.epochs=100]" in legends["metric_vs_k.png"]
  assert name in legends["metric_vs_k.png"]  # the registered settings: the bare name


def test_plots_give_each_task_its_own_panel_and_legend(tmp_path, monkeypatch):
  # Metrics of different tasks share no axis, and every legend sits outside
  # its panel, inside the saved image.
  pytest.importorskip("matplotlib")
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  panels = {}
  save = Figure.savefig

  def spy(fig, path, *args, **kwargs):
    out = save(fig, path, *args, **kwargs)
    renderer = fig.canvas.get_renderer()
    panels[os.path.basename(path).removesuffix(".tmp.png")] = [
        (ax.get_title(loc="left"), ax.get_ylabel(),
         [t.get_text() for t in ax.get_legend().get_texts()],
         ax.get_legend().get_window_extent(renderer).x0 > ax.get_window_extent(renderer).x1)
        for ax in fig.axes]
    return out

  monkeypatch.setattr(Figure, "savefig", spy)
  rows = [_row("trunc-eval-jsb-rnn-stable", 0, 9.3, metric="frame_nll", stable=True, lam=0.9,
               task="jsb", run_id="j"),
          _row("trunc-eval-wikitext2-lstm-stable", 0, 140.0, metric="perplexity", stable=True,
               lam=0.9, task="wikitext2", run_id="w")]
  _write(tmp_path, rows, [_curves("j", 0, (0.4, 0.2, 0.1)), _curves("w", 0, (0.5, 0.3, 0.2))])
  report.make_plots(report.summarize(report.merge([str(tmp_path)])), str(tmp_path / "plots"))
  for plot in ("metric_vs_k.png", "gap_vs_k.png", "contraction_over_training.png"):
    (jsb, jsb_y, jsb_labels, jsb_out), (wt2, wt2_y, wt2_labels, wt2_out) = panels[plot]
    assert (jsb, wt2) == ("jsb", "wikitext2"), plot
    assert all(l.startswith("trunc-eval-jsb") or l.startswith("λ") for l in jsb_labels), plot
    assert all(l.startswith("trunc-eval-wikitext2") or l.startswith("λ") for l in wt2_labels)
    assert jsb_out and wt2_out, plot
  assert panels["metric_vs_k.png"][0][1] == "test frame_nll of truncated(k)"
  assert panels["metric_vs_k.png"][1][1] == "test perplexity of truncated(k)"


def test_lambda_frontier_plot(tmp_path):
  pytest.importorskip("matplotlib")
  rows = [_row(f"lam-jsb-rnn-lam{lam:g}", s, 8.0 + lam + s / 10, metric="nll", stable=True,
               lam=lam, run_id=f"{lam}-{s}") for lam in (0.5, 0.9, 1.0) for s in range(2)]
  paths = report.make_plots(report.summarize(rows), str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["lambda_frontier.png"]
  # Rows that no longer give the plot remove the stale file (a report links what it drew).
  (tmp_path / "notes.txt").write_text("kept")
  assert report.make_plots(report.summarize(rows[:2]), str(tmp_path)) == []
  assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_lambda_frontier_joins_only_groups_that_differ_in_lambda():
  def cfg(lam, executor="scan", k=0):
    return {"smoke": False, "task": "jsb",
            "model": {"backbone": "rnn", "hidden_size": 256, "executor": executor, "k": k},
            "train": {"lr": 0.01, "stable": True, "lam": lam, "epochs": 100}}
  common = dict(metric="frame_nll", task="jsb", model="rnn", stable=True)
  sweep = [_row(f"lam-jsb-rnn-{lam:g}", s, 9.0 + lam + s, lam=lam, config=cfg(lam),
                run_id=f"lam{lam}-{s}", **common) for lam in (0.5, 0.9, 1.0) for s in range(2)]
  # The Table 1 row at λ = 1 with the same settings, one seed: the same point, fewer seeds.
  twin = _row("mh-jsb-rnn-stable", 0, 50.0, lam=1.0, config=cfg(1.0), run_id="mh-0", **common)
  # Trained truncated at λ = 1: another configuration, one λ, so no line.
  trunc = _row("trunc-train-jsb-rnn-stable-k4", 0, 70.0, lam=1.0, executor="truncated", k=4,
               config=cfg(1.0, "truncated", 4), run_id="tt-0", **common)
  (line,) = report.lambda_frontier(report.summarize(sweep + [twin, trunc]))
  assert [p["lam"] for p in line["points"]] == [0.5, 0.9, 1.0]
  assert [p["mean"] for p in line["points"]] == [pytest.approx(m) for m in (10.0, 10.4, 10.5)]
  assert line["points"][-1]["experiment"] == "lam-jsb-rnn-1" and line["points"][-1]["n"] == 2
  assert line["settings"] == ""
  # The same sweep at another lr is a second line, and the titles say which is which.
  other = [dict(r, run_id="lr-" + r["run_id"],
                config={**r["config"], "train": {**r["config"]["train"], "lr": 0.1}})
           for r in sweep]
  lines = report.lambda_frontier(report.summarize(sweep + other))
  assert [l["settings"] for l in lines] == ["train.lr=0.01", "train.lr=0.1"]


def test_seeds_without_a_test_metric_make_a_no():
  name = "mh-jsb-rnn-unstable"
  rows = [_row(name, 0, 8.9, metric="frame_nll"), _row(name, 1, None, metric="frame_nll")]
  (g,) = report.summarize(rows)
  assert g.n == 1 and g.match == "no (1 of 2 seeds without a test metric)"


def test_a_diverged_seed_does_not_set_the_bound_of_the_gap_plot():
  rows = [_row("trunc-eval-jsb-rnn-stable", 0, 8.5, metric="nll"),
          _row("trunc-eval-jsb-rnn-stable", 1, None, metric="nll", diverged=True,
               certified_bound=40.0)]
  (g,) = report.summarize(rows)
  assert g.bound_max == pytest.approx(0.9)


def test_trained_truncated_keeps_one_group_per_k():
  rows = _trained_truncated_rows()
  # A one-seed experiment with the k=1 configuration under another name.
  twin = dict(next(r for r in rows if r["k"] == 1), experiment="another-name", run_id="tw-0",
              test_metric=30.0)
  (f,) = report.training_truncation(report.summarize(rows + [twin]))
  assert [(p["k"], p["n"], p["experiment"]) for p in f["points"]] == [
      (1, 2, "trunc-train-jsb-rnn-stable-k1"), (4, 2, "trunc-train-jsb-rnn-stable-k4")]


def test_lines_that_are_not_result_rows_are_skipped_with_a_warning(tmp_path, capsys):
  _write(tmp_path, [_row("mh-jsb-rnn-stable", 0, 9.0, metric="frame_nll"), {}, {"seed": 1}])
  rows = report.read_rows(str(tmp_path))
  assert [r["experiment"] for r in rows] == ["mh-jsb-rnn-stable"]
  assert "2 line(s) without an experiment skipped" in capsys.readouterr().err


def test_torn_last_line_is_skipped(tmp_path):
  _write(tmp_path, [_row("a", 0, 1.0)])
  with open(tmp_path / "results.jsonl", "a") as f:
    f.write('{"experiment": "a", "se')
  assert len(report.read_rows(str(tmp_path))) == 1


@pytest.mark.parametrize("argv,needle", [
    (["{missing}"], "no such directory"),
    (["{empty}"], "no results.jsonl"),
    (["{ok}", "--format", "html"], "invalid choice"),
    (["{ok}", "--plots"], "--plots needs --out"),
    ([], "required"),
])
def test_bad_cli_input(argv, needle, tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  _write(tmp_path / "ok", [_row("a", 0, 1.0)])
  argv = [a.format(missing=tmp_path / "nope", empty=tmp_path / "empty", ok=tmp_path / "ok")
          for a in argv]
  assert report.report_main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("seqbench report: ") and needle in err, err


def test_bad_cli_input_subprocess_no_traceback(tmp_path):
  out = subprocess.run([sys.executable, "-m", "seqbench.report", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def test_fmt_is_finite_and_plain():
  assert report.fmt(None) == "–"
  assert report.fmt(146.7) == "146.70"
  assert report.fmt(0.8721) == "0.8721"
  assert report.fmt(5.8e-5) == "5.800e-05"
  assert not math.isnan(report.mean_std([1.0])[0])


def test_out_that_cannot_be_made_is_one_line_exit_2(tmp_path, capsys):
  _write(tmp_path / "a", [_row("mh-jsb-rnn-stable", 0, 9.0, metric="frame_nll")])
  (tmp_path / "a_file").write_text("")
  rc = report.report_main([str(tmp_path / "a"), "--plots", "--out",
                           str(tmp_path / "a_file" / "report")])
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith("seqbench report: cannot create") and err.count("\n") == 1
  assert not (tmp_path / "a" / "plots").exists()


def test_full_run_estimate_extrapolates_measured_rate(tmp_path):
  # A capped row of the adding task: the estimate is units/epoch x the
  # registered epochs / measured rate, with units counted from real batches.
  estimate_full_run = load_script("estimate_full_run")
  from seqbench.experiments import get_experiment  # pylint: disable=g-import-not-at-top
  exp = get_experiment("tcn-adding-rnn")
  cfg = exp.resolved_dict()
  capped = {**cfg, "train": {**cfg["train"], "max_steps_per_epoch": 5}, "vmap_group_size": 2}
  rows = [{"experiment": exp.name, "config": capped,
           "steps": 5, "tokens_per_s": rate, "device_kind": "cpu", "git_sha": "abc",
           "seed": seed, "run_id": f"r{i}"}
          for i, (seed, rate) in enumerate([(0, 9999.0), (0, 1000.0), (1, 3000.0)])]
  (g,) = estimate_full_run.estimate(rows)
  n_train, length = 50_000, 600  # the adding task's training set at T = 600
  assert g["units_per_epoch"] == n_train * length
  # Seed 0 was measured twice: its later row (1000/s) supersedes the first.
  assert g["runs"] == 2
  assert g["estimated_hours"] == pytest.approx(n_train * length * exp.train.epochs / 2000 / 3600)
  md = estimate_full_run.render([g], str(tmp_path), estimate_full_run.latest_capped(rows)[1])
  assert "estimated hours" in md and "tcn-adding-rnn seed 0 (run r0, git abc)" in md


def test_full_run_estimate_leaves_out_rows_measured_with_other_settings(tmp_path):
  # A rate measured on another model says nothing about the registered one.
  estimate_full_run = load_script("estimate_full_run")
  from seqbench.experiments import get_experiment  # pylint: disable=g-import-not-at-top
  exp = get_experiment("tcn-adding-rnn")
  cfg = exp.resolved_dict()

  def row(seed, hidden):
    return {"experiment": exp.name, "seed": seed, "run_id": f"r{seed}", "steps": 5,
            "tokens_per_s": 1000.0, "device_kind": "cpu", "git_sha": "abc",
            "config": {**cfg, "model": {**cfg["model"], "hidden_size": hidden},
                       "train": {**cfg["train"], "epochs": 1, "max_steps_per_epoch": 5},
                       "vmap_group_size": 1}}

  rows = [row(0, exp.model.hidden_size), row(1, exp.model.hidden_size + 1)]
  (g,) = estimate_full_run.estimate(rows)
  assert g["runs"] == 1
  stale = estimate_full_run.stale_rows(rows)
  assert [(r["seed"], d) for r, d in stale] == [(1, ["model.hidden_size"])]
  md = estimate_full_run.render([g], str(tmp_path), (), stale)
  assert "registered with other settings since" in md and "(model.hidden_size)" in md
  with pytest.raises(SystemExit, match="registered settings"):
    estimate_full_run.estimate(rows[1:])


def test_compare_bench_flags_rows_slower_in_every_new_run(tmp_path):
  compare_bench = load_script("compare_bench")

  def run(name, sha, ms):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"model": m, "executor": "scan", "mode": "train",
                                        "batch": 16, "time": 128, "median_ms": t,
                                        "meta": {"git_sha": sha}}) + "\n"
                            for m, t in ms.items()))
    return str(path)

  base = run("base.jsonl", "aaaaaaa1", {"lstm": 10.0, "gru": 10.0, "rnn": 10.0, "lru": 10.0})
  new1 = run("new1.jsonl", "bbbbbbb2", {"lstm": 12.0, "gru": 12.0, "rnn": 9.0})
  new2 = run("new2.jsonl", "bbbbbbb2", {"lstm": 11.5, "gru": 10.5, "rnn": 9.5})
  out = tmp_path / "cmp.md"
  assert compare_bench.main([base, new1, new2, "--out", str(out)]) == 0
  md = out.read_text()
  # Only the LSTM is slower than the base by > 10 % in both new runs (best 11.5 ms).
  assert "lstm scan train (B=16, T=128): 1.15x the base" in md
  assert "gru scan train (B=16" not in md and "| rnn | scan | train | 16 x 128 | 10.00 | 9.00 | 9.50 | 0.90 |" in md
  assert "missing from a new run: 1" in md
  assert compare_bench.main([base, str(tmp_path / "nope.jsonl")]) == 2


def test_compare_bench_skips_a_torn_line_with_a_warning(tmp_path, capsys):
  compare_bench = load_script("compare_bench")
  row = lambda m, t: json.dumps({"model": m, "executor": "scan", "mode": "train", "batch": 16,
                                 "time": 128, "median_ms": t, "meta": {"git_sha": "a"}})
  base = tmp_path / "base.jsonl"
  base.write_text(row("lstm", 10.0) + "\n" + row("gru", 10.0) + "\n")
  # A run killed while appending: a complete row, a foreign line, then half a row.
  new = tmp_path / "new.jsonl"
  new.write_text(row("lstm", 20.0) + "\n" + '{"note": "x"}\n' + row("gru", 5.0)[:30])
  assert compare_bench.main([str(base), str(new)]) == 0
  out, err = capsys.readouterr()
  assert "lstm scan train (B=16, T=128): 2.00x the base" in out
  assert "missing from a new run: 1" in out
  assert "new.jsonl: 2 torn or non-timing line(s) skipped" in err


def test_lr_cuts_are_read_from_the_curves(tmp_path):
  # Each history entry holds the lr chosen after that epoch: seed 0 was cut
  # after epochs 2 and 4, seed 1 after epoch 1 (against the configured lr),
  # seed 2 never; a group without cuts gets no line.
  def hist(lrs):
    return [{"epoch": i + 1, "valid_metric": 1.0, "lr": lr} for i, lr in enumerate(lrs)]
  cfg = {"smoke": False, "train": {"lr": 20.0}}
  rows = [_row("mh-wikitext2-lstm-unstable", s, 90.0 + s, config=cfg) for s in range(3)]
  rows.append(_row("mh-wikitext2-rnn-unstable", 0, 140.0, config=cfg))
  curves = [{"run_id": r["run_id"], "history": h} for r, h in zip(rows, [
      hist([20.0, 5.0, 5.0, 1.25, 1.25]), hist([5.0, 5.0, 5.0, 5.0, 5.0]),
      hist([20.0] * 5), hist([20.0] * 5)])]
  _write(tmp_path, rows, curves)
  groups = report.summarize(report.merge([str(tmp_path)]))
  lstm = next(g for g in groups if g.experiment == "mh-wikitext2-lstm-unstable")
  assert report.lr_cuts(lstm) == [(0, [2, 4]), (1, [1]), (2, [])]
  md = report.render_markdown(groups, n_rows=4, dirs=[str(tmp_path)])
  assert "## Learning-rate cuts" in md
  section = md.split("## Learning-rate cuts")[1]
  assert "| mh-wikitext2-lstm-unstable |" in section
  assert "| seed 0: 2, 4; seed 1: 1; seed 2: none |" in section
  assert "| mh-wikitext2-rnn-unstable |" not in section
  assert report._cuts_cell([(0, [1, 2, 3, 4, 5])]) == "seed 0: 1, 2, 3 (+2 more)"


def test_an_unstable_row_with_unused_stability_settings_is_the_registered_row():
  from seqbench import train  # pylint: disable=g-import-not-at-top
  assert report.UNUSED_WHEN_UNSTABLE == train._UNUSED_WHEN_UNSTABLE  # pylint: disable=protected-access
  name = "mh-jsb-rnn-unstable"
  cfg = EXPERIMENTS[name].resolved_dict()
  rows = [_row(name, 0, 9.0, metric="frame_nll", config={**cfg, "smoke": False}),
          _row(name, 1, 9.2, metric="frame_nll", config={
              **cfg, "smoke": False, "train": {**cfg["train"], "lam": 0.9,
                                               "projection": "authors"}})]
  groups = report.summarize(rows)
  assert len(groups) == 1 and groups[0].n == 2
  assert report._overrides(report._group_config(rows[1]), report._registered(name, False)[1]) == []  # pylint: disable=protected-access


def test_logging_only_settings_do_not_split_a_row():
  from seqbench import train  # pylint: disable=g-import-not-at-top
  assert report.BOOKKEEPING_FIELDS == train.BOOKKEEPING_FIELDS
  name = "mh-jsb-rnn-stable"
  cfg = EXPERIMENTS[name].resolved_dict()
  with_ks = {**cfg, "smoke": False, "train": {**cfg["train"], "eval_ks": [1, 2, 4]}}
  plain = {**cfg, "smoke": False}
  lr = {**cfg, "smoke": False, "train": {**cfg["train"], "lr": 0.5}}
  rows = [_row(name, 0, 9.0, metric="frame_nll", config=with_ks),
          _row(name, 1, 9.2, metric="frame_nll", config=plain),
          _row(name, 2, 9.4, metric="frame_nll", config=lr)]
  groups = report.summarize(rows)
  assert sorted((g.n, g.variant) for g in groups) == [(1, "train.lr=0.5"), (2, "")]


def _trained_truncated_rows(lr_of_scan=0.01):
  """JSB tanh-RNN rows: trained truncated at k = 1, 4 (2 seeds each) and by scan (2 seeds)."""
  def cfg(executor, k, lr=0.01):
    return {"smoke": False, "task": "jsb",
            "model": {"backbone": "rnn", "hidden_size": 256, "executor": executor, "k": k},
            "train": {"lr": lr, "stable": True, "lam": 1.0, "eval_ks": []}}
  rows = []
  for k, base in ((4, 9.0), (1, 11.0)):
    rows += [_row(f"trunc-train-jsb-rnn-stable-k{k}", s, base + s, metric="frame_nll",
                  task="jsb", model="rnn", executor="truncated", k=k, stable=True, lam=1.0,
                  config=cfg("truncated", k), run_id=f"k{k}-{s}") for s in range(2)]
  rows += [_row("mh-jsb-rnn-stable", s, 8.0 + 2 * s, metric="frame_nll", task="jsb",
                model="rnn", stable=True, lam=1.0, config=cfg("scan", 0, lr_of_scan),
                run_id=f"scan-{s}") for s in range(2)]
  return rows


def test_trained_truncated_table_recomputed_from_rows(tmp_path):
  fams = report.training_truncation(report.summarize(_trained_truncated_rows()))
  assert len(fams) == 1
  (f,) = fams
  assert f["stable"] and f["lam"] == 1.0 and f["metric_name"] == "frame_nll"
  assert [p["k"] for p in f["points"]] == [1, 4]  # sorted by k, not by row order
  assert f["points"][0]["mean"] == pytest.approx(11.5)
  assert f["points"][1]["std"] == pytest.approx(statistics.stdev([9.0, 10.0]))
  assert f["reference"]["experiment"] == "mh-jsb-rnn-stable"
  assert f["reference"]["mean"] == pytest.approx(9.0) and f["reference"]["n"] == 2
  md = report.render_markdown(report.summarize(_trained_truncated_rows()), n_rows=6, dirs=["d"])
  assert "## Trained as truncated(k): jsb rnn, stable (λ=1)" in md
  assert "| 4 | 9.5 ± 0.7071 | 2 | s0 9 · s1 10 | trunc-train-jsb-rnn-stable-k4 |" in md
  assert "| scan (recurrent) | 9 ± 1.414 | 2 | s0 8 · s1 10 | mh-jsb-rnn-stable |" in md
  assert f["reference"]["by_seed"] == {0: 8.0, 1: 10.0}
  tex = report.render_latex(report.summarize(_trained_truncated_rows()), n_rows=6, dirs=["d"])
  assert r"Trained as truncated($k$): jsb rnn, stable ($\lambda$=1)" in tex
  pytest.importorskip("matplotlib")
  paths = report.make_plots(report.summarize(_trained_truncated_rows()), str(tmp_path))
  assert "trained_truncated_vs_k.png" in [os.path.basename(p) for p in paths]


def test_trained_truncated_reference_needs_the_same_config():
  """A scan run with another lr is not the truncated runs' recurrent counterpart."""
  (f,) = report.training_truncation(report.summarize(_trained_truncated_rows(lr_of_scan=0.1)))
  assert f["reference"] is None
  md = report.render_markdown(report.summarize(_trained_truncated_rows(lr_of_scan=0.1)),
                              n_rows=6, dirs=["d"])
  assert "| scan (recurrent) | not in these results | – | – | – |" in md


def test_trained_truncated_families_of_one_model_name_the_settings_that_differ(tmp_path):
  # The same study under two training setups (here lr): two families, whose
  # titles say which is which, each beside its own scan run.
  rows = _trained_truncated_rows()
  other = [dict(r, run_id="lr-" + r["run_id"], test_metric=r["test_metric"] + 1.0,
                config={**r["config"], "train": {**r["config"]["train"], "lr": 0.1}})
           for r in rows]
  fams = report.training_truncation(report.summarize(rows + other))
  assert [f["settings"] for f in fams] == ["train.lr=0.01", "train.lr=0.1"]
  assert [f["reference"]["mean"] for f in fams] == [pytest.approx(9.0), pytest.approx(10.0)]
  md = report.render_markdown(report.summarize(rows + other), n_rows=12, dirs=["d"])
  assert "## Trained as truncated(k): jsb rnn, stable (λ=1) [train.lr=0.01]" in md
  assert "## Trained as truncated(k): jsb rnn, stable (λ=1) [train.lr=0.1]" in md
  # Alone, a family's title has no settings.
  (f,) = report.training_truncation(report.summarize(rows))
  assert f["settings"] == ""


def test_trained_truncated_reference_prefers_the_scan_group_with_most_seeds():
  rows = _trained_truncated_rows()
  scan = [r for r in rows if r["executor"] == "scan"]
  # A one-seed twin of the scan row under another name (study (a) reruns the Table 1 row).
  twin = dict(scan[0], experiment="a-twin", run_id="twin-0", test_metric=20.0)
  (f,) = report.training_truncation(report.summarize(rows + [twin]))
  assert f["reference"]["experiment"] == "mh-jsb-rnn-stable" and f["reference"]["n"] == 2


def test_last_epochs_test_is_bai_et_al_protocol(tmp_path):
  name = "tcn-jsb-tcn"
  cfg = {**EXPERIMENTS[name].resolved_dict(), "smoke": False}
  tests = {0: [9.0, 8.3, 8.2, 8.1], 1: [9.0, 8.0, 8.1, 8.2]}
  rows = [_row(name, s, 8.15, metric="frame_nll", config=cfg) for s in tests]
  curves = [{"run_id": r["run_id"], "seed": r["seed"], "history": [
      {"epoch": e + 1, "valid_metric": 9.0, "test_metric": v} for e, v in enumerate(tests[s])]}
            for s, r in zip(tests, rows)]
  _write(tmp_path, rows, curves)
  (g,) = report.summarize(report.merge([str(tmp_path)]))
  e = report.last_epochs_test(g)
  per_run = [statistics.mean(tests[0][-3:]), statistics.mean(tests[1][-3:])]
  assert e["n"] == 2 and e["mean"] == pytest.approx(statistics.mean(per_run))
  assert e["std"] == pytest.approx(statistics.stdev(per_run))
  assert e["match"] == "yes"  # 8.15 is within 2 % of the published 8.10
  md = report.render_markdown([g], n_rows=2, dirs=[str(tmp_path)])
  assert "## Test metric of the last 3 epochs" in md
  assert "8.15 ± 0.07071" in md  # per run 8.2 and 8.1
  tex = report.render_latex([g], n_rows=2, dirs=[str(tmp_path)])
  assert "test, last 3 epochs" in tex
  assert r"8.15 $\pm$ 0.07071" in tex
  # Runs that did not log it get no such section.
  _write(tmp_path / "plain", rows, [])
  (g2,) = report.summarize(report.merge([str(tmp_path / "plain")]))
  assert report.last_epochs_test(g2) is None
  assert "last 3 epochs" not in report.render_markdown([g2], n_rows=2, dirs=["d"])


def test_per_epoch_test_is_logging_only():
  from seqbench import train  # pylint: disable=g-import-not-at-top
  base = train.resolve("tcn-jsb-tcn")
  assert base.train.test_every_epoch
  off = train.resolve("tcn-jsb-tcn", {"train.test_every_epoch": False})
  assert train.run_id(off, 0) == train.run_id(base, 0)


def test_paper_tables_put_registered_runs_in_the_papers_layout():
  lax = {**_registered_config("tcn-jsb-tcn"), "model": {
      **EXPERIMENTS["tcn-jsb-tcn"].resolved_dict()["model"], "conv_impl": "lax_conv"}}
  rows = ([_row("tcn-jsb-lstm", s, v, metric="frame_nll", task="jsb",
                config=_registered_config("tcn-jsb-lstm")) for s, v in enumerate([8.40, 8.44])]
          + [_row("tcn-jsb-tcn", 0, 8.31, metric="frame_nll", task="jsb", config=lax)]
          # Shortened: not the published setup, so its cell stays empty.
          + [_row("tcn-jsb-gru", 0, 8.43, metric="frame_nll", task="jsb",
                  config=_registered_config("tcn-jsb-gru", epochs=6))]
          + [_row("mh-jsb-rnn-stable", 0, 9.15, metric="frame_nll", task="jsb",
                  config=_registered_config("mh-jsb-rnn-stable"))])
  groups = report.summarize(rows)
  tables = {t["title"]: t for t in report.paper_tables(groups)}
  assert list(tables) == ["Miller & Hardt (2019), Table 1", "Bai et al. (2018), Table 1"]
  tcn = tables["Bai et al. (2018), Table 1"]
  assert tcn["headings"] == ["LSTM", "GRU", "tanh-RNN", "TCN"]
  assert [r["task"] for r in tcn["rows"]][:4] == ["smnist", "pmnist", "adding", "copy"]
  for t in report.PAPER_TABLES:  # the layout lists every task the registry has for the table
    assert set(t.tasks) == {e.task for e in EXPERIMENTS.values() if e.group == t.registry_group}
  jsb = {h: c for h, c in zip(tcn["headings"], next(r for r in tcn["rows"] if r["task"] == "jsb")["cells"])}
  assert jsb["LSTM"]["group"].mean == pytest.approx(8.42) and jsb["LSTM"]["group"].n == 2
  assert jsb["TCN"]["group"].variant == "model.conv_impl=lax_conv"  # an implementation choice
  assert jsb["GRU"]["group"] is None and jsb["GRU"]["published"] == 8.43
  assert report._paper_cell(jsb["GRU"]) == "not in these results (published 8.43)"
  assert report._paper_cell(jsb["LSTM"]) == (
      f"8.42 ± {statistics.stdev([8.40, 8.44]):.4g} (2) vs 8.45: yes")
  md = report.render_markdown(groups, n_rows=len(rows), dirs=["d"])
  assert "## Bai et al. (2018), Table 1" in md and "| task | LSTM | GRU | tanh-RNN | TCN |" in md
  mh_jsb = next(line for line in md.splitlines()
                if line.startswith("| jsb | not in these results (published 8.9) | 9.15 (1) vs 8.9"))
  assert mh_jsb.endswith("not in these results (published 8.5) |")
  tex = report.render_latex(groups, n_rows=len(rows), dirs=["d"])
  assert r"\caption{Bai et al. (2018), Table 1: ours" in tex and r"8.42 $\pm$" in tex
  # Runs of no published table (a study grid) make no paper table.
  study = [_row("trunc-train-jsb-rnn-stable-k4", 0, 9.4, metric="frame_nll", task="jsb")]
  assert report.paper_tables(report.summarize(study)) == []
