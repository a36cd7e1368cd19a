"""Optax training of the same networks (same draws), and its tables."""
