"""Per-activation tables of the Gaussian moments as functions of q, kept for the process.

The moments E[phi^2], dE[phi^2]/dq and E[phi'^2] and the Hermite coefficients of phi(sqrt(q) z)
are analytic in q > 0. Per activation they are tabulated on first use as Chebyshev interpolants on
panels of ln q (width 1/2, 16 nodes each), each panel computed by the quadrature the first time a
q falls in it. Measured for q in [1e-12, 1e12] over the registered activations, the interpolants
are within 1e-11 (relative) of the quadrature for E[phi^2] and E[phi'^2], within 3e-10 for
dE[phi^2]/dq (sigmoid and softplus at small q, where the quadrature's own cancellation
dominates). Every distinct (sigma_w2, sigma_b2) then costs a few interpolations per step of its
fixed-point iterations.

The process cache. `_TABLES` is the theory's one cache: it maps an activation function to its
`ActivationTables` (phi, as one kernel of `gradbench.theory.kernel`, and its tables), so later
calls (reports, `gradbench verify`) reuse both the compiled kernel and every panel computed so far.
`tables_for` is its only entry: the activations a call meets for the first time share one new
kernel, so a call compiles at most once, and a later one only for activations new to the process.
Beyond `_KEPT` activations the oldest are dropped; as a panel depends on its index alone, no value
depends on what was cached before. Compiled kernels also go to JAX's persistent compilation
cache (`gradbench.engine.compilation_cache`), which other processes load instead of compiling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from gradbench import registry
from gradbench.engine import compilation_cache
from gradbench.theory.kernel import Phi, elementwise
from gradbench.theory.quadrature import SERIES, hermite_moments, length_moments

_PANEL = 0.5  # width of a panel in ln q
_CHEB = 16  # Chebyshev nodes per panel (degree 15)
_CHEB_X = np.cos(np.pi * (np.arange(_CHEB) + 0.5) / _CHEB)  # first-kind points on [-1, 1]
# Values at the points -> Chebyshev coefficients (the discrete cosine transform).
_CHEB_TRANSFORM = (2.0 / _CHEB) * np.cos(
    np.pi * np.outer(np.arange(_CHEB), np.arange(_CHEB) + 0.5) / _CHEB
)
_CHEB_TRANSFORM[0] /= 2.0
_Q_FLOOR = 1e-300  # a smaller q is looked up here: the moments are continuous at q = 0
_CHUNK = 1 << 15  # values per evaluation, to keep temporaries small


class Table:
    """Functions of q > 0 as Chebyshev interpolants on the panels [k, k + 1] * _PANEL of ln q.

    A panel is computed (by `moments`, q of shape (n,) -> values (n, functions)) the first time a q
    falls in it, and kept. A panel depends on its index alone, so no value depends on what was
    asked before.
    """

    def __init__(self, moments: Callable[[np.ndarray], np.ndarray], functions: int):
        self._moments = moments
        self._first = 0  # panel index of row 0
        self._coef = np.zeros((0, _CHEB, functions))  # (panel, degree, function); NaN: not yet

    def __call__(self, q: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """The tabulated functions (those in `columns`) at q, shape (n,) -> (n, functions)."""
        width = len(range(self._coef.shape[2])[columns])
        out = np.empty((q.size, width))
        for part in range(0, q.size, _CHUNK):
            out[part : part + _CHUNK] = self._evaluate(q[part : part + _CHUNK], columns, width)
        return out

    def cover(self, low: float, high: float) -> None:
        """Computes every panel between q = low and q = high (> 0) now, in one call of `moments`."""
        first, last = (math.floor(math.log(max(x, _Q_FLOOR)) / _PANEL) for x in (low, high))
        self._rows(np.arange(first, last + 1))

    def _evaluate(self, q: np.ndarray, columns: slice, width: int) -> np.ndarray:
        s = np.log(np.maximum(q, _Q_FLOOR)) / _PANEL
        panel = np.floor(s)
        rows = self._rows(panel.astype(np.int64))
        basis = np.polynomial.chebyshev.chebvander(2.0 * (s - panel) - 1.0, _CHEB - 1)
        coef = self._coef[:, :, columns]
        if width <= 4:  # gathering each value's coefficients is cheapest for a few functions
            return np.einsum("nk,nkf->nf", basis, coef[rows])
        # Else one product per panel (by einsum: a threaded BLAS is many times slower at these
        # sizes when the cores are busy).
        order = np.argsort(rows, kind="stable")
        keys, starts = np.unique(rows[order], return_index=True)
        out = np.empty((q.size, width))
        for key, members in zip(keys, np.split(order, starts[1:]), strict=True):
            out[members] = np.einsum("nk,kf->nf", basis[members], coef[key])
        return out

    def _rows(self, panel: np.ndarray) -> np.ndarray:
        """The rows of `_coef` that hold these panels, computing those not there yet."""
        if panel.size == 0:
            return panel
        first, end = panel.min(), panel.max() + 1
        if self._coef.shape[0]:
            first, end = min(first, self._first), max(end, self._first + self._coef.shape[0])
        if first != self._first or end - first != self._coef.shape[0]:  # widen the range
            coef = np.full((end - first, *self._coef.shape[1:]), np.nan)
            coef[self._first - first : self._first - first + self._coef.shape[0]] = self._coef
            self._first, self._coef = first, coef
        rows = panel - self._first
        missing = np.isnan(self._coef[rows, 0, 0])
        if missing.any():
            new = np.unique(rows[missing])
            q = np.exp(_PANEL * (self._first + new[:, None] + (_CHEB_X + 1.0) / 2.0))
            values = self._moments(q.ravel()).reshape(new.size, _CHEB, -1)
            self._coef[new] = np.einsum("mj,pjf->pmf", _CHEB_TRANSFORM, values)
        return rows


class ActivationTables(NamedTuple):
    """What the solvers need of one activation: phi itself and its tabulated moments."""

    phi: Phi
    length: Table  # `quadrature.length_moments`
    hermite: tuple[Table, ...]  # `quadrature.hermite_moments`, one per `quadrature.SERIES`


# The process cache (see the module docstring): activation function -> its tables, oldest first.
_TABLES: dict[Callable, ActivationTables] = {}
_KEPT = 64  # activations kept; more than this many are kept only while one call needs them


def tables_for(acts: list[registry.Activation]) -> list[ActivationTables]:
    """The tables of each activation; those met for the first time share one compiled kernel."""
    fresh = tuple(dict.fromkeys(a.fn for a in acts if a.fn not in _TABLES))
    if fresh:
        compilation_cache.enable()  # before the first compile, or JAX never looks at the cache
    for index, fn in enumerate(fresh):
        phi = elementwise(fresh, index)
        _TABLES[fn] = ActivationTables(
            phi,
            Table(functools.partial(length_moments, phi), 3),
            tuple(
                Table(functools.partial(hermite_moments, phi, series), series.degree + 3)
                for series in SERIES
            ),
        )
    tables = [_TABLES[a.fn] for a in acts]
    while len(_TABLES) > max(_KEPT, len(fresh)):
        _TABLES.pop(next(iter(_TABLES)))
    return tables
