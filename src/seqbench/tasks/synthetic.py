r"""Synthetic tasks: the adding problem and copy memory (no files needed).

Both follow the generators of Bai et al. (2018, ``TCN/adding_problem`` and
``TCN/copy_memory``), with a seeded NumPy generator instead of the global one
so the data sets are fixed: split ``s`` of a task with seed ``seed`` is drawn
from ``numpy.random.default_rng(SeedSequence([seed, s_id, task_id]))``, so train
and test are independent and identical on every run (pinned by the tests).

**Adding problem** (Hochreiter & Schmidhuber, 1997; Le et al., 2015; TCN
table: T = 600). Input ``(T, 2)``: channel 0 holds values
:math:`u_t \sim U[0, 1)`, channel 1 is 1 at two distinct positions
:math:`i \ne j` drawn uniformly from all T steps, else 0. Target
:math:`y = u_i + u_j`; metric mean squared error. Sizes as in the TCN code:
50,000 train / 1,000 test sequences. Baseline: always predicting 1 has
expected MSE :math:`\mathrm{Var}(u_i + u_j) = 2/12 = 1/6 \approx 0.1667`;
the literature quotes "≈ 0.1767" (Le et al., 2015, whose phrasing the TCN paper
repeats). ``stats()`` reports both and the value on the fixed test set.

**Copy memory** (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016; TCN
table: T = 1000). Symbols: 0 blank, 1-8 data, 9 marker. Input, length
:math:`T + 2M` with :math:`M = 10`: M data symbols drawn uniformly from 1-8,
then T-1 blanks, then M+1 markers (the first one says "recall now"). Target:
T+M blanks, then the M data symbols. Metric: cross-entropy per step (nats),
averaged over all T+2M steps (the TCN code's loss). Sizes as in the TCN code:
10,000 train / 1,000 test. Baseline (memoryless: blanks for T+M steps, then
uniform over the 8 data symbols): :math:`M \ln 8 / (T + 2M)`, 0.02039 nats for
T = 1000. Inputs are int32 symbols; the TCN code feeds them as one float
channel, other papers one-hot -- that choice belongs to the model.

References:
  Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Neural Computation.
  Le, Jaitly & Hinton (2015), arXiv:1504.00941.
  Arjovsky, Shah & Bengio (2016), "Unitary Evolution Recurrent Neural
  Networks", ICML.
  Bai, Kolter & Koltun (2018), arXiv:1803.01271.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Iterator, Optional

import numpy as np

from seqbench.tasks import base
from seqbench.tasks import batching
from seqbench.tasks import metrics
from seqbench.tasks.storage import DataError

_SPLIT_IDS = {"train": 0, "test": 1}
BLANK, MARKER, DATA_SYMBOLS = 0, 9, 8


def _rng(seed: int, split: str, task_id: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], task_id]))


def _mse(outputs, batch):
  return metrics.squared_error(outputs, batch["targets"], batch["mask"])


def _nll(outputs, batch):
  return metrics.token_nll(outputs, batch["targets"], batch["mask"])


MSE = metrics.Metric("mse", "mean squared error per sequence", False, _mse, metrics.mean)
CROSS_ENTROPY = metrics.Metric("cross_entropy", "softmax cross-entropy per time step (nats)",
                               False, _nll, metrics.mean)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _SyntheticTask(base.Task):
  family: ClassVar[str] = "synthetic"
  splits: ClassVar[tuple[str, ...]] = ("train", "test")

  seed: int = 0
  n_train: int = 0
  n_test: int = 0

  def size(self, split: str) -> int:
    self.check_split(split)
    n = self.n_train if split == "train" else self.n_test
    if n < 1:
      raise DataError(f"{self.name}: n_{split} must be positive, got {n}.")
    return n

  def _check(self) -> None:
    """Validate options (raises DataError)."""

  def _generate(self, split: str):
    raise NotImplementedError

  def data(self, split: str):
    """The fixed split (memoised per process)."""
    self.check_split(split)
    self._check()
    return _memo(self, split)

  def _iter(self, split, batch_size, shuffle, seed, epoch, drop_remainder, pad_remainder):
    shuffle = self._batch_defaults(split, shuffle)
    return batching.index_batches(self.size(split), batch_size, shuffle=shuffle, seed=seed,
                                  epoch=epoch, drop_remainder=drop_remainder,
                                  pad_remainder=pad_remainder)


@functools.lru_cache(maxsize=4)
def _memo(task: _SyntheticTask, split: str):
  return task._generate(split)  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True, kw_only=True)
class AddingProblem(_SyntheticTask):
  """The adding problem (see the module docstring).

  Batches: ``"inputs"`` float32 ``(B, T, 2)``, ``"targets"`` float32 ``(B,)``,
  ``"mask"`` float32 ``(B,)``; ``outputs`` are predictions ``(B,)`` or
  ``(B, 1)``.

  Attributes:
    length: sequence length T (TCN table: 600).
    seed: data seed.
    n_train: training sequences (TCN: 50,000).
    n_test: test sequences (TCN: 1,000).
  """

  name: ClassVar[str] = "adding"
  summary: ClassVar[str] = "adding problem (generated), T=600 by default, MSE"
  metric: ClassVar[metrics.Metric] = MSE
  #: Expected MSE of always predicting 1 under U[0,1) values: Var(u_i + u_j).
  BASELINE_MSE_EXACT: ClassVar[float] = 1.0 / 6.0
  #: The figure quoted in the literature (Le et al., 2015) for that baseline.
  BASELINE_MSE_PUBLISHED: ClassVar[float] = 0.1767

  length: int = 600
  n_train: int = 50000
  n_test: int = 1000

  def _check(self) -> None:
    if self.length < 2:
      raise DataError(f"adding: length must be at least 2, got {self.length}.")

  def _generate(self, split: str):
    n, t = self.size(split), self.length
    rng = _rng(self.seed, split, 1)
    values = rng.random((n, t), dtype=np.float32)
    first = rng.integers(0, t, n)
    second = rng.integers(0, t - 1, n)
    second = second + (second >= first)  # uniform over positions != first
    rows = np.arange(n)
    targets = values[rows, first] + values[rows, second]
    return values, np.stack([first, second], 1).astype(np.int32), targets.astype(np.float32)

  def batches(self, split: str, batch_size: int, *, shuffle: Optional[bool] = None,
              seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
              pad_remainder: bool = False) -> Iterator[base.Batch]:
    """Batches of the fixed split (``shuffle`` defaults to True for train)."""
    values, positions, targets = self.data(split)
    for idx, real in self._iter(split, batch_size, shuffle, seed, epoch, drop_remainder,
                                pad_remainder):
      b = len(idx)
      inputs = np.zeros((b, self.length, 2), np.float32)
      inputs[:, :, 0] = values[idx]
      rows = np.arange(b)
      inputs[rows, positions[idx, 0], 1] = 1.0
      inputs[rows, positions[idx, 1], 1] = 1.0
      yield {"inputs": inputs, "targets": targets[idx], "mask": batching.row_mask(b, real)}

  def loss(self, outputs, batch):
    """Mean squared error over real examples."""
    total, count = metrics.squared_error(outputs, batch["targets"], batch["mask"])
    return total / count

  def baseline_mse(self, split: str = "test") -> float:
    """MSE of always predicting 1 on the fixed split."""
    _, _, targets = self.data(split)
    return float(np.mean(np.square(targets.astype(np.float64) - 1.0)))

  def stats(self) -> dict:
    self._check()
    return {
        "name": self.name,
        "family": self.family,
        "metric": self.metric.name,
        "options": self.options(),
        "baseline": {
            "rule": "always predict 1",
            "mse_test": round(self.baseline_mse("test"), 6),
            "mse_expected": round(self.BASELINE_MSE_EXACT, 6),
            "mse_published": self.BASELINE_MSE_PUBLISHED,
        },
        "splits": {s: {"sequences": self.size(s), "length": self.length, "channels": 2}
                   for s in self.splits},
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class CopyMemory(_SyntheticTask):
  """Copy memory (see the module docstring).

  Batches: ``"inputs"``, ``"targets"`` int32 ``(B, T + 2M)``, ``"mask"``
  float32 ``(B, T + 2M)``; ``outputs`` are logits ``(B, T + 2M, 10)``.

  Attributes:
    delay: T, the blank stretch between the data and the recall (TCN table:
      1000).
    memory: M, the number of symbols to remember (10).
    seed: data seed.
    n_train: training sequences (TCN: 10,000).
    n_test: test sequences (TCN: 1,000).
  """

  name: ClassVar[str] = "copy"
  summary: ClassVar[str] = "copy memory (generated), delay T=1000 by default, cross-entropy"
  metric: ClassVar[metrics.Metric] = CROSS_ENTROPY
  classes: ClassVar[int] = 10

  delay: int = 1000
  memory: int = 10
  n_train: int = 10000
  n_test: int = 1000

  @property
  def length(self) -> int:
    """Sequence length T + 2M."""
    return self.delay + 2 * self.memory

  def _check(self) -> None:
    if self.delay < 1 or self.memory < 1:
      raise DataError(
          f"copy: delay and memory must be positive, got {self.delay}, {self.memory}.")

  def baseline_cross_entropy(self) -> float:
    """Memoryless baseline :math:`M \\ln 8 / (T + 2M)` (nats per step)."""
    return self.memory * math.log(DATA_SYMBOLS) / self.length

  def _generate(self, split: str):
    rng = _rng(self.seed, split, 2)
    return rng.integers(1, DATA_SYMBOLS + 1, (self.size(split), self.memory)).astype(np.int32)

  def batches(self, split: str, batch_size: int, *, shuffle: Optional[bool] = None,
              seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
              pad_remainder: bool = False) -> Iterator[base.Batch]:
    """Batches of the fixed split (``shuffle`` defaults to True for train)."""
    symbols = self.data(split)
    m, length = self.memory, self.length
    for idx, real in self._iter(split, batch_size, shuffle, seed, epoch, drop_remainder,
                                pad_remainder):
      b = len(idx)
      data = symbols[idx]
      inputs = np.zeros((b, length), np.int32)
      inputs[:, :m] = data
      inputs[:, length - m - 1:] = MARKER
      targets = np.zeros((b, length), np.int32)
      targets[:, length - m:] = data
      mask = np.repeat(batching.row_mask(b, real)[:, None], length, axis=1)
      yield {"inputs": inputs, "targets": targets, "mask": mask}

  def loss(self, outputs, batch):
    """Mean cross-entropy per step over real sequences."""
    total, count = metrics.token_nll(outputs, batch["targets"], batch["mask"])
    return total / count

  def stats(self) -> dict:
    self._check()
    return {
        "name": self.name,
        "family": self.family,
        "metric": self.metric.name,
        "options": self.options(),
        "classes": self.classes,
        "baseline": {
            "rule": "blanks for T+M steps, then uniform over the 8 data symbols",
            "formula": "M ln 8 / (T + 2M)",
            "cross_entropy": round(self.baseline_cross_entropy(), 6),
        },
        "splits": {s: {"sequences": self.size(s), "length": self.length}
                   for s in self.splits},
    }
