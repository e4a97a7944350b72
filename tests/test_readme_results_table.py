"""The README's reproduction table is generated from committed results, never typed."""

import json
import os
import subprocess
import sys

from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_reproduction_table_matches_committed_results():
  out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results_table.py"),
                        "--check"], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr


def _write_rows(folder, rows):
  os.makedirs(folder)
  with open(os.path.join(folder, "results.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")


def _row(experiment, seed, test, **train):
  from seqbench.experiments import EXPERIMENTS  # pylint: disable=import-outside-toplevel
  cfg = EXPERIMENTS[experiment].resolved_dict()
  return {"experiment": experiment, "seed": seed, "run_id": f"{experiment}-{seed}",
          "test_metric": test, "metric_name": "mse", "task": "adding", "model": "gru",
          "device_kind": "cpu", "diverged": False,
          "config": {**cfg, "smoke": False, "train": {**cfg["train"], **train}}}


def test_table_lists_registered_rows_with_mean_and_leaves_out_variants(tmp_path):
  results_table = load_script("results_table")
  _write_rows(tmp_path / "runs", [
      _row("tcn-adding-gru", 0, 5.2e-5), _row("tcn-adding-gru", 1, 5.4e-5),
      _row("tcn-adding-gru", 2, 1.0, lr=0.5)])
  lines = results_table.table(str(tmp_path), dirs=("runs",)).splitlines()
  assert len(lines) == 3, lines  # header, rule, one group: the lr variant is left out
  cells = [c.strip() for c in lines[2].strip("|").split("|")]
  assert cells[0] == "`tcn-adding-gru`"
  assert cells[3] == "5.300e-05 ± 1.414e-06"  # mean ± sample std of the two seeds
  assert cells[4] == "2"
  assert cells[5] == "5.300e-05" and cells[6] == "yes"
  # The folder's own README lists every group, the variant with what differs.
  folder = results_table.folder_table(str(tmp_path), "runs").splitlines()[2:]
  assert [l.split("|")[2].strip() for l in folder] == ["registered", "train.lr=0.5"]
  assert folder[1].split("|")[6].strip() == "n/a (not the published setup)"


def test_paper_tables_combine_the_folders(tmp_path):
  results_table = load_script("results_table")
  _write_rows(tmp_path / "cpu", [_row("tcn-adding-gru", 0, 5.2e-5), _row("tcn-adding-gru", 1, 5.4e-5)])
  _write_rows(tmp_path / "gpu", [_row("tcn-adding-tcn", 0, 6.0e-5)])
  text = results_table.paper_tables(str(tmp_path), dirs=("cpu", "gpu"))
  assert text.startswith("**Bai et al. (2018), Table 1**")  # no Miller & Hardt row ran
  adding = next(l for l in text.splitlines() if l.startswith("| adding |"))
  cells = [c.strip() for c in adding.strip("|").split("|")]
  assert cells[0] == "adding"
  assert cells[1] == "not in these results (published 0.164)"  # LSTM
  assert cells[2] == "5.300e-05 ± 1.414e-06 (2) vs 5.300e-05: yes"  # GRU, from cpu/
  assert cells[4] == "6.000e-05 (1) vs 5.800e-05: no (worse)"  # TCN, from gpu/
