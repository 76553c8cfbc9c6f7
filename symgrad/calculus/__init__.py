"""The calculus layer: activations, losses and everything SymPy derives from them."""

from .core import (
    LOSS_TITLES,
    ActivationCalculus,
    LossCalculus,
    a,
    activation_calculus,
    ak,
    am,
    alpha,
    logsumexp,
    loss_calculus,
    loss_expression,
    softplus,
    tidy,
    y,
    z,
)

__all__ = [
    "LOSS_TITLES",
    "ActivationCalculus",
    "LossCalculus",
    "a",
    "activation_calculus",
    "ak",
    "am",
    "alpha",
    "logsumexp",
    "loss_calculus",
    "loss_expression",
    "softplus",
    "tidy",
    "y",
    "z",
]
