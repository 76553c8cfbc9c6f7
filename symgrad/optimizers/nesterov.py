"""Nesterov accelerated gradient, stored at the look-ahead point (Sutskever et al., 2013).

The trainer keeps phi = theta + gamma v, where the gradient is evaluated, so the step reads
phi <- phi + gamma v' - eta g with v' = gamma v - eta g (Bengio et al.'s form of the same method).
"""

import sympy as sp

from .base import Optimizer, Update, eta, g, register, theta, u

gamma = sp.Symbol("gamma", nonnegative=True)  # the momentum coefficient (mu is the damping)
v = sp.Symbol("v", real=True)  # the velocity

NESTEROV = register(
    Optimizer(
        name="nesterov",
        title="Nesterov accelerated gradient",
        updates=(Update(v, gamma * v - eta * g), Update(theta, theta + gamma * v - eta * g)),
        state=(v,),
        keys={v: "velocity"},
        hyper={gamma: "momentum"},
        step_size=(1 + gamma) * eta,
        after_prox=(Update(v, v + (theta - u) / (1 + gamma)),),
        prose=(
            "The parameters are kept at the look-ahead point theta + gamma v, where the gradient "
            "is taken; one step moves them by gamma v' - eta g, i.e. (1 + gamma) eta per unit of "
            "gradient."
        ),
    )
)
