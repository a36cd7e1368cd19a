"""Which law the gradient ratio follows with depth: exponential, stretched, polynomial or flat.

r(L) = log10(||delta_1|| / ||delta_L||) of one network family (a facet and scale value) measured at
several depths L. Three laws describe how the first layer's share of the gradient changes with L:

    exponential   ||delta_1|| / ||delta_L|| = c k^L          r = a + b L         rate: k = 10^b a layer
    stretched     ||delta_1|| / ||delta_L|| = c 10^(b √L)    r = a + b sqrt(L)   rate: b
    polynomial    ||delta_1|| / ||delta_L|| = c L^b          r = a + b log10 L   rate: the exponent b
    flat          |r| <= bound at every measured depth                         rate: the bound, max |r|

An MLP off the edge of chaos is exponential (k = sqrt(chi_1)); a tanh residual stream without a
norm is a stretched exponential (its branch's slope fades as the stream grows: Yang & Schoenholz
2017 found exp(Theta(sqrt(L))) for tanh resnets); a residual stream behind a pre-norm grows
polynomially, since each block's branch is divided by the stream's growing scale; a depth-scaled
branch (alpha = 1/sqrt(L)) or a post-norm of ReLU blocks keeps r bounded.

The criterion, in order: flat when |r| stays within `FLAT_BOUND` at every depth (the first and the
last layer within a factor 10^0.5, about 3, of each other however deep the network); otherwise the
least-squares line in L, sqrt(L) or log10 L with the smallest residual sum of squares (all have
two parameters, so their sums compare directly; a tie goes to the faster law). At least
`MIN_DEPTHS` depths are needed: through two points every line fits exactly. Pure NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXPONENTIAL, STRETCHED, POLYNOMIAL, FLAT = "exponential", "stretched", "polynomial", "flat"
LAWS = (EXPONENTIAL, STRETCHED, POLYNOMIAL, FLAT)
# Each law's line r = a + b x(L), fastest first.
ABSCISSAE = {EXPONENTIAL: lambda d: d, STRETCHED: np.sqrt, POLYNOMIAL: np.log10}
FLAT_BOUND = 0.5  # |r| at most this at every depth: flat
MIN_DEPTHS = 3


@dataclass(frozen=True)
class DepthLaw:
    """The law of r(L) over the depths of one series.

    Attributes:
        law: `EXPONENTIAL`, `STRETCHED`, `POLYNOMIAL` or `FLAT`.
        slope: b of the chosen line: log10 of the factor per layer (exponential), of the factor
            per unit of sqrt(L) (stretched) or the exponent (polynomial); NaN for a flat law.
        intercept: a of the chosen line; NaN for a flat law.
        bound: max |r| over the depths.
        rms: root mean square residual of the chosen line (flat: of r itself, about r = 0).
        depth_min, depth_max: the smallest and largest depth fitted.
        depths: how many depths were fitted.
    """

    law: str
    slope: float
    intercept: float
    bound: float
    rms: float
    depth_min: int
    depth_max: int
    depths: int

    @property
    def factor(self) -> float:
        """The factor of ||delta_1|| / ||delta_L|| per added layer, 10^slope (exponential laws)."""
        return float(10.0**self.slope)


def _line(x: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, residual sum of squares) of the least-squares line r = a + b x."""
    slope, intercept = np.polyfit(x, r, 1)
    residual = r - (intercept + slope * x)
    return float(slope), float(intercept), float(residual @ residual)


def fit_depth_law(depth, r, *, flat_bound: float = FLAT_BOUND) -> DepthLaw | None:
    """The law of `r` (one value per depth, e.g. the mean over replicates) against `depth`.

    Non-finite values are left out; None when fewer than `MIN_DEPTHS` distinct depths remain.
    See the module docstring for the criterion.
    """
    depth, r = np.asarray(depth, dtype=float), np.asarray(r, dtype=float)
    ok = np.isfinite(depth) & np.isfinite(r) & (depth > 0)
    depth, r = depth[ok], r[ok]
    if np.unique(depth).size < MIN_DEPTHS:
        return None
    bound = float(np.max(np.abs(r)))
    extent = {"depth_min": int(depth.min()), "depth_max": int(depth.max()), "depths": depth.size}
    if bound <= flat_bound:
        rms = float(np.sqrt(np.mean(r**2)))
        return DepthLaw(FLAT, np.nan, np.nan, bound, rms, **extent)
    fits = {law: _line(abscissa(depth), r) for law, abscissa in ABSCISSAE.items()}
    law = min(fits, key=lambda name: fits[name][2])  # the first of equal sums: the faster law
    slope, intercept, rss = fits[law]
    return DepthLaw(law, slope, intercept, bound, float(np.sqrt(rss / depth.size)), **extent)
