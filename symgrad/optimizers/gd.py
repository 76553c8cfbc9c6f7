"""Gradient descent (full batch): Delta v = -eta grad C (seed 001)."""

from .base import Optimizer, Update, eta, g, register, theta

GD = register(
    Optimizer(
        name="gd",
        title="full-batch gradient descent",
        updates=(Update(theta, theta - eta * g),),
        prose="Each epoch takes one step against the gradient of the cost on the whole set.",
    )
)
