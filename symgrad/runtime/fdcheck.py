"""The finite-difference checker: central differences in float64 against a trainer's derivatives.

It names the parameter block and both numbers when a check fails, and has tests of its own that
prove it catches a wrong derivative (``tests/test_fdcheck.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockResult:
    """The agreement of one parameter block (``W_1``, ``b_1``, ...)."""

    block: str
    size: int
    grad_abs: float
    grad_rel: float
    hess_abs: float | None = None
    hess_rel: float | None = None

    def passed(self, grad_tol: float, hess_tol: float) -> bool:
        ok = self.grad_rel <= grad_tol
        if self.hess_rel is not None:
            ok = ok and self.hess_rel <= hess_tol
        return ok


def blocks(model) -> list[tuple[str, slice]]:
    """The parameter blocks of a generated trainer, in ``get_flat`` order."""
    out = []
    offset = 0
    for name, view in model.params().items():
        out.append((name, slice(offset, offset + view.size)))
        offset += view.size
    return out


def _rel(err: np.ndarray, ref: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-8)
    return float(np.max(np.abs(err), initial=0.0)) / scale


def numeric_gradient(f, theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f`` at ``theta``."""
    return numeric_jacobian(lambda t: np.atleast_1d(f(t)), theta, eps)[0]


def numeric_jacobian(g, theta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences of the vector function ``g`` (columns by parameter)."""
    t = theta.copy()
    cols = []
    for i in range(theta.size):
        old = t[i]
        t[i] = old + eps
        gp = g(t)
        t[i] = old - eps
        gm = g(t)
        t[i] = old
        cols.append((gp - gm) / (2 * eps))
    return np.stack(cols, axis=1)


def check(model, X, Y, hessian: bool = True, eps: float = 1e-6) -> list[BlockResult]:
    """Compare ``gradient_flat`` (and ``hessian``) of ``model`` with central differences.

    Runs in float64 on a copy of the parameters; the model is left as it was.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    saved = model.get_flat()
    if model.dtype != np.float64:
        model = type(model)(dtype=np.float64)
    theta = saved.astype(np.float64)

    def loss_at(t):
        model.set_flat(t)
        return model.loss(X, Y)

    def grad_at(t):
        model.set_flat(t)
        return model.gradient_flat(X, Y)

    try:
        model.set_flat(theta)
        g = model.gradient_flat(X, Y)
        H = model.hessian(X, Y) if hessian else None
        g_fd = numeric_gradient(loss_at, theta, eps)
        H_fd = numeric_jacobian(grad_at, theta, eps * 10) if hessian else None
    finally:
        model.set_flat(theta)
    results = []
    for name, sl in blocks(model):
        ga = float(np.max(np.abs(g[sl] - g_fd[sl]), initial=0.0))
        gr = _rel(g[sl] - g_fd[sl], g_fd)
        ha = hr = None
        if hessian:
            diff = H[sl] - H_fd[sl]
            ha = float(np.max(np.abs(diff), initial=0.0))
            hr = _rel(diff, H_fd)
        results.append(BlockResult(name, sl.stop - sl.start, ga, gr, ha, hr))
    return results
