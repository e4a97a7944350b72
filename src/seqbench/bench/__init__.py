"""Benchmark harness: timing method, run metadata, suites and baselines."""

from seqbench.provenance import run_metadata
from seqbench.bench.timing import Timing, time_compiled

__all__ = ["Timing", "time_compiled", "run_metadata"]
