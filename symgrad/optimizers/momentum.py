"""Gradient descent with (heavy-ball) momentum."""

import sympy as sp

from .base import Optimizer, Update, eta, g, register, theta, u

gamma = sp.Symbol("gamma", nonnegative=True)  # the momentum coefficient (mu is the damping)
v = sp.Symbol("v", real=True)  # the velocity

MOMENTUM = register(
    Optimizer(
        name="momentum",
        title="gradient descent with momentum",
        updates=(Update(v, gamma * v - eta * g), Update(theta, theta + v)),
        state=(v,),
        keys={v: "velocity"},
        hyper={gamma: "momentum"},
        after_prox=(Update(v, v + theta - u),),
        prose=(
            "The velocity v accumulates past steps with decay gamma. With an L1 penalty the "
            "velocity becomes the step actually taken after the threshold."
        ),
    )
)
