"""Adam (Kingma and Ba, 2015) with bias-corrected moments.

The step eta m_hat / (sqrt(v_hat) + epsilon), with m_hat = m / (1 - beta_1^t) and
v_hat = v / (1 - beta_2^t), is written in the paper's efficient order (Section 2), with epsilon
scaled so that it is exactly the same number.
"""

import sympy as sp

from .base import Optimizer, Update, eta, g, register, t, theta

beta_1 = sp.Symbol("beta_1", nonnegative=True)
beta_2 = sp.Symbol("beta_2", nonnegative=True)
epsilon = sp.Symbol("epsilon", positive=True)
m = sp.Symbol("m_t", real=True)  # the first moment (m_t: m is the batch size)
v = sp.Symbol("v_t", nonnegative=True)  # the second moment

_root = sp.sqrt(1 - beta_2**t)
#: the per-coordinate step size on m_hat: eta / (sqrt(v_hat) + epsilon)
_step = eta * _root / (sp.sqrt(v) + epsilon * _root)

ADAM = register(
    Optimizer(
        name="adam",
        title="Adam",
        updates=(
            Update(m, beta_1 * m + (1 - beta_1) * g),
            Update(v, beta_2 * v + (1 - beta_2) * g**2),
            Update(theta, theta - _step * m / (1 - beta_1**t)),
        ),
        state=(m, v),
        keys={m: "m", v: "v"},  # the trainer's state and saved files: opt_m, opt_v
        hyper={beta_1: "beta1", beta_2: "beta2", epsilon: "eps"},
        step_size=_step,
        prose=(
            "Running means of the gradient and of its square, corrected for their start at zero; "
            "the step is eta m_hat / (sqrt(v_hat) + epsilon), here multiplied out."
        ),
    )
)
