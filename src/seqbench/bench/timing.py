"""How one benchmark row gets its numbers.

Method (JAX docs "Benchmarking JAX code" and "Ahead-of-time lowering"):

1. inputs are put on the device and synchronised *before* anything is timed,
   so host->device transfer is outside the timed region;
2. tracing+lowering and compilation are timed apart (``jit(f).lower`` then
   ``.compile``): compile time is reported, never mixed into run time;
3. the compiled executable is called ``warmup`` times untimed, then ``n``
   times, each call followed by ``block_until_ready`` (JAX dispatch is
   asynchronous);
4. the function is traced exactly once: a trace counter guards against silent
   re-tracing (calling the AOT executable cannot retrace, but a benchmark that
   re-traces its Python function in a loop would time compilation);
5. FLOPs come from ``cost_analysis()`` and memory from ``memory_analysis()``
   when the backend reports them (best effort: ``None`` otherwise).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Optional

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Result of :func:`time_compiled` (times in milliseconds / seconds)."""
  median_ms: float
  min_ms: float
  n: int
  lower_s: float
  compile_s: float
  traces: int
  flops: Optional[float]
  temp_bytes: Optional[int]
  times_ms: tuple

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


class RetraceError(RuntimeError):
  """The benchmarked function was traced more than once."""


def _flops(compiled) -> Optional[float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # not every backend implements it
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def _temp_bytes(compiled) -> Optional[int]:
  try:
    mem = compiled.memory_analysis()
  except Exception:
    return None
  return None if mem is None else int(mem.temp_size_in_bytes)


def guarded_jit(fn: Callable, max_traces: int = 1, **jit_kwargs) -> Callable:
  """``jax.jit(fn)`` that raises :class:`RetraceError` past ``max_traces`` traces.

  For benchmarks that call a jitted function from a Python loop (streaming
  one-step latency): a carry whose dtype or weak type changes after the first
  step silently re-compiles inside the timed loop; this makes it an error.
  The number of traces so far is in ``.traces``.
  """
  def counted(*args, **kwargs):
    wrapper.traces += 1
    if wrapper.traces > max_traces:
      raise RetraceError(
          f"{getattr(fn, '__name__', 'function')} was traced {wrapper.traces} times "
          f"(at most {max_traces} allowed): its input shapes, dtypes or static "
          f"arguments changed between calls")
    return fn(*args, **kwargs)

  wrapper = jax.jit(counted, **jit_kwargs)
  wrapper.traces = 0
  return wrapper


def time_compiled(fn: Callable, *args: Any, n: int = 10, warmup: int = 2,
                  clock: Callable[[], float] = time.perf_counter,
                  static_argnums=()) -> Timing:
  """Time ``fn(*args)`` as described in the module docstring.

  Args:
    fn: a function of arrays (pytrees), jittable.
    *args: its arguments; moved to the default device before timing.
    n: timed calls (the median and min are reported), at least 1.
    warmup: untimed calls after compilation.
    clock: seconds clock (injectable so tests can check what is timed).
    static_argnums: passed to ``jax.jit``.

  Raises:
    RetraceError: if ``fn`` was traced more than once.
  """
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  args = jax.block_until_ready(jax.device_put(args))
  jitted = guarded_jit(fn, static_argnums=static_argnums)
  t0 = clock()
  lowered = jitted.lower(*args)
  t1 = clock()
  compiled = lowered.compile()
  t2 = clock()
  dynamic = [a for i, a in enumerate(args) if i not in set(static_argnums)]
  for _ in range(warmup):
    jax.block_until_ready(compiled(*dynamic))
  times = []
  for _ in range(n):
    start = clock()
    jax.block_until_ready(compiled(*dynamic))
    times.append((clock() - start) * 1e3)
  return Timing(median_ms=statistics.median(times), min_ms=min(times), n=n,
                lower_s=t1 - t0, compile_s=t2 - t1, traces=jitted.traces,
                flops=_flops(compiled), temp_bytes=_temp_bytes(compiled),
                times_ms=tuple(times))
