"""Provenance of every result: code version, packages, device, precision.

Shared by training runs and benchmarks (both write result rows), so it sits
below both: :func:`run_metadata` for what a row carries, :func:`write_atomic`
for how result files are written (a reader never sees half a file).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import tempfile
from typing import Optional

import jax

from seqbench import compile_cache

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "datasets", "torch")


def _version(name: str) -> Optional[str]:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(*args: str) -> Optional[str]:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
  """Commit SHA and whether the work tree had uncommitted changes.

  A copy of the tree on a remote benchmark machine cannot be trusted to ask
  git (it may have no ``.git``, or a stale one: an H200 copy of commit
  ``f42cf1e`` reported ``ee73409``, dirty); the launcher then passes
  ``SEQBENCH_GIT_SHA`` (and ``SEQBENCH_GIT_DIRTY=0`` or ``1``) from the
  checkout it copied, and that wins over what git says. Without
  ``SEQBENCH_GIT_DIRTY`` the dirty flag is unknown (None), not "clean".
  """
  if os.environ.get("SEQBENCH_GIT_SHA"):
    dirty = os.environ.get("SEQBENCH_GIT_DIRTY")
    return {"git_sha": os.environ["SEQBENCH_GIT_SHA"],
            "git_dirty": None if dirty is None else dirty.strip() == "1"}
  sha = _git("rev-parse", "HEAD")
  status = _git("status", "--porcelain", "--untracked-files=all")
  return {"git_sha": sha, "git_dirty": None if status is None else dirty_from_status(status)}


#: Untracked files with these endings are code the commit does not contain.
CODE_SUFFIXES = (".py", ".sh", ".cfg", ".toml", "Makefile")


def dirty_from_status(porcelain: str) -> bool:
  """Whether ``git status --porcelain --untracked-files=all`` shows code outside the commit.

  A changed tracked file counts, except under :data:`RESULTS_DIR` (a
  sweep appending to a committed ``results.jsonl`` or log changes no code),
  and so does an untracked code file (a new benchmark script that produced
  the results). Untracked results, logs and plots do not: a sweep writing
  into a new folder is not a dirty tree.
  """
  for line in porcelain.splitlines():
    if not line.strip():
      continue
    # "XY path", or "XY old -> new" for a rename: the path now in the tree.
    path = line[3:].split(" -> ")[-1].strip().strip('"')
    if not line.startswith("??"):
      if not path.startswith(RESULTS_DIR):
        return True
    elif path.endswith(CODE_SUFFIXES):
      return True
  return False


#: Committed results and their logs: tracked, and changed by the runs themselves.
RESULTS_DIR = "benchmarks/results/"


def run_metadata(dtype: str = "float32") -> dict:
  """Metadata for one result row (device kind, versions, precision, git)."""
  dev = jax.devices()[0]
  return {
      **git_state(),
      "versions": {name: _version(name) for name in _PACKAGES},
      "python": platform.python_version(),
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "host": platform.node(),
      "host_cpu": platform.processor() or platform.machine(),
      "dtype": dtype,
      "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      # Whether GPU compile times here reused an earlier process's autotuning
      # (entries when this was taken: a bench run's start, a training run's end).
      "xla_autotune_cache": compile_cache.state(os.environ.get("XLA_FLAGS", "")),
  }


@functools.lru_cache(maxsize=1)
def _umask() -> int:
  # Reading the umask means setting it: done once, not while other threads write files.
  mask = os.umask(0)
  os.umask(mask)
  return mask


class OutputDirError(ValueError):
  """An output folder that cannot be created or written to; the message is one line."""


def make_output_dir(folder: str) -> None:
  """Create ``folder`` if needed and check it is writable, before any work starts.

  The CLIs call this first, so a bad ``--out`` is one clear line instead of an
  OSError traceback after minutes of work, and nothing is half-written.

  Raises:
    OutputDirError: it cannot be created, or is not writable.
  """
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise OutputDirError(f"cannot create output directory {folder!r}: "
                         f"{e.strerror or e}") from None
  if not os.access(folder, os.W_OK | os.X_OK):
    raise OutputDirError(f"output directory {folder!r} is not writable")


def write_atomic(path: str, data: str | bytes) -> None:
  """Write ``data`` to ``path`` via a temporary file and ``os.replace``.

  The file is fsynced before the rename (after a crash the path holds the old
  or the new contents, never an empty file) and gets the mode a plain
  ``open`` would give it (``mkstemp`` makes it private to its owner).
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
