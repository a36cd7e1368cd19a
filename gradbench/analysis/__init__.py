"""Pure pandas on run tables: regimes, agreement with theory, comparison of runs (no JAX)."""
