"""gradbench's benchmark harness: `python -m benchmarks [--quick] [--json PATH] [--markdown PATH]`.

Shaped like jax's `benchmarks/`: every case is `prepare(params) -> closure`; the first call of the
closure is the warm-up (timed separately, it includes compilation), then the closure is timed a few
times and the median is the result. One run measures, on the same sweep:

- the dense float32 matmul ceiling (`jnp.dot`, n x n), which gradbench's efficiency is stated against;
- gradbench end to end through its public API, cold (with compilation) and warm;
- three peers written as a user would write them, computing the same per-layer statistics: a
  per-config jitted JAX loop, a PyTorch loop over `nn.Sequential`, and `torch.func.vmap` over
  stacked configs (PyTorch is an optional, benchmark-only extra; without it they are skipped);
- gradbench's compile time against depth, and its peak memory for deep nets (in a subprocess);
- what the user waits for (`benchmarks.end_to_end`, also runnable alone): every built-in sweep and
  a 10^4-config sweep as whole `gradbench run` processes, cold (empty compilation cache) and warm,
  with and without the report, against a whole PyTorch process computing the same statistics
  (`--no-end-to-end` skips it).

Modules: `suite` (settings, the run, JSON), `timing` (the prepare/closure protocol), `sweep` (the
common sweep), `gradbench_cases`, `jax_peer`, `torch_peers`, `memory` (subprocess worker and
monitor), `report` (table, ratios, targets, Markdown), `end_to_end` and `end_to_end_report` (the
whole-process table), `torch_sweep` (its PyTorch program), `torch_nets` (that program's mlp, resmlp
and rnn) and `torch_training` (its training runs: the rnn on the adding problem), `networks_file`
(what the harness hands the program).
"""
