"""gradbench: where do gradients vanish or explode, measured for whole grids of networks at once."""

__version__ = "0.1.0"
