"""Damped Newton's method: p solves (H + mu I) p = g; theta <- theta - eta p."""

import sympy as sp

from .base import Optimizer, Update, eta, register, theta

mu = sp.Symbol("mu", nonnegative=True)  # the damping
p = sp.Symbol("p", real=True)  # the Newton direction (H + mu I)^{-1} g

NEWTON = register(
    Optimizer(
        name="newton",
        title="damped Newton's method",
        updates=(Update(theta, theta - eta * p),),
        hyper={mu: "damping"},
        prose=(
            "The direction p solves (H + mu I) p = g: exactly up to 2,000 parameters, by "
            "conjugate gradients on Hessian-vector products above (stopping early where "
            "H + mu I is not positive definite along the search direction)."
        ),
        first_order=False,
    )
)
