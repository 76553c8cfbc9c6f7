"""RMSProp: per-coordinate steps scaled by a running mean of squared gradients."""

import sympy as sp

from .base import Optimizer, Update, eta, g, register, theta

rho = sp.Symbol("rho", nonnegative=True)
epsilon = sp.Symbol("epsilon", positive=True)
E = sp.Symbol("E", nonnegative=True)  # the running mean of squared gradients

RMSPROP = register(
    Optimizer(
        name="rmsprop",
        title="RMSProp",
        updates=(
            Update(E, rho * E + (1 - rho) * g**2),
            Update(theta, theta - eta * g / (sp.sqrt(E) + epsilon)),
        ),
        state=(E,),
        keys={E: "sq"},
        hyper={rho: "rho", epsilon: "eps"},
        step_size=eta / (sp.sqrt(E) + epsilon),
        prose="Each coordinate's step is divided by the root of a running mean of its squares.",
    )
)
