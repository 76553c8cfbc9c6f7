"""Mini-batch stochastic gradient descent: one step per batch of m samples (seed 001)."""

from .base import Optimizer, Update, eta, g, register, theta

SGD = register(
    Optimizer(
        name="sgd",
        title="mini-batch stochastic gradient descent",
        updates=(Update(theta, theta - eta * g),),
        prose=(
            "Each mini-batch of m samples takes one step against its gradient: the data term is "
            "averaged over the batch, the regulariser keeps its 1/N."
        ),
    )
)
