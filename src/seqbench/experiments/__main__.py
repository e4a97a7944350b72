"""``python -m seqbench.experiments [--json]``: the named experiments."""

import sys

from seqbench.experiments import list_main

sys.exit(list_main(sys.argv[1:]))
