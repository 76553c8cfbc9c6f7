"""Trust-region Newton-CG: Steihaug-Toint conjugate gradients on Hessian-vector products.

Each batch takes one iteration: p minimises the quadratic model m(p) = C + g^T p + p^T H p / 2
inside the radius Delta (conjugate gradients stopped at the boundary or at non-positive
curvature), the ratio rho of the actual to the predicted reduction decides whether the step is
taken (rho > optimizer.accept) and how Delta changes (x 1/4 when rho < 1/4; x 2, up to
optimizer.max_radius, when rho > 3/4 and p reached the boundary). The radius is saved with
checkpoints; the derivation prints the equations (:mod:`symgrad.derivation.trust`, keys
``trust*``).
"""

import sympy as sp

from .base import Optimizer, Update, register, theta

p = sp.Symbol("p", real=True)  # the accepted step (0 when rejected)
Delta = sp.Symbol("Delta", positive=True)  # the trust radius
Delta_max = sp.Symbol("Delta_max", positive=True)
eta_a = sp.Symbol("eta_a", nonnegative=True)  # the least ratio that accepts a step

TRUST_NCG = register(
    Optimizer(
        name="trust_ncg",
        title="trust-region Newton-CG",
        updates=(Update(theta, theta + p),),
        hyper={Delta_max: "max_radius", eta_a: "accept"},
        prose=(
            "Steihaug-Toint conjugate gradients on Hessian-vector products inside a trust "
            "region whose radius follows the ratio of actual to predicted reduction."
        ),
        first_order=False,
    )
)
