r"""Pixel-by-pixel MNIST: sequential (``smnist``) and permuted (``pmnist``).

Each 28 x 28 MNIST image is read as a sequence of 784 pixels, one per step, in
raster order (``smnist``) or in one fixed random order (``pmnist``); the model
classifies the digit after the last step. Metric: test accuracy (Le, Jaitly &
Hinton, 2015; Bai et al., 2018, ``TCN/mnist_pixel``).

Data: the four official IDX files (``train-images-idx3-ubyte``, ...,
optionally gzipped) under ``<data root>/mnist/``. MNIST is not vendored.

Splits (documented choices, the papers report train/test only):

* ``valid``: ``valid_size`` (5,000) images held out from the 60,000 training
  images: the first ``valid_size`` entries of
  ``numpy.random.default_rng(split_seed).permutation(60000)`` with
  ``split_seed = 0``; ``train`` is the other 55,000. Both keep file order.
* ``test``: the official 10,000.

Inputs are float32 ``(B, 784, 1)``, normalised as in the TCN code
(``torchvision.transforms.Normalize((0.1307,), (0.3081,))`` after scaling to
[0, 1]) unless ``normalize=False`` (then plain [0, 1]).

The ``pmnist`` permutation is ``numpy.random.default_rng(permutation_seed)
.permutation(784)`` with ``permutation_seed = 0``: pixel ``t`` of the permuted
sequence is pixel ``perm[t]`` of the raster sequence. :func:`permutation`
returns it and ``stats()`` records its seed and SHA-256. (The TCN code draws its
permutation from an unseeded generator, so no published run can be matched
exactly.)

References:
  Le, Jaitly & Hinton (2015), "A Simple Way to Initialize Recurrent Networks of
  Rectified Linear Units", arXiv:1504.00941.
  LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
  document recognition" (MNIST).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import ClassVar, Iterator, Mapping, Optional

import numpy as np

from seqbench.tasks import base
from seqbench.tasks import batching
from seqbench.tasks import metrics
from seqbench.tasks import storage
from seqbench.tasks.storage import DataError

PIXELS = 784
CLASSES = 10
MEAN, STD = 0.1307, 0.3081  # torchvision MNIST normalisation used by TCN
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049

MNIST = storage.Source(
    title="MNIST (IDX files)",
    folder="mnist",
    files={
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    },
    sha256={
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    hub="'ylecun/mnist'",
    origin="the MNIST database of LeCun, Cortes & Burges (CC BY-SA 3.0; not vendored)",
)


def parse_idx(path: Path, data: bytes, images: bool) -> np.ndarray:
  """An IDX3 image file as uint8 ``(N, 784)`` or an IDX1 label file as ``(N,)``.

  Raises:
    DataError: wrong magic number, wrong dimensions or wrong length.
  """
  what = "image (IDX3)" if images else "label (IDX1)"
  header = 16 if images else 8
  if len(data) < header:
    raise DataError(f"{path}: {len(data)} bytes is too short for an MNIST {what} file.")
  magic = int.from_bytes(data[0:4], "big")
  expected = _IMAGES_MAGIC if images else _LABELS_MAGIC
  if magic != expected:
    raise DataError(
        f"{path}: magic number {magic}, expected {expected}; not an MNIST {what} file.")
  n = int.from_bytes(data[4:8], "big")
  if images:
    rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
    if (rows, cols) != (28, 28):
      raise DataError(f"{path}: images are {rows}x{cols}, expected 28x28.")
  size = header + n * (PIXELS if images else 1)
  if len(data) != size:
    raise DataError(
        f"{path}: {len(data)} bytes, expected {size} for {n} entries; the file is "
        f"{'truncated' if len(data) < size else 'too long'}.")
  arr = np.frombuffer(data, np.uint8, offset=header)
  if images:
    return arr.reshape(n, PIXELS)
  if arr.size and arr.max() >= CLASSES:
    raise DataError(f"{path}: label {int(arr.max())} outside 0..9.")
  return arr


def _build(arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], meta: dict):
  import datasets  # pylint: disable=import-outside-toplevel
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  features = datasets.Features({
      "pixels": datasets.List(datasets.Value("uint8"), length=PIXELS),
      "label": datasets.ClassLabel(num_classes=CLASSES),
  })
  dsd = {}
  for split, (images, labels) in arrays.items():
    if images.shape[0] != labels.shape[0]:
      raise DataError(
          f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels.")
    # Build the Arrow table directly: Dataset.from_dict on a 2-D numpy array
    # goes through Python lists (~20 s for 60k images).
    table = pa.table({
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), PIXELS),
        "label": pa.array(labels.astype(np.int64)),
    })
    dsd[split] = datasets.Dataset(table).cast(features)
  return datasets.DatasetDict(dsd), meta


_HUB_MNIST = "ylecun/mnist"  # the hub's current name for 'mnist'


def _hub_arrays(location: storage.Location):
  dsd = storage.load_from_hub(MNIST, location, _HUB_MNIST)
  out = {}
  for split in ("train", "test"):
    if split not in dsd or not {"image", "label"} <= set(dsd[split].column_names):
      raise DataError(f"MNIST: the hub dataset {_HUB_MNIST!r} lacks the image/label "
                      "columns; put the IDX files in the data root instead.")
    try:
      # Decoding the hub's PNG images needs Pillow (a `datasets` extra).
      images = np.stack([np.asarray(im, np.uint8).reshape(PIXELS)
                         for im in dsd[split]["image"]])
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f"MNIST: cannot decode the hub's images ({type(e).__name__}: {e}); "
                      "install Pillow or put the IDX files in the data root.") from None
    out[split] = (images, np.asarray(dsd[split]["label"], np.uint8))
  return out


def load_mnist(location: storage.Location):
  """``({"train": (images, labels), "test": ...}, meta)`` via the Arrow cache."""
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  paths = MNIST.locate(location)
  if paths is not None:
    key = storage.files_key(paths, "mnist")

    def build():
      hashes, arrays = {}, {}
      parsed = {}
      for role, path in paths.items():
        data = storage.read_bytes(path)
        hashes[role] = storage.sha256_hex(data)
        parsed[role] = parse_idx(path, data, images=role.endswith("images"))
      for split in ("train", "test"):
        arrays[split] = (parsed[f"{split}_images"], parsed[f"{split}_labels"])
      meta = {"source": str(paths["train_images"].parent), "sha256": hashes,
              "verified": storage.verified(hashes, MNIST)}
      return _build(arrays, meta)
  elif location.hub_enabled():
    arrays = _hub_arrays(location)
    key = storage.content_key(arrays[split][i].tobytes()
                              for split in ("train", "test") for i in (0, 1))

    def build():
      return _build(arrays, {"source": f"hub:{_HUB_MNIST}", "sha256": {}, "verified": None})
  else:
    raise DataError(MNIST.missing_message(location))
  dsd, meta = storage.cached_dataset_dict(location, "mnist", key, build)
  out = {}
  for split in ("train", "test"):
    table = dsd[split].with_format("arrow")[:]
    images = pc.list_flatten(table.column("pixels")).to_numpy(zero_copy_only=False)
    out[split] = (np.ascontiguousarray(images.astype(np.uint8).reshape(-1, PIXELS)),
                  table.column("label").to_numpy().astype(np.int32))
  return out, meta


@functools.lru_cache(maxsize=2)
def _cached_mnist(location: storage.Location, ident: str):
  del ident
  return load_mnist(location)


def permutation(seed: int) -> np.ndarray:
  """The pmnist pixel order: ``default_rng(seed).permutation(784)`` (int32)."""
  return np.random.default_rng(seed).permutation(PIXELS).astype(np.int32)


def _correct(outputs, batch):
  return metrics.correct_count(outputs, batch["labels"], batch["mask"])


ACCURACY = metrics.Metric("accuracy", "fraction of correctly classified sequences",
                          True, _correct, metrics.mean)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PixelMNISTTask(base.Task):
  """Sequence classification of MNIST pixels (see the module docstring).

  Batches: ``"inputs"`` float32 ``(B, 784, 1)``, ``"labels"`` int32 ``(B,)``,
  ``"mask"`` float32 ``(B,)`` (0 on padding rows); ``outputs`` are logits
  ``(B, 10)`` (e.g. the model's last step).

  Attributes:
    valid_size: images held out from train as ``valid``.
    split_seed: seed of the hold-out.
    normalize: TCN's mean/std normalisation (else [0, 1]).
  """

  family: ClassVar[str] = "pixel"
  splits: ClassVar[tuple[str, ...]] = ("train", "valid", "test")
  metric: ClassVar[metrics.Metric] = ACCURACY
  permuted: ClassVar[bool] = False
  source: ClassVar[storage.Source] = MNIST

  valid_size: int = 5000
  split_seed: int = 0
  normalize: bool = True

  def _mnist(self):
    return _cached_mnist(self.location, storage.memo_key(self.source, self.location))

  def order(self) -> Optional[np.ndarray]:
    """The pixel order applied to every image (``None`` for raster order)."""
    return None

  def holdout(self) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices into the 60,000 training images: ``(train, valid)``."""
    if not 0 < self.valid_size < 60000:
      raise DataError(f"{self.name}: valid_size must be in 1..59999, got {self.valid_size}.")
    perm = np.random.default_rng(self.split_seed).permutation(60000)
    return np.sort(perm[self.valid_size:]), np.sort(perm[:self.valid_size])

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels uint8 (N, 784) in sequence order, labels int32 (N,))``."""
    self.check_split(split)
    return _split_arrays(self, split, storage.memo_key(self.source, self.location))

  def batches(self, split: str, batch_size: int, *, shuffle: Optional[bool] = None,
              seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
              pad_remainder: bool = False) -> Iterator[base.Batch]:
    """Batches of pixel sequences.

    Args:
      split: ``"train"``, ``"valid"`` or ``"test"``.
      batch_size: images per batch.
      shuffle: default True for ``"train"`` only.
      seed: shuffling seed; ``epoch`` is mixed into it.
      epoch: epoch number.
      drop_remainder: skip a last incomplete batch.
      pad_remainder: fill a last incomplete batch with masked rows.
    """
    shuffle = self._batch_defaults(split, shuffle)
    pixels, labels = self.arrays(split)
    scale = np.float32(1.0 / 255.0)
    for idx, real in batching.index_batches(len(labels), batch_size, shuffle=shuffle,
                                            seed=seed, epoch=epoch,
                                            drop_remainder=drop_remainder,
                                            pad_remainder=pad_remainder):
      x = pixels[idx].astype(np.float32) * scale
      if self.normalize:
        x = (x - np.float32(MEAN)) / np.float32(STD)
      yield {"inputs": x[:, :, None], "labels": labels[idx],
             "mask": batching.row_mask(len(idx), real)}

  def loss(self, outputs, batch):
    """Mean softmax cross-entropy over real examples."""
    total, count = metrics.token_nll(outputs, batch["labels"], batch["mask"])
    return total / count

  def stats(self) -> dict:
    _, meta = self._mnist()
    splits = {}
    for split in self.splits:
      _, labels = self.arrays(split)
      splits[split] = {
          "sequences": int(labels.shape[0]),
          "length": PIXELS,
          "classes": CLASSES,
          "label_counts": np.bincount(labels, minlength=CLASSES).tolist(),
      }
    out = {
        "name": self.name,
        "family": self.family,
        "metric": self.metric.name,
        "source": meta.get("source"),
        "verified": meta.get("verified"),
        "valid_holdout": {"size": self.valid_size, "seed": self.split_seed,
                          "rule": "first valid_size of default_rng(seed).permutation(60000)"},
        "normalize": self.normalize,
        "splits": splits,
    }
    order = self.order()
    if order is not None:
      out["permutation"] = {"seed": getattr(self, "permutation_seed"),
                            "sha256": hashlib.sha256(order.tobytes()).hexdigest()}
    return out


@functools.lru_cache(maxsize=8)
def _split_arrays(task: PixelMNISTTask, split: str, ident: str
                  ) -> tuple[np.ndarray, np.ndarray]:
  # Memoised per task options and data identity, so the permuted copy is made
  # once per process.
  del ident
  (data, _) = task._mnist()  # pylint: disable=protected-access
  if split == "test":
    pixels, labels = data["test"]
  else:
    n_train = len(data["train"][1])
    if n_train != 60000:  # unverified files are read too; the holdout indexes 60,000
      raise DataError(f"{task.name}: the MNIST training files hold {n_train:,} images, "
                      f"not 60,000; see `seqbench data list` for where they were read from.")
    train_idx, valid_idx = task.holdout()
    idx = train_idx if split == "train" else valid_idx
    pixels, labels = data["train"][0][idx], data["train"][1][idx]
  order = task.order()
  if order is not None:
    pixels = pixels[:, order]
  return np.ascontiguousarray(pixels), labels


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequentialMNIST(PixelMNISTTask):
  name: ClassVar[str] = "smnist"
  summary: ClassVar[str] = "sequential MNIST, 784 pixels in raster order, test accuracy"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PermutedMNIST(PixelMNISTTask):
  """Permuted MNIST; ``permutation_seed`` fixes the pixel order."""

  name: ClassVar[str] = "pmnist"
  summary: ClassVar[str] = "permuted MNIST, one fixed seeded pixel permutation, test accuracy"
  permuted: ClassVar[bool] = True

  permutation_seed: int = 0

  def order(self) -> np.ndarray:
    return permutation(self.permutation_seed)
