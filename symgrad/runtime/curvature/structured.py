"""Structured curvature without a ``P x P`` matrix: K-FAC factors and exact diagonals.

All sums run over samples in blocks; memory is ``O(block * width^2 + P)``.

- K-FAC (Martens & Grosse 2015, "expand" form): for layer ``l`` with input ``a_{l-1}`` and
  ``M_l`` the back-propagated columns of ``S_G``'s factor (see :mod:`.network`),
  ``A_l = E[a_{l-1} a_{l-1}^T]`` and ``B_l = E[M_l diag(sign) M_l^T]`` (type-2: the exact
  Gauss-Newton by ``z_l``), or ``B_l = E[delta_l delta_l^T]`` (``fisher="empirical"``). The
  Gauss-Newton block of ``W_l`` in the data term of the cost ``(1/n) sum_x C_x`` is approximated
  by ``B_l kron A_l`` (row-major ``W_l``, so ``B`` is the outer factor), that of ``b_l`` is
  ``B_l`` exactly.
- The diagonal of the Gauss-Newton matrix: ``G[W_l(i,j)] = E[(M_l diag(sign) M_l^T)_ii
  a_{l-1,j}^2]``, exact (one backward sweep with ``c`` columns, ``c`` = outputs).
- The diagonal of the exact Hessian: ``H[W_l(i,j)] = E[(H_l)_ii a_{l-1,j}^2]`` with ``H_l``
  the exact Hessian of ``C_x`` by ``z_l`` (``Network.hessian_by_z``), also exact: ``z_l`` is
  linear in ``W_l``, so no other term reaches the diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import Network


@dataclass(frozen=True)
class KronFactors:
    """The K-FAC factors of one layer: ``A`` (fan_in, fan_in), ``B`` (units, units).

    Both are means over the ``n`` samples: the data term's curvature block of ``W_l`` is
    ``kron(B, A)``, that of ``b_l`` is ``B`` (for the summed loss, ``n`` times these)."""

    A: np.ndarray
    B: np.ndarray
    n: int


def _checked(model, X, Y):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(
            f"X and Y must be 2-d with the same number of rows, got {X.shape}, {Y.shape}"
        )
    return X, Y


def _net(model, spec) -> Network:
    return spec if isinstance(spec, Network) else Network(model, spec)


def _blocks(net: Network, n: int, square: int = 0):
    step = net.block_size(square)
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def kfac_sums(net: Network, theta, X, Y, fisher: str = "type2") -> tuple[list, list]:
    """``sum_x a a^T`` and ``sum_x (M diag(sign) M^T | delta delta^T)`` per layer."""
    if fisher not in ("type2", "empirical"):
        raise ValueError(f"fisher must be 'type2' or 'empirical', got {fisher!r}")
    As = [np.zeros((ly.fan_in, ly.fan_in)) for ly in net.layers]
    Bs = [np.zeros((ly.units, ly.units)) for ly in net.layers]
    for rows in _blocks(net, X.shape[0]):
        s = net.forward(theta, X[rows])
        if fisher == "type2":
            M, sign = net.ggn_factors(s, Y[rows])
        else:
            d = net.deltas(s, Y[rows])
        for l in range(1, net.L + 1):
            a = s.a[l - 1]
            As[l - 1] += a.T @ a
            if fisher == "type2":
                Ml = M[l]
                m, u, c = Ml.shape
                Bs[l - 1] += (Ml * sign[:, None, :]).transpose(1, 0, 2).reshape(u, m * c) @ (
                    Ml.transpose(1, 0, 2).reshape(u, m * c).T
                )
            else:
                Bs[l - 1] += d[l].T @ d[l]
    return As, Bs


def ggn_diag_sum(net: Network, theta, X, Y) -> np.ndarray:
    """The diagonal of the Gauss-Newton matrix of ``sum_x C_x`` (P,), public order."""
    out = np.zeros(net.P)
    for rows in _blocks(net, X.shape[0]):
        s = net.forward(theta, X[rows])
        M, sign = net.ggn_factors(s, Y[rows])
        for l, layer in enumerate(net.layers, start=1):
            g = np.einsum("mic,mc->mi", M[l] ** 2, sign)  # diag of M diag(sign) M^T
            out[layer.w] += (g.T @ (s.a[l - 1] ** 2)).ravel()
            out[layer.b] += g.sum(axis=0)
    return out


def hessian_diag_sum(net: Network, theta, X, Y) -> np.ndarray:
    """The diagonal of the exact Hessian of ``sum_x C_x`` (P,), public order."""
    out = np.zeros(net.P)
    for rows in _blocks(net, X.shape[0], square=max(net.sizes[1:])):
        s = net.forward(theta, X[rows])
        H = net.hessian_by_z(s, Y[rows])
        for l, layer in enumerate(net.layers, start=1):
            h = np.diagonal(H[l], axis1=1, axis2=2)
            out[layer.w] += (h.T @ (s.a[l - 1] ** 2)).ravel()
            out[layer.b] += h.sum(axis=0)
    return out


def _reg_diag(net: Network, model, n: int) -> np.ndarray:
    return net.weight_mask * (float(model.l2) / n)


def kfac_factors(model, X, Y, fisher: str = "type2", spec=None) -> list[KronFactors]:
    """K-FAC factors of every layer at the model's parameters, on ``(X, Y)``.

    Args:
        model: a generated trainer.
        X, Y: inputs (n, inputs) and targets (n, outputs).
        fisher: ``"type2"`` (``B`` from the exact output curvature: the Gauss-Newton
            matrix by ``z_l``) or ``"empirical"`` (``B = E[delta_l delta_l^T]``).
        spec: the model's spec when the model does not carry it (see :func:`spec_of`).

    Returns:
        One :class:`KronFactors` per layer (means over the n samples; no regulariser).
    """
    net = _net(model, spec)
    X, Y = _checked(model, X, Y)
    theta = model.get_flat().astype(np.float64)
    net.check(model, theta, X)
    n = X.shape[0]
    As, Bs = kfac_sums(net, theta, X, Y, fisher)
    return [KronFactors(A / n, B / n, n) for A, B in zip(As, Bs)]


def diag_gauss_newton(model, X, Y, spec=None) -> np.ndarray:
    """The diagonal of ``model.gauss_newton(X, Y)`` (P,), without forming the matrix.

    The data term is the mean over the n samples; the L2 term adds ``l2 / n`` on the weights.
    """
    net = _net(model, spec)
    X, Y = _checked(model, X, Y)
    theta = model.get_flat().astype(np.float64)
    net.check(model, theta, X)
    n = X.shape[0]
    return ggn_diag_sum(net, theta, X, Y) / n + _reg_diag(net, model, n)


def diag_hessian(model, X, Y, spec=None) -> np.ndarray:
    """The diagonal of the exact ``model.hessian(X, Y)`` (P,), without forming the matrix.

    Exact, not a stochastic estimate: per sample, the exact Hessian by each layer's
    pre-activations is propagated back (``O(width^2)`` per sample and layer).
    """
    net = _net(model, spec)
    X, Y = _checked(model, X, Y)
    theta = model.get_flat().astype(np.float64)
    net.check(model, theta, X)
    n = X.shape[0]
    return hessian_diag_sum(net, theta, X, Y) / n + _reg_diag(net, model, n)
