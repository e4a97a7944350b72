"""seqbench.tasks: official statistics, batching invariants, metrics, errors.

The PTB and MNIST checks read the shared data through ``SEQBENCH_DATA`` (CI's
``.ci/run`` sets it to ``../shared/data``); without the variable they are
skipped with that reason. The vendored tasks (WikiText-2, JSB, Nottingham) and
the generated ones always run. The hub is never contacted: tests that cover the
hub path replace ``datasets.load_dataset`` with a local stand-in.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqbench import tasks
from seqbench.tasks import batching, language, metrics, music, pixel, storage
from seqbench.tasks.cli import data_main

VENDORED = storage.VENDORED_ROOT


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
  """One Arrow cache for the session (shared with test_tasks_cli.py), no hub."""
  cache = tmp_path_factory.getbasetemp() / "seqbench-cache"
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(storage.ENV_CACHE, str(cache))
    mp.delenv(storage.ENV_HUB, raising=False)
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    yield cache


@pytest.fixture()
def no_data_root(monkeypatch, tmp_path):
  """SEQBENCH_DATA unset and an empty user cache: only vendored data is found."""
  monkeypatch.delenv(storage.ENV_DATA, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
  root = os.environ.get(storage.ENV_DATA)
  if not root:
    pytest.skip(f"{storage.ENV_DATA} is not set; CI's .ci/run sets it to ../shared/data "
                "(the PTB and MNIST files are not vendored)")
  return Path(root)


def _stats(name, **kw):
  return tasks.get_task(name, **kw).stats()


# ------------------------------------------------------ official statistics

WIKITEXT2 = {
    "train": {"sequences": 36718, "tokens": 2088628, "vocab": 33278},
    "valid": {"sequences": 3760, "tokens": 217646, "vocab": 13777},
    "test": {"sequences": 4358, "tokens": 245569, "vocab": 14143},
}
PTB_WORD = {
    "train": {"sequences": 42068, "tokens": 929589, "vocab": 10000},
    "valid": {"sequences": 3370, "tokens": 73760, "vocab": 6022},
    "test": {"sequences": 3761, "tokens": 82430, "vocab": 6049},
}
PTB_CHAR = {
    "train": {"sequences": 42068, "tokens": 5017482, "vocab": 50},
    "valid": {"sequences": 3370, "tokens": 393042, "vocab": 50},
    "test": {"sequences": 3761, "tokens": 442423, "vocab": 48},
}
# (sequences, frames, min, mean, max, notes per frame) from the shared README.
JSB = {"train": (229, 13807, 25, 60.3, 129, 3.90), "valid": (76, 4602, 32, 60.6, 144, 3.87),
       "test": (77, 4725, 32, 61.4, 160, 3.89)}
NOTTINGHAM = {"train": (694, 176561, 40, 254.4, 1788, 3.96),
              "valid": (173, 45513, 96, 263.1, 1473, 3.96),
              "test": (170, 44463, 63, 261.5, 1793, 3.99)}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_wikitext2_vendored_matches_official_stats(no_data_root):
  stats = _stats("wikitext2")
  assert stats["splits"] == WIKITEXT2
  assert stats["vocab"] == 33278
  assert stats["verified"] is True
  assert Path(stats["source"]) == VENDORED / "wikitext-2"


@pytest.mark.parametrize("name,expected", [("ptb-word", PTB_WORD), ("ptb-char", PTB_CHAR)])
def test_ptb_matches_official_stats(shared_data, name, expected):
  stats = _stats(name)
  assert stats["splits"] == expected
  assert stats["vocab"] == (10000 if name == "ptb-word" else 50)
  assert stats["verified"] is True


@pytest.mark.parametrize("name,expected", [("jsb", JSB), ("nottingham", NOTTINGHAM)])
def test_music_vendored_matches_official_stats(no_data_root, name, expected):
  stats = _stats(name)
  assert stats["verified"] is True and stats["keys"] == 88
  for split, (seqs, frames, lo, mean, hi, notes) in expected.items():
    s = stats["splits"][split]
    assert (s["sequences"], s["frames"], s["length_min"], s["length_max"]) == (
        seqs, frames, lo, hi)
    assert s["length_mean"] == mean and s["notes_per_frame"] == pytest.approx(notes, abs=1e-9)
    assert s["scored_frames"] == frames - seqs  # T-1 predicted frames per sequence


@pytest.mark.parametrize("name", ["smnist", "pmnist"])
def test_mnist_matches_official_stats(shared_data, name):
  stats = _stats(name)
  splits = stats["splits"]
  assert stats["verified"] is True
  assert [splits[s]["sequences"] for s in ("train", "valid", "test")] == [55000, 5000, 10000]
  assert splits["test"]["label_counts"] == MNIST_TEST_COUNTS
  both = np.add(splits["train"]["label_counts"], splits["valid"]["label_counts"])
  assert both.tolist() == MNIST_TRAIN_COUNTS
  assert all(splits[s]["length"] == 784 for s in splits)


def test_synthetic_stats_follow_tcn_sizes():
  adding = _stats("adding")
  assert adding["splits"] == {"train": {"sequences": 50000, "length": 600, "channels": 2},
                              "test": {"sequences": 1000, "length": 600, "channels": 2}}
  assert adding["baseline"]["mse_expected"] == pytest.approx(1 / 6, abs=1e-6)
  # 1,000 test sums of two U[0,1): the baseline MSE is 1/6 +- ~0.01.
  assert abs(adding["baseline"]["mse_test"] - 1 / 6) < 0.02
  copy = _stats("copy")
  assert copy["splits"] == {"train": {"sequences": 10000, "length": 1020},
                            "test": {"sequences": 1000, "length": 1020}}
  assert copy["baseline"]["cross_entropy"] == pytest.approx(10 * math.log(8) / 1020, abs=1e-6)


def test_registry_has_the_nine_tasks_in_table_order():
  assert tasks.task_names() == ["wikitext2", "ptb-word", "ptb-char", "jsb", "nottingham",
                                "smnist", "pmnist", "adding", "copy"]


def test_data_stats_json_in_process_for_all_nine(shared_data, capsys):
  import json
  for name in tasks.task_names():
    assert data_main(["stats", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == name and set(out["splits"]) == set(tasks.TASKS[name].splits)
  assert data_main(["stats", "wikitext2", "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["splits"] == WIKITEXT2


# ------------------------------------------------------------ LM batching


def _concat_windows(windows, key):
  return np.concatenate([w[key] for w in windows], axis=1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), b=st.integers(1, 7), length=st.integers(1, 50),
       pad=st.booleans())
def test_bptt_windows_cover_every_target_once(n, b, length, pad):
  stream = np.arange(n * b + min(n % 3, b - 1), dtype=np.int32)  # + a dropped tail
  rows = batching.batchify(stream, b)
  assert rows.shape == (b, n)
  np.testing.assert_array_equal(rows.reshape(-1), stream[:n * b])  # contiguous rows
  windows = list(batching.bptt_windows(rows, length, pad=pad))
  assert len(windows) == batching.num_windows(n, length)
  mask = _concat_windows(windows, "mask").astype(bool)
  assert set(np.unique(_concat_windows(windows, "mask"))) <= {0.0, 1.0}
  # In order, nothing lost, nothing twice: the real targets are rows[:, 1:].
  np.testing.assert_array_equal(_concat_windows(windows, "targets")[mask].reshape(b, -1),
                                rows[:, 1:])
  np.testing.assert_array_equal(_concat_windows(windows, "inputs")[mask].reshape(b, -1),
                                rows[:, :-1])
  for w in windows:
    assert w["inputs"].dtype == np.int32 and w["mask"].dtype == np.float32
    if pad:
      assert w["inputs"].shape == (b, length)
    assert w["inputs"].flags.c_contiguous


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), b=st.integers(1, 4), k=st.integers(1, 40),
       length=st.integers(1, 40), pad=st.booleans())
def test_context_windows_score_each_target_once_with_k_inputs(n, b, k, length, pad):
  rows = batching.batchify(np.arange(n * b, dtype=np.int32), b)
  scored = []
  for w in batching.context_windows(rows, k, length, pad=pad):
    if pad:
      assert w["inputs"].shape == (b, k - 1 + length)
    assert (w["mask"] == w["mask"][:1]).all()  # same pattern on every row
    m = np.flatnonzero(w["mask"][0])
    assert 0 < m.size <= length and (np.diff(m) == 1).all()
    for j in m:
      # targets are the inputs shifted by one stream position ...
      np.testing.assert_array_equal(w["targets"][:, j], w["inputs"][:, j] + 1)
      # ... and the window holds the k-1 inputs before j (fewer only at a
      # row's start): rows come from arange, so values are stream positions.
      position = int(w["inputs"][0, j])
      history = min(k - 1, position)
      np.testing.assert_array_equal(w["inputs"][0, j - history:j + 1],
                                    np.arange(position - history, position + 1))
    scored.append(w["targets"][:, m])
  np.testing.assert_array_equal(np.concatenate(scored, axis=1), rows[:, 1:])


def test_context_windows_reproduce_truncated_view():
  # With k = 3: the target of input position t is scored in a window that
  # starts at max(0, s - 2) where s is the window's first scored position.
  rows = np.arange(10, dtype=np.int32)[None]
  ws = list(batching.context_windows(rows, 3, 4, pad=True))
  np.testing.assert_array_equal(ws[0]["inputs"], [[0, 1, 2, 3, 0, 0]])
  np.testing.assert_array_equal(ws[0]["mask"], [[1, 1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(ws[1]["inputs"], [[2, 3, 4, 5, 6, 7]])
  np.testing.assert_array_equal(ws[1]["targets"], [[3, 4, 5, 6, 7, 8]])
  np.testing.assert_array_equal(ws[1]["mask"], [[0, 0, 1, 1, 1, 1]])
  np.testing.assert_array_equal(ws[2]["inputs"], [[6, 7, 8, 0, 0, 0]])
  np.testing.assert_array_equal(ws[2]["mask"], [[0, 0, 1, 0, 0, 0]])


def test_wikitext2_windows_cover_batchified_stream(no_data_root):
  task = tasks.get_task("wikitext2")
  stream = task.stream("valid")
  b, length = 10, 35
  windows = list(task.batches("valid", b, length=length))
  n = stream.size // b
  assert sum(w["mask"].sum() for w in windows) == b * (n - 1)
  np.testing.assert_array_equal(_concat_windows(windows, "targets"),
                                stream[:b * n].reshape(b, n)[:, 1:])
  assert task.vocab[stream[0]] == language.EOS  # the first line is blank
  assert task.vocab_size == 33278


def test_line_rules_match_pytorch_examples():
  text = " a b \n\n c\r\nd \n "
  assert language.text_lines(text) == [" a b \n", "\n", " c\n", "d \n"]
  tokens = [t for line in language.text_lines(text) for t in language.tokenize_line(line)]
  assert tokens == ["a", "b", "<eos>", "<eos>", "c", "<eos>", "d", "<eos>"]
  assert language.text_lines("x\ny") == ["x\n", "y"]  # a real last line counts
  assert language.sentence_to_chars(" no it <unk> ") == list("no_it_<unk>") + ["<eos>"]


# --------------------------------------------------------- other batching


def test_index_batches_partition_and_remainders():
  seen = np.concatenate([i[:r] for i, r in batching.index_batches(23, 5, shuffle=True, seed=3)])
  assert sorted(seen.tolist()) == list(range(23))
  last = list(batching.index_batches(23, 5, shuffle=False, pad_remainder=True))[-1]
  assert last[0].shape == (5,) and last[1] == 3
  assert len(list(batching.index_batches(23, 5, shuffle=False, drop_remainder=True))) == 4
  a = [i.tolist() for i, _ in batching.index_batches(23, 5, shuffle=True, seed=1, epoch=0)]
  b = [i.tolist() for i, _ in batching.index_batches(23, 5, shuffle=True, seed=1, epoch=0)]
  c = [i.tolist() for i, _ in batching.index_batches(23, 5, shuffle=True, seed=1, epoch=1)]
  assert a == b and a != c


def test_music_batches_masks_are_exact(no_data_root):
  task = tasks.get_task("jsb")
  seqs = task.sequences("valid")
  batches = list(task.batches("valid", 8, length_multiple=16, pad_remainder=True))
  assert all(x["inputs"].shape[0] == 8 and x["inputs"].shape[1] % 16 == 0 for x in batches)
  lengths = []
  for batch, start in zip(batches, range(0, len(seqs), 8)):
    assert batch["inputs"].dtype == np.float32 and batch["inputs"].shape[2] == 88
    for row, seq in enumerate(seqs[start:start + 8]):
      t = seq.shape[0] - 1
      np.testing.assert_array_equal(batch["mask"][row], np.arange(batch["mask"].shape[1]) < t)
      np.testing.assert_array_equal(batch["inputs"][row, :t], seq[:-1])
      np.testing.assert_array_equal(batch["targets"][row, :t], seq[1:])
      assert not batch["inputs"][row, t:].any() and not batch["targets"][row, t:].any()
      lengths.append(t)
    real_rows = len(seqs[start:start + 8])
    assert not batch["mask"][real_rows:].any()  # padding rows are empty
  assert sum(b["mask"].sum() for b in batches) == task.stats()["splits"]["valid"][
      "scored_frames"] == sum(lengths)
  # shuffled training epoch: every sequence exactly once
  total = sum(b["mask"].sum() for b in task.batches("train", 16, seed=5))
  assert total == sum(s.shape[0] - 1 for s in task.sequences("train"))


def test_music_score_first_frame(no_data_root):
  task = tasks.get_task("jsb", score_first_frame=True)
  seq = task.sequences("test")[0]
  batch = next(iter(task.batches("test", 1)))
  assert batch["mask"].sum() == seq.shape[0]
  assert not batch["inputs"][0, 0].any()
  np.testing.assert_array_equal(batch["targets"][0], seq)


def test_pixel_batches(shared_data):
  s, p = tasks.get_task("smnist"), tasks.get_task("pmnist")
  xs = next(iter(s.batches("test", 64)))
  xp = next(iter(p.batches("test", 64)))
  assert xs["inputs"].shape == (64, 784, 1) and xs["inputs"].dtype == np.float32
  assert xs["labels"].dtype == np.int32
  np.testing.assert_array_equal(xs["labels"], xp["labels"])
  np.testing.assert_array_equal(xp["inputs"][:, :, 0], xs["inputs"][:, p.order(), 0])
  raw = tasks.get_task("smnist", normalize=False)
  x01 = next(iter(raw.batches("test", 64)))["inputs"]
  assert x01.min() >= 0 and x01.max() <= 1
  np.testing.assert_allclose(xs["inputs"], (x01 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
  last = list(s.batches("valid", 3000, pad_remainder=True))[-1]
  assert last["mask"].sum() == 2000 and last["inputs"].shape[0] == 3000
  # hold-out: disjoint, seeded, documented sizes
  train_idx, valid_idx = s.holdout()
  assert len(np.intersect1d(train_idx, valid_idx)) == 0 and len(valid_idx) == 5000
  labels = np.concatenate([b["labels"][b["mask"] > 0] for b in s.batches("valid", 512)])
  assert labels.shape == (5000,)


def test_pmnist_permutation_is_pinned():
  perm = pixel.permutation(0)
  assert sorted(perm.tolist()) == list(range(784))
  # Recorded: seed 0 -> this permutation. A change (e.g. a NumPy generator
  # change) would silently change the benchmark; update docs if intended.
  assert hashlib.sha256(perm.tobytes()).hexdigest() == (
      "a7c8a41d39ef34dea225b70881173bfacb1c16cc11063a9e1e8bcc4c8c5cc496")


# --------------------------------------------------------------- synthetic


def test_synthetic_tasks_are_deterministic_and_well_formed():
  a1 = tasks.get_task("adding", length=50, n_train=200, n_test=100)
  a2 = tasks.get_task("adding", length=50, n_train=200, n_test=100)
  b1 = list(a1.batches("train", 32, seed=1))
  b2 = list(a2.batches("train", 32, seed=1))
  for x, y in zip(b1, b2):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
  x = next(iter(a1.batches("test", 100)))
  assert x["inputs"].shape == (100, 50, 2)
  assert (x["inputs"][:, :, 1].sum(1) == 2).all()
  marked = (x["inputs"][:, :, 0] * x["inputs"][:, :, 1]).sum(1)
  np.testing.assert_allclose(marked, x["targets"], rtol=1e-6)
  # train and test differ, another seed differs
  assert not np.array_equal(a1.data("train")[0][:100], a1.data("test")[0])
  other = tasks.get_task("adding", length=50, n_train=200, n_test=100, seed=1)
  assert not np.array_equal(other.data("test")[2], a1.data("test")[2])

  c = tasks.get_task("copy", delay=7, n_train=50, n_test=20)
  y = next(iter(c.batches("test", 20)))
  assert y["inputs"].shape == y["targets"].shape == (20, 7 + 20)
  np.testing.assert_array_equal(y["inputs"][:, :10], y["targets"][:, -10:])
  assert ((y["inputs"][:, :10] >= 1) & (y["inputs"][:, :10] <= 8)).all()
  assert (y["inputs"][:, 10:16] == 0).all() and (y["inputs"][:, 16:] == 9).all()
  assert (y["targets"][:, :17] == 0).all()
  np.testing.assert_array_equal(c.data("test"), tasks.get_task(
      "copy", delay=7, n_train=50, n_test=20).data("test"))


def test_synthetic_default_sets_are_pinned():
  # Fixed data sets: these digests change only if the generator changes.
  adding = tasks.get_task("adding", n_train=1, n_test=1000)
  values, positions, targets = adding.data("test")
  digest = hashlib.sha256(values.tobytes() + positions.tobytes()).hexdigest()[:16]
  copy = tasks.get_task("copy").data("test")
  digest_copy = hashlib.sha256(copy.tobytes()).hexdigest()[:16]
  assert (digest, digest_copy) == PINNED_SYNTHETIC, (digest, digest_copy)


PINNED_SYNTHETIC = ("3ea75ad53eae4da8", "24cfda4f78c075a8")


# ----------------------------------------------------------------- metrics


def test_token_nll_perplexity_and_bpc_hand_cases():
  logits = jnp.log(jnp.array([[[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]]))  # p = (1/4,1/2,1/4), 1/3
  targets = jnp.array([[1, 0]])
  total, count = metrics.token_nll(logits, targets)
  assert float(total) == pytest.approx(math.log(2) + math.log(3), rel=1e-6)
  assert float(count) == 2
  total, count = metrics.token_nll(logits, targets, jnp.array([[1.0, 0.0]]))
  assert (float(total), float(count)) == (pytest.approx(math.log(2), rel=1e-6), 1.0)
  assert metrics.perplexity(math.log(7) * 3, 3) == pytest.approx(7)
  assert metrics.bits_per_character(math.log(2) * 5, 5) == pytest.approx(1.0)
  uniform = jnp.zeros((2, 3, 50))
  t, c = metrics.token_nll(uniform, jnp.ones((2, 3), jnp.int32))
  assert tasks.get_task("ptb-char").metric.finalize(float(t), float(c)) == pytest.approx(
      math.log2(50), rel=1e-6)
  assert tasks.get_task("wikitext2").metric.finalize(float(t), float(c)) == pytest.approx(
      50, rel=1e-5)


def test_frame_nll_hand_case():
  z = math.log(3.0)  # sigmoid(z) = 3/4
  logits = jnp.full((1, 2, 88), z)
  targets = jnp.zeros((1, 2, 88)).at[0, 0, :2].set(1.0)
  # frame 0: 2 keys on (-ln 3/4 each), 86 off (-ln 1/4 each); frame 1: 88 off
  frame0 = -2 * math.log(0.75) - 86 * math.log(0.25)
  frame1 = -88 * math.log(0.25)
  total, count = metrics.frame_nll(logits, targets, jnp.array([[1.0, 1.0]]))
  assert float(total) == pytest.approx(frame0 + frame1, rel=1e-6) and float(count) == 2
  total, count = metrics.frame_nll(logits, targets, jnp.array([[1.0, 0.0]]))
  assert float(total / count) == pytest.approx(frame0, rel=1e-6)
  # at p = 1/2 each frame costs 88 ln 2, whatever the notes
  t, c = metrics.frame_nll(jnp.zeros((3, 5, 88)), jnp.ones((3, 5, 88)))
  assert float(t / c) == pytest.approx(88 * math.log(2), rel=1e-6)


def test_accuracy_and_mse_hand_cases():
  logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
  hit, n = metrics.correct_count(logits, jnp.array([1, 1, 1]))
  assert (float(hit), float(n)) == (2.0, 3.0)
  hit, n = metrics.correct_count(logits, jnp.array([1, 1, 1]), jnp.array([1.0, 1.0, 0.0]))
  assert (float(hit), float(n)) == (1.0, 2.0)
  se, n = metrics.squared_error(jnp.array([[1.0], [2.0]]), jnp.array([0.5, 4.0]))
  assert (float(se), float(n)) == (pytest.approx(0.25 + 4.0), 2.0)


def test_copy_memoryless_baseline_equals_formula():
  task = tasks.get_task("copy", delay=30, n_train=8, n_test=8)
  batch = next(iter(task.batches("test", 8)))
  length, m = task.length, task.memory
  probs = np.zeros((8, length, 10), np.float32)
  probs[:, :length - m, 0] = 1.0
  probs[:, length - m:, 1:9] = 1.0 / 8
  logits = jnp.log(jnp.asarray(probs) + 1e-30)
  value = task.metric.reduce([task.metric(logits, batch)])
  assert value == pytest.approx(task.baseline_cross_entropy(), rel=1e-5)
  assert task.baseline_cross_entropy() == pytest.approx(10 * math.log(8) / 50)
  assert tasks.get_task("copy").baseline_cross_entropy() == pytest.approx(0.0203866, abs=1e-7)


def test_adding_baseline_and_jit():
  task = tasks.get_task("adding", length=20, n_train=64, n_test=64)
  batch = next(iter(task.batches("test", 64)))
  ones = jnp.ones((64, 1))
  value = task.metric.reduce([jax.jit(task.metric)(ones, batch)])
  assert value == pytest.approx(task.baseline_mse("test"), rel=1e-5)
  assert float(jax.jit(task.loss)(ones, batch)) == pytest.approx(value, rel=1e-5)


def test_losses_jit_and_reduce_is_exact_over_batches(no_data_root):
  task = tasks.get_task("jsb")
  key = jax.random.PRNGKey(0)
  stats, whole = [], []
  longest = max(s.shape[0] for s in task.sequences("valid")) - 1
  for batch in task.batches("valid", 7, pad_to=longest, pad_remainder=True):
    logits = jax.random.normal(key, batch["inputs"].shape)
    stats.append(jax.jit(task.metric)(logits, batch))
    loss = jax.jit(task.loss)(logits, batch)
    assert float(loss) == pytest.approx(float(stats[-1][0] / stats[-1][1]), rel=1e-6)
    whole.append((np.asarray(stats[-1][0]), np.asarray(stats[-1][1])))
  expected = sum(float(t) for t, _ in whole) / sum(float(c) for _, c in whole)
  assert task.metric.reduce(stats) == pytest.approx(expected)
  # mean of batch means would differ: the metric is per real frame
  assert sum(float(c) for _, c in whole) == 4602 - 76


def test_evaluate_with_uniform_model_gives_vocab_perplexity(no_data_root):
  task = tasks.get_task("jsb")
  value = task.evaluate(lambda b: jnp.zeros(b["inputs"].shape), "test", 16, pad_to=160,
                        pad_remainder=True)
  # float32 sums inside a batch, float64 across batches
  assert value == pytest.approx(88 * math.log(2), rel=1e-5)


# --------------------------------------------------------------- bad input


def _copy_source(src_dir: Path, dst_dir: Path, names):
  dst_dir.mkdir(parents=True, exist_ok=True)
  for name in names:
    shutil.copy(src_dir / name, dst_dir / name)
    os.chmod(dst_dir / name, 0o644)


WIKI_FILES = [f"wiki.{s}.tokens.gz" for s in ("train", "valid", "test")]


def _cache_entries(name: str):
  root = Path(os.environ[storage.ENV_CACHE]) / name
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_unknown_task_and_option_and_split():
  with pytest.raises(tasks.DataError, match="unknown task 'wikitext'.*Did you mean wikitext2"):
    tasks.get_task("wikitext")
  with pytest.raises(tasks.DataError, match="no option 'lenght'; options: .*length"):
    tasks.get_task("adding", lenght=3)
  with pytest.raises(tasks.DataError, match="no split 'valid'; available splits: train, test"):
    next(tasks.get_task("adding").batches("valid", 4))
  with pytest.raises(tasks.DataError, match="no split 'dev'"):
    tasks.get_task("wikitext2").stream("dev")


def test_missing_files_error_names_dataset_files_and_directory(tmp_path, monkeypatch):
  monkeypatch.setenv(storage.ENV_DATA, str(tmp_path))
  with pytest.raises(tasks.DataError) as e:
    tasks.get_task("ptb-word").stats()
  msg = str(e.value)
  assert "Penn Treebank" in msg and "ptb.train.txt" in msg and str(tmp_path / "ptb") in msg
  assert "SEQBENCH_HUB=1" in msg
  with pytest.raises(tasks.DataError, match=r"MNIST.*train-images-idx3-ubyte.*mnist"):
    tasks.get_task("smnist").stats()


def test_missing_split_file(tmp_path):
  _copy_source(VENDORED / "wikitext-2", tmp_path / "wikitext-2", WIKI_FILES[:1] + WIKI_FILES[2:])
  with pytest.raises(tasks.DataError, match="missing wiki.valid.tokens"):
    tasks.get_task("wikitext2", data_dir=str(tmp_path)).stats()


def test_corrupt_gz_fails_cleanly_and_recovers(tmp_path):
  d = tmp_path / "wikitext-2"
  _copy_source(VENDORED / "wikitext-2", d, WIKI_FILES)
  good = (d / WIKI_FILES[1]).read_bytes()
  (d / WIKI_FILES[1]).write_bytes(good[:len(good) // 2])  # truncated
  task = tasks.get_task("wikitext2", data_dir=str(tmp_path))
  before = _cache_entries("wikitext-2")
  with pytest.raises(tasks.DataError, match="corrupt or truncated gzip"):
    task.stats()
  assert _cache_entries("wikitext-2") == before  # nothing half-written
  (d / WIKI_FILES[1]).write_bytes(b"\x1f\x8b" + b"garbage" * 10)
  with pytest.raises(tasks.DataError, match="corrupt or truncated gzip"):
    tasks.get_task("wikitext2", data_dir=str(tmp_path)).stats()
  (d / WIKI_FILES[1]).write_bytes(gzip.compress(b"\xff\xfe bad utf8\n"))
  with pytest.raises(tasks.DataError, match="not UTF-8"):
    tasks.get_task("wikitext2", data_dir=str(tmp_path)).stats()
  (d / WIKI_FILES[1]).write_bytes(good)  # fixed: works, same numbers
  assert tasks.get_task("wikitext2", data_dir=str(tmp_path)).stats()["splits"] == WIKITEXT2


def test_crash_while_writing_the_cache_leaves_nothing(tmp_path, monkeypatch):
  import datasets

  class Crash(Exception):
    pass

  def crash(self, path, *a, **k):
    Path(path).mkdir(parents=True)
    (Path(path) / "partial.arrow").write_bytes(b"half")
    raise Crash()

  cache = tmp_path / "cache"
  monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", crash)
  with pytest.raises(Crash):
    music.load_rolls(music.JSB, storage.Location(cache_dir=str(cache)))
  assert list((cache / "JSB_Chorales").iterdir()) == []  # no entry, no temporary
  monkeypatch.undo()
  rolls, meta = music.load_rolls(music.JSB, storage.Location(cache_dir=str(cache)))
  assert len(rolls["train"]) == 229 and meta["verified"]
  [entry] = (cache / "JSB_Chorales").iterdir()
  assert (entry / "meta.json").is_file()


def test_truncated_and_foreign_mat_files(tmp_path):
  d = tmp_path / "polyphonic-music"
  _copy_source(VENDORED / "polyphonic-music", d, ["JSB_Chorales.mat"])
  good = (d / "JSB_Chorales.mat").read_bytes()
  before = _cache_entries("JSB_Chorales")
  for bad in (good[:5000], good[:10], b"just some text, not MATLAB\n" * 20):
    (d / "JSB_Chorales.mat").write_bytes(bad)
    with pytest.raises(tasks.DataError, match="JSB_Chorales.mat: not a readable MATLAB"):
      tasks.get_task("jsb", data_dir=str(tmp_path)).stats()
  assert _cache_entries("JSB_Chorales") == before
  import scipy.io
  mat = scipy.io.loadmat(str(VENDORED / "polyphonic-music" / "JSB_Chorales.mat"))
  scipy.io.savemat(str(d / "JSB_Chorales.mat"),
                   {"traindata": mat["traindata"], "validdata": mat["validdata"]})
  with pytest.raises(tasks.DataError, match="no variable 'testdata' \\(split 'test' is missing"):
    tasks.get_task("jsb", data_dir=str(tmp_path)).stats()
  (d / "JSB_Chorales.mat").write_bytes(good)
  assert tasks.get_task("jsb", data_dir=str(tmp_path)).stats()["splits"]["test"][
      "sequences"] == 77


def test_bad_idx_files(tmp_path):
  header = (2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
  data = header + bytes(3 * 784)
  assert pixel.parse_idx(Path("x"), data, images=True).shape == (3, 784)
  with pytest.raises(tasks.DataError, match="truncated"):
    pixel.parse_idx(Path("x"), data[:-5], images=True)
  with pytest.raises(tasks.DataError, match="magic number 2049, expected 2051"):
    pixel.parse_idx(Path("x"), (2049).to_bytes(4, "big") + data[4:], images=True)
  labels = (2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes([3, 12])
  with pytest.raises(tasks.DataError, match="label 12 outside"):
    pixel.parse_idx(Path("y"), labels, images=False)


def test_mnist_training_files_of_the_wrong_size_are_one_clear_error(tmp_path, monkeypatch):
  # Files that fail the sha256 check are still read (flagged unverified); a
  # training set that is not 60,000 images cannot be split by the fixed holdout.
  def idx(n, images):
    if images:
      return ((2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
              + bytes(n * 784))
    return (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(n)
  d = tmp_path / "mnist"
  d.mkdir()
  for prefix in ("train", "t10k"):
    (d / f"{prefix}-images-idx3-ubyte").write_bytes(idx(10, True))
    (d / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(10, False))
  monkeypatch.setenv("SEQBENCH_CACHE", str(tmp_path / "cache"))
  task = tasks.get_task("smnist", data_dir=str(tmp_path))
  assert len(task.arrays("test")[1]) == 10
  with pytest.raises(tasks.DataError, match="hold 10 images, not 60,000"):
    task.arrays("train")


# ----------------------------------------------------------------- the hub


class _FakeHub:
  """Stands in for ``datasets.load_dataset``: hub layouts built from local files."""

  def __init__(self, shared: Path):
    self.shared = shared
    self.calls = []

  def __call__(self, path, name=None, **kw):
    import datasets
    self.calls.append((path, name))
    names = {"train": "train", "validation": "valid", "test": "test"}
    if path == "Salesforce/wikitext":
      files = {h: VENDORED / "wikitext-2" / f"wiki.{s}.tokens.gz" for h, s in names.items()}
      col, strip = "text", False
    elif path == "ptb-text-only/ptb_text_only":
      files = {h: self.shared / "ptb" / f"ptb.{s}.txt.gz" for h, s in names.items()}
      col, strip = "sentence", True
    else:
      raise ConnectionError("no network in tests")
    out = {}
    for hub_split, f in files.items():
      lines = gzip.open(f, "rt", encoding="utf-8").read().split("\n")[:-1]
      out[hub_split] = datasets.Dataset.from_dict(
          {col: [l.strip() if strip else l + "\n" for l in lines]})
    return datasets.DatasetDict(out)


@pytest.mark.parametrize("name,expected", [("wikitext2", WIKITEXT2), ("ptb-word", PTB_WORD),
                                           ("ptb-char", PTB_CHAR)])
def test_hub_layout_maps_to_the_same_pipeline(request, tmp_path, monkeypatch, name, expected):
  import datasets
  # The WikiText-2 stand-in serves the vendored files, so only PTB needs the shared data.
  shared = None if name == "wikitext2" else request.getfixturevalue("shared_data")
  fake = _FakeHub(shared)
  monkeypatch.setattr(datasets, "load_dataset", fake)
  monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
  monkeypatch.setenv(storage.ENV_DATA, str(tmp_path))  # empty root
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  if name == "wikitext2":  # vendored copy would win; hide it
    monkeypatch.setattr(storage, "VENDORED_ROOT", tmp_path / "nothing")
  stats = tasks.get_task(name, hub=True).stats()
  assert fake.calls and stats["splits"] == expected
  assert stats["source"].startswith("hub:") and stats["verified"] is None


def test_hub_cache_key_follows_the_pipeline_version(monkeypatch):
  # A pipeline change must not be served the old parse of hub data from the cache.
  chunks = [b"a\0", b"b\0"]
  key = storage.content_key(chunks)
  assert key.startswith("hub-") and key == storage.content_key(iter(chunks))
  assert key != storage.content_key([b"ab\0"])
  monkeypatch.setattr(storage, "PIPELINE_VERSION", storage.PIPELINE_VERSION + "-next")
  assert storage.content_key(chunks) != key


def test_hub_is_off_when_offline_or_not_asked(monkeypatch, tmp_path):
  import datasets
  calls = []
  def boom(*a, **k):
    # load_from_hub turns any exception into a DataError that also says
    # "not found", so the record of calls is what shows the hub was left alone.
    calls.append(a)
    raise AssertionError("the hub must not be contacted")
  monkeypatch.setattr(datasets, "load_dataset", boom)
  monkeypatch.setenv(storage.ENV_DATA, str(tmp_path))
  with pytest.raises(tasks.DataError, match="not found"):
    tasks.get_task("ptb-word").stats()  # not asked
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  with pytest.raises(tasks.DataError, match="not found"):
    tasks.get_task("ptb-word", hub=True).stats()  # asked, but offline
  assert calls == []
  monkeypatch.delenv("HF_DATASETS_OFFLINE")
  monkeypatch.setattr(datasets, "load_dataset", _FakeHub(tmp_path))
  with pytest.raises(tasks.DataError, match="MNIST.*ConnectionError: no network"):
    tasks.get_task("smnist", hub=True).stats()


def test_hub_mnist_images_map_to_pixel_rows(monkeypatch):
  import datasets
  def fake(path, name=None, **kw):
    assert path == "ylecun/mnist"
    img = [[(r * 28 + c) % 256 for c in range(28)] for r in range(28)]
    part = datasets.Dataset.from_dict({"image": [img, img], "label": [3, 7]})
    return datasets.DatasetDict({"train": part, "test": part})
  monkeypatch.setattr(datasets, "load_dataset", fake)
  arrays = pixel._hub_arrays(storage.Location(hub=True))  # pylint: disable=protected-access
  images, labels = arrays["test"]
  assert images.shape == (2, 784) and images.dtype == np.uint8
  np.testing.assert_array_equal(images[0], np.arange(784) % 256)
  assert labels.tolist() == [3, 7]
