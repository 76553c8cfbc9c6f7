"""What exact second derivatives are for: SciPy's optimisers, Laplace, structured curvature.

Everything here works on a generated trainer's public API (``get_flat``/``set_flat``,
``loss``, ``gradient_flat``, ``hvp``, ``hessian``, ``gauss_newton``, ``forward``) and its spec:

- :func:`scipy_objective`: ``fun``, ``jac``, ``hess``, ``hessp`` for ``scipy.optimize``.
- :func:`laplace`: the Laplace approximation (``full``, ``gauss_newton``, ``kfac``, ``diag``),
  linearised predictions, the marginal likelihood and the prior precision chosen by it, and for
  GLMs standard errors and Wald z-scores.
- :func:`kfac_factors`, :func:`diag_gauss_newton`, :func:`diag_hessian`: structured curvature
  without a ``P x P`` matrix.
- :func:`hessian_eigs`: top-k eigenvalues by Lanczos on ``hvp``, or the full spectrum.

SciPy is needed by :func:`scipy_objective` and Lanczos only.
"""

from .network import Network, spec_of
from .objective import ScipyObjective, scipy_objective
from .posterior import STRUCTURES, Laplace, NotPositiveDefinite, laplace
from .spectrum import hessian_eigs
from .structured import KronFactors, diag_gauss_newton, diag_hessian, kfac_factors

__all__ = [
    "STRUCTURES",
    "KronFactors",
    "Laplace",
    "Network",
    "NotPositiveDefinite",
    "ScipyObjective",
    "diag_gauss_newton",
    "diag_hessian",
    "hessian_eigs",
    "kfac_factors",
    "laplace",
    "scipy_objective",
    "spec_of",
]
