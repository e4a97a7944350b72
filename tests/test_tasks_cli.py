"""``seqbench data`` (``python -m seqbench.tasks.cli``) as a user runs it.

Each case runs in a subprocess: exit status, stdout, and for user errors one
message on stderr without a Python traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqbench.tasks import storage

VENDORED = storage.VENDORED_ROOT


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
  # The same directory test_tasks.py uses, so a full run builds each cache once.
  return tmp_path_factory.getbasetemp() / "seqbench-cache"


@pytest.fixture()
def env(cache_dir, tmp_path):
  """Subprocess environment: test cache, hub off, no data root, empty user cache."""
  e = dict(os.environ)
  e[storage.ENV_CACHE] = str(cache_dir)
  e["HF_DATASETS_OFFLINE"] = "1"
  e["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  for name in (storage.ENV_HUB, storage.ENV_DATA):
    e.pop(name, None)
  return e


def run(args, env, ok=True):
  proc = subprocess.run([sys.executable, "-m", "seqbench.tasks.cli", *args], env=env,
                        capture_output=True, text=True, timeout=120, check=False)
  assert "Traceback" not in proc.stderr, proc.stderr
  if ok:
    assert proc.returncode == 0, proc.stderr
  return proc


def assert_user_error(proc, *needles):
  assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
  assert proc.stderr.startswith("seqbench data: error: "), proc.stderr
  assert proc.stderr.count("\n") == 1  # one message
  for needle in needles:
    assert needle in proc.stderr, (needle, proc.stderr)


def test_stats_json_vendored_without_data_root(env):
  out = json.loads(run(["stats", "wikitext2", "--json"], env).stdout)
  assert out["name"] == "wikitext2"
  assert out["splits"]["train"] == {"sequences": 36718, "tokens": 2088628, "vocab": 33278}
  assert out["splits"]["valid"]["tokens"] == 217646
  assert out["splits"]["test"]["tokens"] == 245569
  text = run(["stats", "nottingham"], env).stdout
  assert "176,561" in text and "694" in text


def test_list_names_all_nine(env):
  text = run(["list"], env).stdout
  for name in ("wikitext2", "ptb-word", "ptb-char", "jsb", "nottingham", "smnist", "pmnist",
               "adding", "copy"):
    assert name in text
  rows = {r["name"]: r for r in json.loads(run(["list", "--json"], env).stdout)}
  assert rows["wikitext2"]["data"] == "vendored" and rows["adding"]["data"] == "generated"
  assert rows["ptb-word"]["data"] == "missing"


def test_stats_with_shared_data_and_options(env):
  root = os.environ.get(storage.ENV_DATA)
  if not root:
    pytest.skip(f"{storage.ENV_DATA} is not set; CI's .ci/run sets it to ../shared/data")
  env = dict(env, **{storage.ENV_DATA: root})
  out = json.loads(run(["stats", "ptb-word", "--json"], env).stdout)
  assert out["splits"]["train"] == {"sequences": 42068, "tokens": 929589, "vocab": 10000}
  out = json.loads(run(["stats", "copy", "--json", "--set", "delay=200"], env).stdout)
  assert out["splits"]["test"]["length"] == 220


def test_unknown_task(env):
  assert_user_error(run(["stats", "wikitext3"], env, ok=False), "unknown task 'wikitext3'",
                    "wikitext2")


def test_missing_data_names_files_and_directory(env, tmp_path):
  proc = run(["stats", "ptb-char", "--data-dir", str(tmp_path)], env, ok=False)
  assert_user_error(proc, "ptb.char.train.txt", str(tmp_path / "ptb"), "from --data-dir")


def test_missing_split(env, tmp_path):
  d = tmp_path / "wikitext-2"
  d.mkdir()
  for split in ("train", "test"):
    shutil.copy(VENDORED / "wikitext-2" / f"wiki.{split}.tokens.gz", d)
  assert_user_error(run(["stats", "wikitext2", "--data-dir", str(tmp_path)], env, ok=False),
                    "missing wiki.valid.tokens")


def test_corrupt_gz_then_fixed(env, tmp_path, cache_dir):
  d = tmp_path / "wikitext-2"
  d.mkdir()
  for split in ("train", "valid", "test"):
    shutil.copy(VENDORED / "wikitext-2" / f"wiki.{split}.tokens.gz", d)
  target = d / "wiki.test.tokens.gz"
  good = target.read_bytes()
  os.chmod(target, 0o644)
  target.write_bytes(good[:-2000])
  proc = run(["stats", "wikitext2", "--data-dir", str(tmp_path)], env, ok=False)
  assert_user_error(proc, "wiki.test.tokens.gz", "corrupt or truncated gzip")
  assert not list((cache_dir / "wikitext-2").glob(".tmp-*"))  # nothing half-written
  target.write_bytes(good)
  out = json.loads(run(["stats", "wikitext2", "--json", "--data-dir", str(tmp_path)],
                       env).stdout)
  assert out["splits"]["test"]["tokens"] == 245569


def test_truncated_and_wrong_format_mat(env, tmp_path):
  d = tmp_path / "polyphonic-music"
  d.mkdir()
  good = (VENDORED / "polyphonic-music" / "Nottingham.mat").read_bytes()
  (d / "Nottingham.mat").write_bytes(good[:len(good) // 3])
  assert_user_error(run(["stats", "nottingham", "--data-dir", str(tmp_path)], env, ok=False),
                    "Nottingham.mat: not a readable MATLAB .mat file")
  (d / "Nottingham.mat").write_bytes(gzip.compress(b"not a mat file"))
  assert_user_error(run(["stats", "nottingham", "--data-dir", str(tmp_path)], env, ok=False),
                    "Nottingham.mat: not a readable MATLAB .mat file")


def test_bad_option_and_usage(env):
  assert_user_error(run(["stats", "adding", "--set", "lenght=3"], env, ok=False),
                    "no option 'lenght'")
  assert_user_error(run(["stats", "adding", "--set", "length=abc"], env, ok=False),
                    "expects int")
  proc = run(["frobnicate"], env, ok=False)
  assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_data_main_is_importable_for_the_top_level_cli(capsys):
  from seqbench.tasks.cli import data_main
  assert data_main(["stats", "nope"]) == 1
  assert "unknown task 'nope'" in capsys.readouterr().err
  assert data_main([]) == 2


@pytest.mark.parametrize("task,option", [("adding", "seed"), ("copy", "seed"),
                                         ("pmnist", "permutation_seed"),
                                         ("smnist", "split_seed")])
def test_a_negative_seed_is_one_clear_error(task, option, capsys):
  # numpy's generators reject it, but only when the first batch is drawn, with
  # a traceback (copy's stats even succeeded).
  from seqbench.tasks.cli import data_main
  assert data_main(["stats", task, "--set", f"{option}=-1"]) == 1
  err = capsys.readouterr().err
  assert f"{task}: option {option} must be >= 0, got -1." in err and "Traceback" not in err

