"""Adagrad: per-coordinate steps scaled by the root of the summed squared gradients."""

import sympy as sp

from .base import Optimizer, Update, eta, g, register, theta

epsilon = sp.Symbol("epsilon", positive=True)
G = sp.Symbol("G", nonnegative=True)  # the sum of squared gradients

ADAGRAD = register(
    Optimizer(
        name="adagrad",
        title="Adagrad",
        updates=(Update(G, G + g**2), Update(theta, theta - eta * g / (sp.sqrt(G) + epsilon))),
        state=(G,),
        keys={G: "sq"},
        hyper={epsilon: "eps"},
        step_size=eta / (sp.sqrt(G) + epsilon),
        prose="Each coordinate's step is divided by the root of its summed squared gradients.",
    )
)
