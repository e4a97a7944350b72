"""The task registry: CLI name -> task class (data, not a chain of ifs).

``get_task("adding", length=1000)`` builds a task; ``TASKS`` lists them in the
order of the issue's table.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Optional

from seqbench.tasks import base
from seqbench.tasks import language
from seqbench.tasks import music
from seqbench.tasks import pixel
from seqbench.tasks import storage
from seqbench.tasks import synthetic
from seqbench.tasks.storage import DataError

TASKS: Mapping[str, type[base.Task]] = {
    cls.name: cls for cls in (
        language.WikiText2,
        language.PTBWord,
        language.PTBChar,
        music.JSBChorales,
        music.Nottingham,
        pixel.SequentialMNIST,
        pixel.PermutedMNIST,
        synthetic.AddingProblem,
        synthetic.CopyMemory,
    )
}


def task_names() -> list[str]:
  """All task names, in table order."""
  return list(TASKS)


def task_class(name: str) -> type[base.Task]:
  """The class registered under ``name``.

  Raises:
    DataError: unknown name (the message suggests the closest ones).
  """
  try:
    return TASKS[name]
  except KeyError:
    close = difflib.get_close_matches(name, TASKS, n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise DataError(
        f"unknown task {name!r}; known tasks: {', '.join(TASKS)}.{hint}") from None


def get_task(name: str, *, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
             hub: Optional[bool] = None, **options: Any) -> base.Task:
  """Build a task by name.

  Args:
    name: a registered name (see :data:`TASKS`).
    data_dir: data root (default ``SEQBENCH_DATA``, else the user cache).
    cache_dir: Arrow cache root (default ``SEQBENCH_CACHE``, else the user cache).
    hub: allow fetching missing data from the Hugging Face hub (default:
      ``SEQBENCH_HUB``).
    **options: task options (``length=...``, ``seed=...``; see each class).

  Raises:
    DataError: unknown name or option.
  """
  cls = task_class(name)
  unknown = sorted(set(options) - set(cls.option_names()))
  if unknown:
    known = ", ".join(cls.option_names()) or "none"
    raise DataError(f"{name}: no option {unknown[0]!r}; options: {known}.")
  location = storage.Location(data_dir=None if data_dir is None else str(data_dir),
                              cache_dir=None if cache_dir is None else str(cache_dir),
                              hub=hub)
  return cls(location=location, **options)


def source_of(name: str) -> Optional[storage.Source]:
  """The raw-data source of a task, or None for generated tasks."""
  return task_class(name).source
