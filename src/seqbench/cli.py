"""The ``seqbench`` command: ``seqbench bench ...``, ``seqbench data ...``.

Argument parsing and exit codes only; each subcommand's work lives in its
module.
"""

from __future__ import annotations

import sys

USAGE = """usage: seqbench COMMAND [ARGS]

commands:
  bench    throughput of recurrent, truncated and conv models vs baselines
  data     list datasets, print their statistics
"""


def _bench(argv):
  from seqbench.bench.run import main  # pylint: disable=g-import-not-at-top
  return main(argv)


def _data(argv):
  from seqbench.tasks.cli import data_main  # pylint: disable=g-import-not-at-top
  return data_main(argv)


COMMANDS = {"bench": _bench, "data": _data}


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
  return command(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
