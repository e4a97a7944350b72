"""Host-side batching: numpy arrays in, dicts of device-ready numpy arrays out.

Every iterator yields ``dict[str, np.ndarray]`` with C-contiguous arrays of
fixed dtypes (int32 ids, float32 values and masks), batch on axis 0 and time on
axis 1 (the ``(..., T, D)`` convention of :mod:`seqbench.unroll`). Masks are
float32 0/1 and mark exactly the real (scored) positions, so a padded batch
gives the same metric as an unpadded one.

Language modelling (pytorch/examples ``word_language_model``):

* :func:`batchify` cuts one token stream of length N into B contiguous rows of
  ``n = N // B`` tokens (row b is ``stream[b n:(b+1) n]``); the ``N mod B``
  trailing tokens are dropped, as in pytorch/examples.
* :func:`bptt_windows` walks the rows in windows of L steps: inputs
  ``rows[:, i:i+l]``, targets ``rows[:, i+1:i+1+l]``, ``l = min(L, n-1-i)``,
  ``i = 0, L, 2L, ...``. The windows are consecutive, so a recurrent model
  carries its state from one window to the next (truncated BPTT); every row
  position ``1..n-1`` is a target exactly once.
* :func:`context_windows` is the evaluation view of a model with a fixed
  context of k inputs (the k-step truncated model of Miller & Hardt, 2019;
  TCN's ``validseqlen``): each window holds up to ``k-1`` earlier inputs as
  unscored history before ``L`` scored positions, so every target is scored
  exactly once and (except near the start of a row, where less history
  exists) the prediction for it can see the k previous tokens. Windows are
  independent: no state is carried.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

Batch = dict


def _positive(name: str, value: int) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def batchify(stream: np.ndarray, batch_size: int) -> np.ndarray:
  """Cut a 1-D token stream into ``(batch_size, len(stream) // batch_size)``.

  Args:
    stream: 1-D array of token ids.
    batch_size: number of rows B.

  Returns:
    int32 array whose row b is ``stream[b*n:(b+1)*n]`` with ``n = N // B``.

  Raises:
    ValueError: the stream has fewer than ``2 * B`` tokens (no target left).
  """
  batch_size = _positive("batch_size", batch_size)
  stream = np.asarray(stream)
  n = stream.shape[0] // batch_size
  if n < 2:
    raise ValueError(
        f"a stream of {stream.shape[0]} tokens is too short for batch_size "
        f"{batch_size} (each row needs at least 2 tokens)")
  return np.ascontiguousarray(stream[:n * batch_size].reshape(batch_size, n),
                              dtype=np.int32)


def _window(rows: np.ndarray, a: int, e: int, scored_from: int, width: int,
            pad: bool) -> Batch:
  l = e - a
  size = width if pad else l
  inputs = np.zeros((rows.shape[0], size), np.int32)
  targets = np.zeros((rows.shape[0], size), np.int32)
  mask = np.zeros((rows.shape[0], size), np.float32)
  inputs[:, :l] = rows[:, a:e]
  targets[:, :l] = rows[:, a + 1:e + 1]
  mask[:, scored_from - a:l] = 1.0
  return {"inputs": inputs, "targets": targets, "mask": mask}


def bptt_windows(rows: np.ndarray, length: int, *, pad: bool = False) -> Iterator[Batch]:
  """Consecutive truncated-BPTT windows over batchified rows.

  Args:
    rows: ``(B, n)`` from :func:`batchify`.
    length: window length L (pytorch/examples ``--bptt``).
    pad: pad the last, shorter window to L with ``mask = 0`` so every window
      has one shape (one ``jit`` compilation).

  Yields:
    ``{"inputs", "targets"}`` int32 ``(B, l)`` and ``"mask"`` float32
    ``(B, l)``, in order; carry the model state across them.
  """
  length = _positive("length", length)
  n = rows.shape[1]
  for i in range(0, n - 1, length):
    e = min(i + length, n - 1)
    yield _window(rows, i, e, i, length, pad)


def context_windows(rows: np.ndarray, context: int, length: int, *,
                    pad: bool = False) -> Iterator[Batch]:
  """Windows that score every target once with a fixed context of k inputs.

  Window j scores the targets of input positions ``s = jL .. min(s+L, n-1)-1``
  and starts ``k-1`` positions earlier (clipped at 0), with ``mask = 0`` on
  that history. A model run from its zero state on the window therefore sees,
  for each scored target, at least ``min(k, s+1)`` inputs; a k-truncated model
  (``seqbench.unroll.truncated(cell, k)``) sees exactly its k.

  Args:
    rows: ``(B, n)`` from :func:`batchify`.
    context: k, the number of inputs (current one included) each scored
      prediction may depend on.
    length: L, scored positions per window.
    pad: pad short windows (the first ones and the last) at the end to
      ``k - 1 + L`` with ``mask = 0``.

  Yields:
    dicts like :func:`bptt_windows`, each window independent (reset state).
  """
  context = _positive("context", context)
  length = _positive("length", length)
  n = rows.shape[1]
  history = context - 1
  for s in range(0, n - 1, length):
    e = min(s + length, n - 1)
    yield _window(rows, max(0, s - history), e, s, history + length, pad)


def num_windows(n: int, length: int) -> int:
  """Number of windows :func:`bptt_windows` yields for rows of length n."""
  return -(-(n - 1) // length)


def index_batches(num: int, batch_size: int, *, shuffle: bool, seed: int = 0,
                  epoch: int = 0, drop_remainder: bool = False,
                  pad_remainder: bool = False) -> Iterator[tuple[np.ndarray, int]]:
  """Example indices per batch.

  The order is a permutation drawn from ``SeedSequence([seed, epoch])``, so a
  run is reproducible and each epoch differs.

  Args:
    num: number of examples.
    batch_size: examples per batch.
    shuffle: permute the examples (else keep file order).
    seed: shuffling seed.
    epoch: epoch number, mixed into the seed.
    drop_remainder: skip a last, incomplete batch.
    pad_remainder: fill a last, incomplete batch up to ``batch_size`` by
      repeating its first index; the caller masks rows ``>= real``.

  Yields:
    ``(indices, real)``: ``indices`` has ``batch_size`` entries except for an
    unpadded last batch; the first ``real`` of them are real examples.
  """
  batch_size = _positive("batch_size", batch_size)
  if shuffle:
    order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(num)
  else:
    order = np.arange(num)
  for start in range(0, num, batch_size):
    idx = order[start:start + batch_size]
    real = idx.shape[0]
    if real < batch_size:
      if drop_remainder:
        return
      if pad_remainder:
        idx = np.concatenate([idx, np.full(batch_size - real, idx[0], idx.dtype)])
    yield idx, real


def row_mask(size: int, real: int) -> np.ndarray:
  """float32 ``(size,)`` with ones on the first ``real`` entries."""
  mask = np.zeros((size,), np.float32)
  mask[:real] = 1.0
  return mask


def pad_sequences(seqs: Sequence[np.ndarray], *, pad_to: Optional[int] = None,
                  length_multiple: int = 1, batch_size: Optional[int] = None,
                  dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """Stack variable-length ``(T_i, ...)`` arrays into a padded batch.

  Args:
    seqs: the sequences (time on axis 0).
    pad_to: fixed padded length (must be >= every T_i); ``None`` pads to the
      longest, rounded up to a multiple of ``length_multiple`` (fewer distinct
      shapes, fewer ``jit`` compilations).
    length_multiple: see ``pad_to``.
    batch_size: pad the batch axis with empty (all-masked) rows up to this.
    dtype: dtype of the stacked values.

  Returns:
    ``(values, mask)``: ``(B, T, ...)`` values (zeros past each end) and
    float32 ``(B, T)`` mask, 1 exactly on real steps.
  """
  lengths = [s.shape[0] for s in seqs]
  longest = max(lengths) if lengths else 0
  if pad_to is None:
    m = _positive("length_multiple", length_multiple)
    pad_to = -(-longest // m) * m
  elif pad_to < longest:
    raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({longest})")
  rows = max(len(seqs), batch_size or 0)
  tail = seqs[0].shape[1:] if seqs else ()
  values = np.zeros((rows, pad_to) + tuple(tail), dtype)
  mask = np.zeros((rows, pad_to), np.float32)
  for b, (s, t) in enumerate(zip(seqs, lengths)):
    values[b, :t] = s
    mask[b, :t] = 1.0
  return values, mask
