"""L-BFGS: a quasi-Newton direction from the last (s, y) pairs, a strong Wolfe line search.

Each batch takes one iteration: the direction p = -H_k g by the two-loop recursion over the pairs
kept (initial scaling gamma = s^T y / y^T y of the newest pair; p = -g when none is kept), a step
length alpha satisfying the strong Wolfe conditions on the batch cost, theta <- theta + alpha p,
then the pair s = alpha p, y = g(theta + alpha p) - g(theta) (both gradients on the same batch) is
kept unless s^T y <= eps |s| |y|. Pairs are kept across batches, epochs and ``fit`` calls (a
ring of ``optimizer.history`` pairs, in memory only: a new trainer, ``load`` or ``--resume``
starts a new history); the derivation prints the equations
(:mod:`symgrad.derivation.lbfgs`, keys ``lbfgs*``).
"""

import sympy as sp

from .base import Optimizer, Update, register, theta

alpha_k = sp.Symbol("alpha_k", positive=True)  # the step length of the line search
p = sp.Symbol("p", real=True)  # the direction -H_k g of the two-loop recursion
c_1 = sp.Symbol("c_1", positive=True)  # the sufficient-decrease (Armijo) constant
c_2 = sp.Symbol("c_2", positive=True)  # the curvature constant

LBFGS = register(
    Optimizer(
        name="lbfgs",
        title="L-BFGS",
        updates=(Update(theta, theta + alpha_k * p),),
        hyper={c_1: "c1", c_2: "c2"},
        step_size=alpha_k,
        prose=(
            "A quasi-Newton direction from the last optimizer.history pairs of steps and "
            "gradient changes (two-loop recursion), and a step length satisfying the strong "
            "Wolfe conditions."
        ),
        first_order=False,
    )
)
