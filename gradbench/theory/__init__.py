"""Mean-field theory of signal propagation in deep random networks, for any activation.

Conventions: layer l computes z_l = W_l h_{l-1} + b_l and h_l = phi(z_l), with Var(W_ij) =
sigma_w^2 / fan_in, Var(b_i) = sigma_b^2 and inputs of unit second moment. At large width the
pre-activations of a layer are Gaussian with variance q_l, and three maps describe it:

    length map       q_{l+1} = V(q_l) = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2,  z ~ N(0, 1)
    correlation map  c_{l+1} = C(c_l) = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*,
                     (u_1, u_2) ~ N(0, q* [[1, c], [c, 1]])
    gradient factor  chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]: ||dJ/dz_l||^2 changes by chi_1 a layer

q* is the fixed point that the orbit q_1 = sigma_w^2 + sigma_b^2, q_2 = V(q_1), ... reaches: 0 when
the signal dies out, inf when it grows without bound. Until it gets there layer l has its own factor
chi_l = sigma_w^2 E[phi'(sqrt(q_l) z)^2], and r = log10(||delta_1|| / ||delta_L||) = (1/2) sum_{l<L}
log10 chi_l, which is (L - 1) log10(chi_1) / 2 only once the orbit sits at q*. At finite width r
varies from draw to draw; for ReLU without bias its law is known exactly (Hanin & Nica 2019).

c* = 1 is always a fixed point of C; it is stable when chi_1 < 1 (ordered phase), otherwise C has a
second, stable fixed point c* < 1 (chaotic phase); chi_1 = 1 is the edge of chaos. Depth scales say over how many layers a perturbation
shrinks by a factor e:

    xi_q = -1 / ln V'(q*),    xi_grad = -1 / ln chi_1,
    xi_c = -1 / ln chi_c,     chi_c = C'(c*) = sigma_w^2 E[phi'(u_1) phi'(u_2)] at c*.

A negative xi means growth (|xi| layers per factor e), xi = inf criticality (algebraic decay). In
the ordered phase c* = 1 and chi_c = chi_1, so xi_c = xi_grad. Residual MLPs and Elman RNNs have
maps of their own built on the same moments (`residual`, `recurrent`).

How it is computed, one module a step:

    kernel           phi and phi' (by `jax.grad`) for many activations from one compiled kernel;
                     the only JAX in the theory, everything else is float64 NumPy
    quadrature       the Gaussian expectations of phi and phi' that the maps need
    tables           those expectations as interpolants in ln q, per activation, kept for the
                     process (the theory's one cache)
    length_map       q*, V'(q*) and chi_1 of many (sigma_w^2, sigma_b^2) pairs at once
    correlation_map  c* and chi_c in the chaotic phase
    orbit            the orbits q_1, q_2, ... of many configurations and the r they predict
    quantities       the public entry points: `mean_field`, `q_star`, `chi1`, `finite_depth`,
                     `finite_depth_layers`, `predict`
    spread           `relu_finite_width`: the exact law of r at finite width (ReLU, no bias)
    spectrum         free probability's spread of the input-output Jacobian's spectrum
    edge_of_chaos    `critical_sigma_w2`, the sigma_w^2 where chi_1 = 1
    residual         residual MLPs (norm none, pre- or post-layernorm/rmsnorm, one- or two-layer
                     branches): `predict_residual`, `residual_blocks`
    recurrent        Elman RNNs with input injection: `predict_recurrent`, `recurrent_steps`, and
                     Pascanu et al.'s bound (`max_slope`, `singular_edge`)
    columns          `with_theory` and `with_spectrum`, the theory columns of a run's tables
    text             `describe`, `format_description` and the `--gains` table, what
                     `gradbench theory` prints

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein, Ganguli (2016). Exponential expressivity in deep neural
        networks through transient chaos. NeurIPS. arXiv:1606.05340.
    Schoenholz, Gilmer, Ganguli, Sohl-Dickstein (2017). Deep information propagation. ICLR.
        arXiv:1611.01232.
    Hanin, Nica (2019). Products of many large random matrices and gradients in deep neural
        networks. Commun. Math. Phys. arXiv:1812.05994.
    Yang, Schoenholz (2017). Mean field residual networks: on the edge of chaos. NeurIPS.
        arXiv:1712.08969.
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent neural networks. ICML.
        arXiv:1211.5063.
"""

from gradbench.theory.columns import with_spectrum, with_theory
from gradbench.theory.edge_of_chaos import CriticalPoint, critical_sigma_w2
from gradbench.theory.quantities import (
    FiniteDepthLayers,
    MeanField,
    chi1,
    finite_depth,
    finite_depth_layers,
    mean_field,
    predict,
    q_star,
)
from gradbench.theory.recurrent import (
    RecurrentSteps,
    max_slope,
    predict_recurrent,
    recurrent_steps,
    singular_edge,
)
from gradbench.theory.residual import ResidualBlocks, predict_residual, residual_blocks
from gradbench.theory.spread import FiniteWidth, relu_finite_width
from gradbench.theory.text import describe, format_description, format_gains, gains

__all__ = [
    "CriticalPoint",
    "FiniteDepthLayers",
    "FiniteWidth",
    "MeanField",
    "RecurrentSteps",
    "ResidualBlocks",
    "chi1",
    "critical_sigma_w2",
    "describe",
    "finite_depth",
    "finite_depth_layers",
    "format_description",
    "format_gains",
    "gains",
    "max_slope",
    "mean_field",
    "predict",
    "predict_recurrent",
    "predict_residual",
    "q_star",
    "recurrent_steps",
    "relu_finite_width",
    "residual_blocks",
    "singular_edge",
    "with_spectrum",
    "with_theory",
]
