"""Test configuration: strict dtype promotion, as equinox's suite does.

Implicit float32 <-> float64 mixing is an error here, so a test fails if a
cell or executor silently changes precision. (Rank promotion stays allowed:
cells broadcast over leading batch dimensions by design.)
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
