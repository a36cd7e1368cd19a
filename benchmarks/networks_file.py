"""The file `benchmarks.end_to_end` hands the PyTorch program: a sweep's networks, one row each.

Imports nothing, so that both sides can read it: `end_to_end` (which imports gradbench and JAX) writes
it, `torch_sweep` (which must import neither) reads it, and the harness runs where torch is absent.
The file is JSON, `{"seed": int, "columns": {name: [value per network]}}` with the columns of
`COLUMNS` (gradbench's config table, training runs merged); `STATS` names what is measured per layer.
"""

COLUMNS = ("activation", "init_family", "sigma_w2", "sigma_b2", "depth", "width", "batch")
COLUMNS += ("replicate",)
STATS = ("log10_delta", "log10_grad_w", "log10_grad_b", "log10_q")
