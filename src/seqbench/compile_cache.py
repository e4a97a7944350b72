"""A persistent cache for XLA's GPU autotuning, on by default for ``seqbench``.

On a GPU most of a suite step's compile time is XLA autotuning its GEMM
fusions, not compiling them. Measured on one H200 (jax 0.11.2,
``benchmarks/results/nvidia-h200/compile_b9f166d``), the WaveNet train step
compiled in 7.2-8.0 s with autotuning, in 3.4 s with it switched off (but then
ran 8.8x slower), and in 2.4 s, at the same speed, once XLA's per-fusion
autotune cache held the results of an earlier process. So the ``seqbench``
command points ``--xla_gpu_per_fusion_autotune_cache_dir`` at a directory that
outlives the process: the first run of a shape pays the autotuning, later runs
reuse its choices. Compiled programs are *not* cached (JAX's own compilation
cache would make the reported compile times meaningless); every run still
compiles.

``SEQBENCH_AUTOTUNE_CACHE`` picks the directory (default
``$XDG_CACHE_HOME/seqbench/xla-autotune``, else ``~/.cache/...``); ``off``
switches it off. A ``XLA_FLAGS`` that already names a cache directory wins.
On CPU and TPU the flag does nothing.
"""

from __future__ import annotations

import os
import shlex
from typing import Mapping, MutableMapping, Optional

AUTOTUNE_FLAG = "--xla_gpu_per_fusion_autotune_cache_dir"
ENV_VAR = "SEQBENCH_AUTOTUNE_CACHE"


def default_dir(environ: Mapping[str, str]) -> str:
  """``$XDG_CACHE_HOME/seqbench/xla-autotune`` (``~/.cache`` without it)."""
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "seqbench", "xla-autotune")


def flag_dir(xla_flags: str) -> Optional[str]:
  """The autotune cache directory that ``xla_flags`` names, or None."""
  try:
    tokens = shlex.split(xla_flags or "")
  except ValueError:  # an unbalanced quote: XLA itself splits on whitespace
    tokens = (xla_flags or "").split()
  for token in tokens:
    if token.startswith(AUTOTUNE_FLAG + "="):
      return token.split("=", 1)[1]
  return None


def with_autotune_cache(environ: Mapping[str, str]) -> Optional[str]:
  """The ``XLA_FLAGS`` value that adds the autotune cache, or None to leave it.

  None when ``SEQBENCH_AUTOTUNE_CACHE=off`` or when ``XLA_FLAGS`` already names
  a cache directory (the user's choice wins).
  """
  choice = environ.get(ENV_VAR)
  if choice is not None and choice.strip().lower() == "off":
    return None
  flags = environ.get("XLA_FLAGS", "")
  if flag_dir(flags) is not None:
    return None
  path = os.path.abspath(os.path.expanduser(choice.strip())) if choice and choice.strip() \
      else default_dir(environ)
  # A path with spaces would split the flag string: XLA splits on whitespace.
  if any(c.isspace() for c in path):
    return None
  return f"{flags} {AUTOTUNE_FLAG}={path}".strip()


def enable(environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
  """Adds the autotune cache to ``environ['XLA_FLAGS']``; returns its directory.

  Must run before JAX starts its backends (XLA reads the flags once); the
  ``seqbench`` command calls it first thing.
  """
  flags = with_autotune_cache(environ)
  if flags is None:
    return flag_dir(environ.get("XLA_FLAGS", ""))
  path = flag_dir(flags)
  # XLA wants the directory to exist, and a failed cache write can fail the
  # compile: without a writable directory there is no cache.
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  if not os.access(path, os.W_OK | os.X_OK):
    return None
  environ["XLA_FLAGS"] = flags
  return path


def state(xla_flags: str) -> Optional[dict]:
  """For result rows: the cache directory and how many entries it holds now.

  ``seqbench bench`` takes it at the start of a run: a run that found entries
  there reused earlier autotuning, so its compile times are the warm ones.
  """
  path = flag_dir(xla_flags)
  if path is None:
    return None
  try:
    entries = len(os.listdir(path))
  except OSError:
    entries = 0
  return {"dir": path, "entries": entries}
