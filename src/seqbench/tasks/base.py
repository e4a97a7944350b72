"""The :class:`Task` interface shared by every task family.

A task is data + batching + loss + metric, and knows nothing about models:

* ``batches(split, batch_size, ...)`` yields dicts of numpy arrays (see
  :mod:`seqbench.tasks.batching` for the conventions);
* ``loss(outputs, batch)`` is the differentiable training objective, a jnp
  scalar (a mean over the batch's scored units);
* ``metric`` is the published metric (a :class:`~seqbench.tasks.metrics.Metric`);
  ``metric(outputs, batch)`` gives a jit-able ``(total, count)`` and
  ``metric.reduce`` the value over a split;
* ``stats()`` gives the split sizes as published (what ``seqbench data stats``
  prints).

Tasks are frozen dataclasses: their fields are the task's options (sequence
length, seeds, ...) and can be overridden by name (``--set length=1000``); the
``location`` field says where data lives and is not an option.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional

import jax

from seqbench.tasks import metrics as metrics_lib
from seqbench.tasks import storage
from seqbench.tasks.storage import DataError

Batch = dict
Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task(abc.ABC):
  """Base class of all tasks (see the module docstring).

  Class attributes set by each task:
    name: the CLI name (``"wikitext2"``, ...).
    family: ``"language"``, ``"music"``, ``"pixel"`` or ``"synthetic"``.
    splits: available split names, in order.
    metric: the published metric.
    summary: one line for ``seqbench data list``.
    source: the raw files it reads (``None`` for generated tasks).
  """

  name: ClassVar[str]
  family: ClassVar[str]
  splits: ClassVar[tuple[str, ...]]
  metric: ClassVar[metrics_lib.Metric]
  summary: ClassVar[str] = ""
  #: The raw files the task reads; ``None`` for generated tasks.
  source: ClassVar[Optional[storage.Source]] = None

  location: storage.Location = dataclasses.field(default_factory=storage.Location)

  def __post_init__(self):
    # Seeds go to numpy's generators, which reject negative ones with a
    # traceback only when the first batch is drawn.
    for name in self.option_names():
      value = getattr(self, name)
      if name.endswith("seed") and isinstance(value, int) and value < 0:
        raise DataError(f"{self.name}: option {name} must be >= 0, got {value}.")

  # ----------------------------------------------------------------- options

  @classmethod
  def option_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "location")

  def options(self) -> dict[str, Any]:
    """The task's option values (JSON-friendly)."""
    return {k: getattr(self, k) for k in self.option_names()}

  @classmethod
  def parse_option(cls, key: str, text: str) -> Any:
    """Parse ``text`` as the type of option ``key``.

    Raises:
      DataError: unknown option or a value of the wrong type.
    """
    names = cls.option_names()
    if key not in names:
      known = ", ".join(names) if names else "none"
      raise DataError(f"{cls.name}: no option {key!r}; options: {known}.")
    hints = typing.get_type_hints(cls)
    kind = hints[key]
    try:
      if kind is bool:
        low = text.strip().lower()
        if low not in ("1", "0", "true", "false", "yes", "no"):
          raise ValueError(text)
        return low in ("1", "true", "yes")
      if kind in (int, float, str):
        return kind(text)
    except ValueError:
      raise DataError(
          f"{cls.name}: option {key} expects {kind.__name__}, got {text!r}.") from None
    raise DataError(f"{cls.name}: option {key} cannot be set from text.")

  # ------------------------------------------------------------------ splits

  def check_split(self, split: str) -> None:
    """Raises :class:`DataError` if ``split`` is not one of ``splits``."""
    if split not in self.splits:
      raise storage.split_error(self.name, split, self.splits)

  # ---------------------------------------------------------------- abstract

  @abc.abstractmethod
  def batches(self, split: str, batch_size: int, **kwargs) -> Iterator[Batch]:
    """Yield the split's batches as dicts of numpy arrays."""

  @abc.abstractmethod
  def loss(self, outputs: Array, batch: Mapping[str, Any]) -> Array:
    """Training loss: a jnp scalar, the mean over the batch's scored units."""

  @abc.abstractmethod
  def stats(self) -> dict:
    """``{"name", "splits": {split: {...}}, ...}`` as ``data stats`` prints."""

  # ----------------------------------------------------------------- helpers

  def evaluate(self, outputs_fn: Callable[[Batch], Array], split: str,
               batch_size: int, **kwargs) -> float:
    """The metric over a whole split.

    Args:
      outputs_fn: batch -> model outputs (may be stateful, e.g. carrying an
        RNN state across consecutive LM windows).
      split: split name.
      batch_size: passed to :meth:`batches`.
      **kwargs: passed to :meth:`batches` (``shuffle`` defaults to False).

    Returns:
      The metric value, computed from summed statistics (exact, not a mean of
      batch means).
    """
    kwargs.setdefault("shuffle", False)
    return self.metric.reduce(
        self.metric(outputs_fn(b), b) for b in self.batches(split, batch_size, **kwargs))

  def _batch_defaults(self, split: str, shuffle: Optional[bool]) -> bool:
    self.check_split(split)
    return split == "train" if shuffle is None else bool(shuffle)
