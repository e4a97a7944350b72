"""seqbench: when can a feed-forward model replace a recurrent one?

``import seqbench as sb`` gives the modules as documented in the README:
``sb.cells``, ``sb.unroll``, ``sb.stability``, ``sb.convnets``,
``sb.flax_interop``.
"""

from seqbench import cells
from seqbench import convnets
from seqbench import flax_interop
from seqbench import stability
from seqbench import unroll
from seqbench.cells import GRU, LRU, LSTM, RNN, Cell, Stacked

__version__ = "0.1.0"

__all__ = ["cells", "unroll", "stability", "convnets", "flax_interop",
           "RNN", "LSTM", "GRU", "LRU", "Stacked", "Cell", "__version__"]
