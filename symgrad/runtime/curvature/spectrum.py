"""Eigenvalues of the Hessian (or the Gauss-Newton matrix): Lanczos on products, or all of them.

Lanczos (``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``) needs only ``hvp``: memory is
``O(P * k)``, never ``P x P``. The full spectrum (``numpy.linalg.eigh`` of ``model.hessian``)
is for small P.
"""

from __future__ import annotations

import numpy as np

from .network import Network
from .structured import _checked

#: ``method="auto"`` takes the full spectrum up to this many parameters.
DENSE_MAX = 1000


def hessian_eigs(
    model,
    X,
    Y,
    k: int = 6,
    which: str = "LA",
    method: str = "auto",
    gauss_newton: bool = False,
    return_eigenvectors: bool = False,
    tol: float = 0.0,
    seed: int = 0,
    operator: str = "cached",
    spec=None,
):
    """The ``k`` extreme eigenvalues of ``model.hessian(X, Y)`` (or ``gauss_newton``).

    Args:
        k: how many eigenvalues (``None`` with ``method="dense"``: all of them).
        which: ``"LA"`` largest (the sharpness is the first), ``"SA"`` smallest, ``"LM"``
            largest in magnitude.
        method: ``"lanczos"`` (``eigsh`` on ``hvp``), ``"dense"`` (``eigh`` of the matrix) or
            ``"auto"`` (dense up to :data:`DENSE_MAX` parameters).
        gauss_newton: the Gauss-Newton matrix instead of the Hessian.
        operator: the products for Lanczos: ``"cached"`` (the R-operator of
            :meth:`Network.curvature_operator`, the forward pass and deltas computed once) or
            ``"trainer"`` (``model.hvp``, which redoes the forward pass each time).
        return_eigenvectors: also return the eigenvectors (P, k), public order.
        tol, seed: ``eigsh``'s tolerance (0: machine precision) and the seed of its start vector.

    Returns:
        The eigenvalues (k,), sorted from the largest down (and the eigenvectors).
    """
    if which not in ("LA", "SA", "LM"):
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    X, Y = _checked(model, X, Y)
    theta = np.asarray(model.get_flat(), dtype=np.float64)
    P = theta.size
    if method == "auto":
        method = "dense" if P <= DENSE_MAX else "lanczos"
    if method == "dense":
        H = model.gauss_newton(X, Y) if gauss_newton else model.hessian(X, Y)
        lam, V = np.linalg.eigh(np.asarray(H, dtype=np.float64))
        order = {"LA": np.argsort(-lam), "SA": np.argsort(lam), "LM": np.argsort(-np.abs(lam))}
        idx = order[which][: (P if k is None else k)]
        idx = idx[np.argsort(-lam[idx], kind="stable")]
        return (lam[idx], V[:, idx]) if return_eigenvectors else lam[idx]
    if method != "lanczos":
        raise ValueError(f"method must be 'auto', 'lanczos' or 'dense', got {method!r}")
    if k is None or not 1 <= k < P:
        raise ValueError(f"Lanczos needs 1 <= k < P = {P}, got k={k}")
    from scipy.sparse.linalg import LinearOperator, eigsh

    if operator == "trainer":
        if gauss_newton:
            raise ValueError("the trainer has no public Gauss-Newton-vector product")

        def matvec(v):
            return np.asarray(model.hvp(X, Y, np.ravel(v)), dtype=np.float64)
    elif operator == "cached":
        net = spec if isinstance(spec, Network) else Network(model, spec)
        net.check(model, theta, X)
        n = X.shape[0]
        reg = net.weight_mask * (float(model.l2) / n)
        product = net.curvature_operator(theta, X, Y, exact=not gauss_newton)

        def matvec(v):
            v = np.ravel(v)
            return product(v) / n + reg * v
    else:
        raise ValueError(f"operator must be 'cached' or 'trainer', got {operator!r}")

    op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(P)
    lam, V = eigsh(op, k=k, which=which, v0=v0, tol=tol)
    idx = np.argsort(-lam, kind="stable")
    return (lam[idx], V[:, idx]) if return_eigenvectors else lam[idx]
