"""The ``seqbench`` command: ``seqbench bench ...``, ``seqbench data ...``.

Argument parsing and exit codes only; each subcommand's work lives in its
module.
"""

from __future__ import annotations

import sys

from seqbench import compile_cache

USAGE = """usage: seqbench COMMAND [ARGS]

commands:
  bench    throughput of recurrent, truncated and conv models vs baselines
  data     list datasets, print their statistics
  list     named experiments (one per published table row)
  train    train one named experiment
  sweep    run a grid of experiments x seeds (resumable, shardable)
  report   tables and plots from results.jsonl files
"""


def _bench(argv):
  from seqbench.bench.run import main  # pylint: disable=g-import-not-at-top
  return main(argv)


def _data(argv):
  from seqbench.tasks.cli import data_main  # pylint: disable=g-import-not-at-top
  return data_main(argv)


def _list(argv):
  from seqbench.experiments import list_main  # pylint: disable=g-import-not-at-top
  return list_main(argv)


def _train(argv):
  from seqbench.train import train_main  # pylint: disable=g-import-not-at-top
  return train_main(argv)


def _sweep(argv):
  from seqbench.sweep import sweep_main  # pylint: disable=g-import-not-at-top
  return sweep_main(argv)


def _report(argv):
  from seqbench.report import report_main  # pylint: disable=g-import-not-at-top
  return report_main(argv)


COMMANDS = {"bench": _bench, "data": _data, "list": _list, "train": _train,
            "sweep": _sweep, "report": _report}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(USAGE)
    return 0 if argv else 2
  command = COMMANDS.get(argv[0])
  if command is None:
    print(f"seqbench: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2
  # Before any JAX backend starts: XLA reads its flags once.
  compile_cache.enable()
  try:
    return command(argv[1:])
  except BrokenPipeError:  # e.g. `seqbench list | head`: the reader left
    sys.stderr.close()
    return 0


if __name__ == "__main__":
  sys.exit(main())
