"""The precision of every matrix product gradbench computes, measured or trained.

On GPU and TPU, XLA's default precision runs float32 products as bfloat16 (or TF32) passes, whose
rounding compounds over a deep stack and differs from device to device. Measuring gradients is the
point, so every product asks for full precision; on CPU this changes nothing.
"""

import jax

PRECISION = jax.lax.Precision.HIGHEST
