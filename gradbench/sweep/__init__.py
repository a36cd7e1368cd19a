"""Sweep files in, configurations out.

`spec` reads a sweep file (or a built-in sweep, `builtin`) into a frozen `SweepSpec` (`types`),
checking every value as it goes (`values`, and the section rules `axes` and `train_section`); `grid`
expands it into one row per configuration and groups the rows by the compiled code that runs them,
whose static specialisation is a key (`keys`).
"""
