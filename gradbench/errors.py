"""Errors that gradbench reports to users.

A `SpecError` is bad input: it names where the problem is (file and key), what was given and what is
allowed. The command line maps it to exit status 2; everything else is an internal failure (status 1).
"""

from __future__ import annotations


class SpecError(ValueError):
    """Bad user input: a sweep file, a command-line value or an output location.

    Args:
        where: the file and/or key the problem is in, e.g. ``"sweeps/x.toml: axes.depth"``.
        given: the offending value (already formatted or any object; `repr` is used).
        allowed: what would have been accepted.
    """

    def __init__(self, where: str, given: object, allowed: str):
        self.where = where
        self.given = given
        self.allowed = allowed
        shown = given if isinstance(given, str) and given.startswith("<") else repr(given)
        super().__init__(f"{where}: got {shown}; allowed: {allowed}")
