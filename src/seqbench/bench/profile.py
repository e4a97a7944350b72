"""Where a compiled step's time goes: device busy time vs wall time, top kernels.

A benchmark row says how long a step takes; issue 6 also asks *why* a step is
as slow as it is (e.g. "per-step time vs kernel-launch latency"). This module
runs a compiled function ``n`` times under ``jax.profiler.trace``, reads the
Perfetto trace JAX writes, and reduces it to a few numbers per step:

* ``wall_ms``: host time per call (``block_until_ready`` after each, as
  :func:`seqbench.bench.time_compiled` measures it), taken under the profiler,
  so a little above an untraced timing: compare shares, not the ms, with
  benchmark rows;
* ``busy_ms``: the union of the device's kernel intervals per call (kernels
  that overlap on several streams count once);
* ``idle_ms = wall_ms - busy_ms``: time the device waited, for launches, host
  work or synchronisation. A step whose ``idle`` share is large is bound by
  latency, not arithmetic, and a faster kernel will not help it;
* ``kernels``: kernel launches per call, and the top kernels by total time.

On a GPU the kernels are the events of the device process's stream lines
(``/device:GPU:0``, threads named ``Stream ...``). The CPU backend has no
device lines; there the events of XLA's own worker threads (not the Python
thread) stand in, so the same code runs, and is tested, without a GPU; they
nest there (a loop and the ops inside it), so CPU kernel counts and sums are
rough, while the busy time, a union, is not affected. Each
summary says which lines it counted (``lines``) and lists every line of the
trace with its event count, so an unexpected trace layout is visible in the
results rather than silently mis-counted.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import tempfile
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional

import jax


class ProfileSummary(NamedTuple):
  """Per-call profile of one compiled function (times in milliseconds)."""
  n: int
  wall_ms: float
  busy_ms: float
  kernel_sum_ms: float
  kernels_per_call: float
  lines: tuple
  top_kernels: tuple  # ((name, calls per step, ms per step), ...)
  all_lines: tuple    # ((process, thread, events, total ms), ...)

  @property
  def idle_ms(self) -> float:
    return max(self.wall_ms - self.busy_ms, 0.0)

  @property
  def busy_fraction(self) -> float:
    return self.busy_ms / self.wall_ms if self.wall_ms > 0 else 0.0

  def to_json(self) -> dict:
    return {**self._asdict(), "idle_ms": self.idle_ms, "busy_fraction": self.busy_fraction,
            "lines": list(self.lines),
            "top_kernels": [list(k) for k in self.top_kernels],
            "all_lines": [list(x) for x in self.all_lines]}


def union_length(intervals: Iterable[tuple]) -> float:
  """Total length covered by ``(start, end)`` intervals (overlaps counted once)."""
  total, cur_start, cur_end = 0.0, None, None
  for start, end in sorted(intervals):
    if cur_end is None or start > cur_end:
      if cur_end is not None:
        total += cur_end - cur_start
      cur_start, cur_end = start, end
    else:
      cur_end = max(cur_end, end)
  if cur_end is not None:
    total += cur_end - cur_start
  return total


def _names(events: list) -> tuple[dict, dict]:
  procs, threads = {}, {}
  for e in events:
    if e.get("ph") != "M":
      continue
    if e.get("name") == "process_name":
      procs[e["pid"]] = e["args"]["name"]
    elif e.get("name") == "thread_name":
      threads[(e["pid"], e["tid"])] = e["args"]["name"]
  return procs, threads


def kernel_lines(events: list) -> list:
  """The ``(pid, tid)`` lines whose complete events are device kernels.

  GPU/TPU: the device processes' stream lines. CPU: XLA's worker threads of
  the host process (everything but the Python thread).
  """
  procs, threads = _names(events)
  lines = {(e["pid"], e.get("tid")) for e in events if e.get("ph") == "X"}
  device = [ln for ln in lines if "/device:" in procs.get(ln[0], "")]
  streams = [ln for ln in device if threads.get(ln, "").lower().startswith("stream")]
  if streams:
    return sorted(streams)
  if device:
    return sorted(device)
  return sorted(ln for ln in lines
                if threads.get(ln, "").startswith("tf_XLA") and "/host:" in procs.get(ln[0], ""))


def summarize(events: list, n: int, wall_ms: float, top: int = 12) -> ProfileSummary:
  """Reduces a trace's events (``traceEvents``, microseconds) to a per-call summary."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  procs, threads = _names(events)
  chosen = set(kernel_lines(events))
  per_line = collections.defaultdict(lambda: [0, 0.0])
  intervals, by_name = [], collections.defaultdict(lambda: [0, 0.0])
  for e in events:
    if e.get("ph") != "X":
      continue
    line = (e["pid"], e.get("tid"))
    dur = float(e.get("dur", 0.0))
    per_line[line][0] += 1
    per_line[line][1] += dur
    if line in chosen:
      ts = float(e["ts"])
      intervals.append((ts, ts + dur))
      by_name[e.get("name", "?")][0] += 1
      by_name[e.get("name", "?")][1] += dur
  ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
  label = lambda ln: f"{procs.get(ln[0], ln[0])} / {threads.get(ln, ln[1])}"
  return ProfileSummary(
      n=n, wall_ms=wall_ms,
      busy_ms=union_length(intervals) / 1e3 / n,
      kernel_sum_ms=sum(d for _, d in by_name.values()) / 1e3 / n,
      kernels_per_call=len(intervals) / n,
      lines=tuple(label(ln) for ln in sorted(chosen)),
      top_kernels=tuple((name, c / n, d / 1e3 / n) for name, (c, d) in ranked),
      all_lines=tuple((procs.get(p, str(p)), threads.get((p, t), str(t)), c, d / 1e3)
                      for (p, t), (c, d) in sorted(per_line.items(), key=lambda kv: -kv[1][1])))


def _read_trace(log_dir: str) -> list:
  paths = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
  if not paths:
    raise RuntimeError(f"jax.profiler wrote no perfetto_trace.json.gz under {log_dir}")
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def profile_calls(call: Callable[[], Any], n: int = 10, warmup: int = 2,
                  keep_trace: Optional[str] = None) -> ProfileSummary:
  """Profiles ``n`` calls of ``call()`` (already compiled; it may thread its own state).

  Args:
    call: runs one step and returns what to block on.
    n: profiled calls, at least 1.
    warmup: untraced calls first (compilation belongs there, not in the trace).
    keep_trace: if given, the trace directory is written there (and kept);
      otherwise to a temporary directory that is removed.
  """
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  for _ in range(warmup):
    jax.block_until_ready(call())
  with tempfile.TemporaryDirectory() as tmp:
    log_dir = keep_trace or tmp
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(n):
        jax.block_until_ready(call())
      wall_ms = (time.perf_counter() - start) * 1e3 / n
    events = _read_trace(log_dir)
  return summarize(events, n, wall_ms)


def profile_compiled(fn: Callable, *args: Any, n: int = 10, warmup: int = 2,
                     keep_trace: Optional[str] = None) -> ProfileSummary:
  """Profiles ``n`` calls of ``jax.jit(fn)(*args)``, compiled and warmed up first."""
  args = jax.block_until_ready(jax.device_put(args))
  compiled = jax.jit(fn).lower(*args).compile()
  return profile_calls(lambda: compiled(*args), n=n, warmup=warmup, keep_trace=keep_trace)
