r"""Losses and metrics on model outputs, in ``jax.numpy`` (jit-able).

Every statistic returns a pair ``(total, count)`` of scalars rather than a
mean, so that evaluation over many batches is exact: the published numbers are
means over *all* scored units of a split (tokens, frames, examples), not means
of per-batch means. :class:`Metric` bundles a statistic with the final
transformation (``exp`` for perplexity, ``/ ln 2`` for bits per character).

Masks are float arrays of 0/1 broadcastable to the unit axes (they mark real
tokens/frames/examples; padding has weight 0). Inputs are upcast to at least
float32 before any ``log``/``exp`` so that bf16 outputs still give accurate
metrics.

Definitions (``n`` runs over scored units, ``m_n`` is the mask):

* token negative log-likelihood, for word/char LMs and copy memory:
  :math:`\mathrm{NLL} = \sum_n m_n\,(\operatorname{logsumexp}(z_n) - z_{n,y_n})`;
  word perplexity :math:`= \exp(\mathrm{NLL}/\sum_n m_n)` (pytorch/examples
  ``word_language_model``); bits per character
  :math:`= \mathrm{NLL}/(\ln 2\,\sum_n m_n)`;
* frame NLL, for polyphonic music (Boulanger-Lewandowski et al., 2012; Bai et
  al., 2018, ``poly_music``): each frame is 88 independent Bernoulli variables,
  :math:`\ell_n = -\sum_{k=1}^{88} [v_{n,k}\log\sigma(z_{n,k}) +
  (1-v_{n,k})\log(1-\sigma(z_{n,k}))]`, averaged over real frames;
* accuracy :math:`= \sum_n m_n [\arg\max z_n = y_n] / \sum_n m_n`;
* mean squared error :math:`= \sum_n m_n (\hat y_n - y_n)^2 / \sum_n m_n`.

References:
  Bai, Kolter & Koltun (2018), "An Empirical Evaluation of Generic Convolutional
  and Recurrent Networks for Sequence Modeling", arXiv:1803.01271.
  Boulanger-Lewandowski, Bengio & Vincent (2012), ICML.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array
Stat = Tuple[Array, Array]
LN2 = math.log(2.0)


def _float(x: Array) -> Array:
  """Upcast to at least float32 (keeps float64 when x64 is enabled)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
    return x.astype(jnp.float32)
  return x


def _weights(mask: Optional[Array], shape, dtype) -> Array:
  if mask is None:
    return jnp.ones(shape, dtype)
  return jnp.broadcast_to(jnp.asarray(mask).astype(dtype), shape)


def token_nll(logits: Array, targets: Array, mask: Optional[Array] = None) -> Stat:
  """Summed softmax cross-entropy of integer targets, and the count.

  Args:
    logits: ``(..., V)`` unnormalised scores.
    targets: ``(...)`` integer class ids in ``[0, V)``.
    mask: ``(...)`` weights (1 = scored, 0 = padding); ``None`` scores all.

  Returns:
    ``(sum_n m_n * nll_n, sum_n m_n)`` in nats.
  """
  z = _float(logits)
  targets = jnp.asarray(targets).astype(jnp.int32)
  picked = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  nll = jax.nn.logsumexp(z, axis=-1) - picked
  w = _weights(mask, nll.shape, nll.dtype)
  return jnp.sum(nll * w), jnp.sum(w)


def frame_nll(logits: Array, targets: Array, mask: Optional[Array] = None) -> Stat:
  r"""Bernoulli NLL summed over the keys of each frame, summed over frames.

  Uses the stable form :math:`\mathrm{softplus}(z) - v z` of
  :math:`-[v\log\sigma(z) + (1-v)\log(1-\sigma(z))]`.

  Args:
    logits: ``(..., T, K)`` pre-sigmoid scores (K = 88 keys).
    targets: ``(..., T, K)`` binary piano roll.
    mask: ``(..., T)`` real-frame weights.

  Returns:
    ``(sum over real frames of the per-frame NLL, number of real frames)``.
  """
  z = _float(logits)
  v = jnp.asarray(targets).astype(z.dtype)
  per_frame = jnp.sum(jax.nn.softplus(z) - v * z, axis=-1)
  w = _weights(mask, per_frame.shape, per_frame.dtype)
  return jnp.sum(per_frame * w), jnp.sum(w)


def correct_count(logits: Array, labels: Array, mask: Optional[Array] = None) -> Stat:
  """Number of examples whose arg-max class is the label, and the count."""
  hit = (jnp.argmax(logits, axis=-1) == jnp.asarray(labels)).astype(jnp.float32)
  w = _weights(mask, hit.shape, hit.dtype)
  return jnp.sum(hit * w), jnp.sum(w)


def squared_error(predictions: Array, targets: Array,
                  mask: Optional[Array] = None) -> Stat:
  """Summed squared error and the count.

  ``predictions`` may carry a trailing axis of size 1 (a regression head of
  width 1) that ``targets`` lacks.
  """
  p = _float(predictions)
  y = jnp.asarray(targets).astype(p.dtype)
  if p.ndim == y.ndim + 1 and p.shape[-1] == 1:
    p = p[..., 0]
  err = jnp.square(p - y)
  w = _weights(mask, err.shape, err.dtype)
  return jnp.sum(err * w), jnp.sum(w)


def mean(total, count):
  """``total / count`` (the plain average of a statistic)."""
  return total / count


def perplexity(total, count):
  """Word perplexity :math:`\\exp(\\mathrm{NLL}/N)` from summed NLL in nats."""
  if isinstance(total, jax.Array) or isinstance(count, jax.Array):
    return jnp.exp(total / count)
  try:
    return math.exp(total / count)
  except OverflowError:
    return math.inf


def bits_per_character(total, count):
  """Bits per character :math:`\\mathrm{NLL}/(N \\ln 2)` from summed NLL in nats."""
  return total / count / LN2


@dataclasses.dataclass(frozen=True)
class Metric:
  """A published metric: a jit-able statistic plus its final transform.

  Attributes:
    name: the metric as published (``"perplexity"``, ``"bpc"``, ...).
    unit: what is averaged, for reports.
    higher_is_better: direction for model selection.
    statistic: ``(outputs, batch) -> (total, count)``; ``batch`` is the dict
      yielded by the task's ``batches``.
    finalize: ``(total, count) -> value`` on host floats.
  """

  name: str
  unit: str
  higher_is_better: bool
  statistic: Callable[[Array, Mapping[str, Any]], Stat]
  finalize: Callable[[float, float], float]

  def __call__(self, outputs: Array, batch: Mapping[str, Any]) -> Stat:
    return self.statistic(outputs, batch)

  def reduce(self, stats: Iterable[Stat]) -> float:
    """The metric over many batches from their ``(total, count)`` pairs."""
    total = 0.0
    count = 0.0
    for t, c in stats:
      total += float(t)
      count += float(c)
    if count == 0:
      return float("nan")
    return float(self.finalize(total, count))
