import sys

from seqbench.cli import main

sys.exit(main())
