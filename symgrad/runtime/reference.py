"""A float64 reference network built from the definitions alone, for the verifier.

It knows the spec and the calculus registry (each activation ``f`` and loss ``l`` as SymPy
expressions, their first derivatives by ``sympy.diff``) and nothing of the derivation or of the
generated code: forward pass, per-sample cost ``C_x = sum_j l_j``, cost
``C = (1/N) sum_x C_x + R(theta)`` with ``R = lambda_2/(2N) sum w^2 + lambda_1/N sum |w|`` over
the weights, the deltas ``delta_l = dC_x / dz_l`` by the plain chain rule, and the gradient.
Everything else (second derivatives, R-operator values) comes from finite differences of these.

Finite differences are central, of order 8 (error ``h^8 f^(9) / 630``), with ``h = 0.02`` shrunk
until no piecewise branch (ReLU kinks, ``|w|`` of L1, a piecewise loss) changes between the
stencil points, so a kink never sits inside the stencil.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import sympy as sp

from .. import calculus as C
from ..spec import Spec

#: Central-difference weights of order 8: f'(0) ~ sum_k c_k (f(kh) - f(-kh)) / h.
FD_WEIGHTS = ((1, 4 / 5), (2, -1 / 5), (3, 4 / 105), (4, -1 / 280))
#: The first step tried; shrunk by 4 while a branch changes inside the stencil.
FD_STEP = 0.02
_MIN_STEP = 1e-7

_NUMPY = [
    {
        "softplus": lambda x: np.logaddexp(0.0, x),
        "Heaviside": lambda x, h0=0.5: np.heaviside(x, h0),
    },
    "numpy",
]


def lambdify(args, expr):
    """``sympy.lambdify`` onto NumPy (softplus as ``logaddexp``), broadcasting constants."""
    fn = sp.lambdify(args, expr, modules=_NUMPY)

    def call(*values):
        out = np.asarray(fn(*values))
        if out.dtype.kind != "f":
            out = out.astype(np.result_type(*values, np.float64))
        if len(values) == 1 and out.shape == np.shape(values[0]):
            return out
        return np.broadcast_to(out, np.broadcast(*values).shape)

    return call


class Fn:
    """A NumPy function of a SymPy expression whose pieces can be *frozen*.

    For a top-level ``Piecewise``, ``branch(*x)`` says which piece each element takes, and
    ``fn(*x, frozen=branch)`` evaluates every element on the piece it took at the base point:
    the same derivative there, and no kink inside a finite-difference stencil.
    """

    def __init__(self, args, expr) -> None:
        self.expr = expr
        self.piecewise = isinstance(expr, sp.Piecewise)
        if self.piecewise:
            self.pieces = [lambdify(args, e) for e, _ in expr.args]
            self.conds = [lambdify(args, sp.Piecewise((1, c), (0, True))) for _, c in expr.args]
        else:
            self.fn = lambdify(args, expr)

    def branch(self, *x) -> np.ndarray | None:
        if not self.piecewise:
            return None
        shape = np.broadcast(*x).shape
        out = np.full(shape, len(self.conds) - 1, dtype=np.int64)
        for k in range(len(self.conds) - 1, -1, -1):
            out = np.where(np.asarray(self.conds[k](*x)) > 0.5, k, out)
        return out

    def __call__(self, *x, frozen=None):
        if not self.piecewise:
            return self.fn(*x)
        which = self.branch(*x) if frozen is None else frozen
        vals = [p(*x) for p in self.pieces]
        with np.errstate(all="ignore"):
            return np.select([which == k for k in range(len(vals))], vals)


@dataclass(frozen=True)
class _Act:
    f: Fn | None
    df: Fn | None
    softmax: bool = False


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class State:
    """One evaluation of the network: parameters, inputs, targets, every z and a.

    ``z[l]``, ``a[l]`` are ``(m, n_l)``; ``z[0]`` is None and ``a[0]`` is ``X``. ``W[l]``
    is ``(n_l, n_{l-1})``, ``b[l]`` is ``(n_l,)`` (index 0 unused). ``frozen`` holds the
    branches of the piecewise functions at a base point (see :class:`Fn`), empty when none.
    ``N`` is the training-set size of the regulariser; ``avg`` the number the data term is
    averaged over: ``N`` for the cost C (0 means N), the batch size m for a batch's cost C_B.
    """

    W: list
    b: list
    X: np.ndarray
    Y: np.ndarray
    z: list
    a: list
    N: int
    frozen: dict = field(default_factory=dict)
    avg: int = 0

    @property
    def mean_over(self) -> int:
        """What the data term is averaged over: ``avg``, or N."""
        return self.avg or self.N


class Reference:
    """The network of ``spec`` evaluated in float64 from the definitions (see the module doc)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.sizes = list(spec.sizes)
        self.L = len(spec.layers)
        #: whether layer l has a bias (index 0 unused); a layer with ``bias: false`` keeps a
        #: zero ``b[l]`` that no flat vector holds
        self.bias = [None] + [layer.bias for layer in spec.layers]
        #: skip connections: the layers each layer reads (index 0 unused), how it merges them,
        #: and the layers reading each one (a chain: l - 1, and l + 1)
        self.sources = [None, *spec.sources]
        self.merge = [None] + [layer.merge for layer in spec.layers]
        self.children: list[list[int]] = [[] for _ in range(self.L + 1)]
        for l in range(1, self.L + 1):
            for src in self.sources[l]:
                self.children[src].append(l)
        self.l2 = float(spec.regularization.l2)
        self.l1 = float(spec.regularization.l1)
        self.acts: list[_Act | None] = [None]
        self.calculus = [None]
        for layer in spec.layers:
            act = C.activation_calculus(layer.activation, spec.activations, layer.alpha)
            self.calculus.append(act)
            if act.vector:
                self.acts.append(_Act(None, None, softmax=True))
                continue
            self.acts.append(_Act(Fn([C.z], act.f), Fn([C.z], act.df)))
        ell, _ = C.loss_expression(spec.loss, spec.losses)
        self.ell_expr = ell
        self.ell = Fn([C.a, C.y], ell)
        self.dl_da = Fn([C.a, C.y], sp.diff(ell, C.a))
        self.d2l_da2 = Fn([C.a, C.y], sp.diff(ell, C.a, 2))

    # -- forward and cost ---------------------------------------------------------------------
    def state(
        self, W, b, X, Y, N: int | None = None, frozen: dict | None = None, avg: int = 0
    ) -> State:
        """Run the forward pass; ``N`` (the training-set size) defaults to ``len(X)``; ``avg``
        (the batch size of a batch's cost, see :class:`State`) to N."""
        s = State(list(W), list(b), X, Y, [None] * (self.L + 1), [X] + [None] * self.L, 0)
        s.N = len(X) if N is None else N
        s.frozen = frozen or {}
        s.avg = avg
        self._forward_from(s, 1)
        return s

    def freeze(self, s: State) -> State:
        """``s`` with the branch of every piecewise function (activations, loss, ``|w|``) kept
        for every state derived from it: finite differences then never cross a kink."""
        fr = {}
        for l in range(1, self.L + 1):
            act = self.acts[l]
            if not act.softmax:
                fr[("f", l)] = act.f.branch(s.z[l])
                fr[("df", l)] = act.df.branch(s.z[l])
            fr[("sign", l)] = np.sign(s.W[l])
        fr["ell"] = self.ell.branch(s.a[self.L], s.Y)
        fr["dl"] = self.dl_da.branch(s.a[self.L], s.Y)
        fr["d2l"] = self.d2l_da2.branch(s.a[self.L], s.Y)
        return replace(s, frozen=fr)

    @staticmethod
    def _fr(s: State, key, like):
        """The frozen branches ``key`` of ``s`` when they fit ``like``, else None."""
        got = s.frozen.get(key)
        return got if got is None or np.shape(got) == np.shape(like) else None

    def _f(self, s: State, l: int, z):
        act = self.acts[l]
        return _softmax(z) if act.softmax else act.f(z, frozen=self._fr(s, ("f", l), z))

    def _df(self, s: State, l: int, z):
        return self.acts[l].df(z, frozen=self._fr(s, ("df", l), z))

    def _forward_from(self, s: State, l: int, skip_z: bool = False) -> None:
        for k in range(l, self.L + 1):
            if not (skip_z and k == l):
                s.z[k] = np.asarray(self.inp(s, k), np.float64) @ s.W[k].T + s.b[k]
            # the output layer in extended precision: log(1 - a) and the like keep their digits
            z = s.z[k].astype(np.longdouble) if k == self.L else s.z[k]
            s.a[k] = self._f(s, k, z)

    def override(self, s: State, kind: str, l: int, value: np.ndarray) -> State:
        """A copy of ``s`` with node ``kind`` (``"z"``, ``"a"``, ``"y"``) of layer ``l`` replaced.

        Everything downstream is recomputed; ``a`` of layer 0 is the input.
        """
        t = replace(s, z=list(s.z), a=list(s.a))
        if kind == "z":
            t.z[l] = value
            self._forward_from(t, l, skip_z=True)
        elif kind == "a":
            t.a[l] = value
            if l < self.L:
                self._forward_from(t, l + 1)
        elif kind == "y":
            t.Y = value
        else:  # pragma: no cover - callers pass the three kinds
            raise ValueError(kind)
        return t

    def nudge(self, s: State, kind: str, l: int, ids: tuple, t: float) -> State:
        """``s`` with ``w_l[ids]`` (``kind`` ``"w"``) or ``b_l[ids]`` (``"b"``) moved by ``t``:
        only column j of ``z_l`` changes (by ``t a_{l-1}[:, i]``, or ``t``), so the product of
        layer l is not formed again."""
        W, b = list(s.W), list(s.b)
        target = W if kind == "w" else b
        target[l] = target[l].copy()
        target[l][ids] += t
        z = s.z[l].copy()
        j = ids[0]
        z[:, j] += t * np.asarray(self.inp(s, l)[:, ids[1]], np.float64) if kind == "w" else t
        out = replace(s, W=W, b=b, z=list(s.z), a=list(s.a))
        out.z[l] = z
        self._forward_from(out, l, skip_z=True)
        return out

    def with_params(self, s: State, W, b, first: int = 1) -> State:
        """``s`` with new parameters, of which only layers ``first`` and above changed."""
        t = replace(s, W=list(W), b=list(b), z=list(s.z), a=list(s.a))
        self._forward_from(t, first)
        return t

    def cost_per_sample(self, s: State) -> np.ndarray:
        """``C_x = sum_j l(a_L[j], y[j])`` for each sample, shape ``(m,)``."""
        a = s.a[self.L]
        return self.ell(a, s.Y, frozen=self._fr(s, "ell", a)).sum(axis=1)

    def _abs_sign(self, s: State, l: int) -> np.ndarray:
        got = s.frozen.get(("sign", l))
        return np.sign(s.W[l]) if got is None else got

    def penalty(self, s: State) -> float:
        """``R(theta) = lambda_2/(2N) sum w^2 + lambda_1/N sum |w|`` (weights only)."""
        r = 0.0
        for l in range(1, self.L + 1):
            W = s.W[l]
            r += self.l2 / (2 * s.N) * float(np.sum(W * W))
            r += self.l1 / s.N * float(np.sum(self._abs_sign(s, l) * W))
        return r

    def cost(self, s: State) -> float:
        """``C = (1/N) sum_x C_x + R`` over the samples of ``s`` (its training set); a batch's
        ``C_B = (1/m) sum_x C_x + R`` when ``s.avg`` is m."""
        return float(self.cost_per_sample(s).sum()) / s.mean_over + self.penalty(s)

    # -- first derivatives by the chain rule --------------------------------------------------
    def deltas(self, s: State) -> list:
        """``delta_l = dC_x / dz_l`` per sample (index 0 unused), by the plain chain rule."""
        L = self.L
        d = [None] * (L + 1)
        a = s.a[L]
        g = self.dl_da(a, s.Y, frozen=self._fr(s, "dl", a))
        if self.acts[L].softmax:
            d[L] = a * g - a * np.sum(a * g, axis=1, keepdims=True)
        else:
            d[L] = g * self._df(s, L, s.z[L])
        for l in range(L - 1, 0, -1):
            d[l] = self._df(s, l, s.z[l]) * self.back(s, d, l)
        return d

    def inp(self, s: State, l: int) -> np.ndarray:
        """Layer l's input: a_{l-1}, or its sources stacked (concat) or summed (add)."""
        src = self.sources[l]
        if len(src) == 1:
            return s.a[src[0]]
        parts = [np.asarray(s.a[k], np.float64) for k in src]
        return sum(parts) if self.merge[l] == "add" else np.concatenate(parts, axis=1)

    def block(self, W: np.ndarray, c: int, l: int) -> np.ndarray:
        """The columns of layer c's weights ``W`` that read layer l."""
        src = self.sources[c]
        if len(src) == 1 or self.merge[c] == "add":
            return W
        lo = sum(self.sizes[k] for k in src[: src.index(l)])
        return W[:, lo : lo + self.sizes[l]]

    def back(self, s: State, d: list, l: int) -> np.ndarray:
        """``dC_x / da_l``: the sum over the layers c reading layer l of d_c times the block
        of W_c that reads it (d_{l+1} W_{l+1} for a chain)."""
        return sum(d[c] @ self.block(s.W[c], c, l) for c in self.children[l])

    def gradient(self, s: State) -> tuple[list, list]:
        """``dC/dW_l`` and ``dC/db_l`` (index 0 unused; of ``C_B`` when ``s.avg`` is m);
        ``sign(0) = 0`` for L1."""
        d = self.deltas(s)
        gW, gb = [None], [None]
        for l in range(1, self.L + 1):
            gW.append(
                d[l].T @ self.inp(s, l) / s.mean_over
                + self.l2 / s.N * s.W[l]
                + self.l1 / s.N * self._abs_sign(s, l)
            )
            gb.append(d[l].sum(axis=0) / s.mean_over)
        return gW, gb

    def per_sample_gradient(self, s: State) -> np.ndarray:
        """``dC_x / dtheta`` of every sample (m, P), public order (W_1 row-major, b_1, ...)."""
        d = self.deltas(s)
        parts = []
        for l in range(1, self.L + 1):
            parts.append((d[l][:, :, None] * self.inp(s, l)[:, None, :]).reshape(len(s.X), -1))
            if self.bias[l]:
                parts.append(d[l])
        return np.concatenate(parts, axis=1)

    def jacobian(self, s: State, of: str = "z") -> np.ndarray:
        """``d z_L / dtheta`` (``of="z"``) or ``d a_L / dtheta`` per sample: (m, n_L, P)."""
        L, m = self.L, len(s.X)
        K = s.z[L].shape[1]
        out = []
        for k in range(K):
            e = np.zeros((m, K))
            e[:, k] = 1.0
            if of == "a":
                if self.acts[L].softmax:
                    a = s.a[L]
                    e = a[:, k : k + 1] * (e - a)
                else:
                    e = e * self._df(s, L, s.z[L])
            d = [None] * (L + 1)
            d[L] = e
            for l in range(L - 1, 0, -1):
                d[l] = self._df(s, l, s.z[l]) * self.back(s, d, l)
            parts = []
            for l in range(1, L + 1):
                parts.append((d[l][:, :, None] * self.inp(s, l)[:, None, :]).reshape(m, -1))
                if self.bias[l]:
                    parts.append(d[l])
            out.append(np.concatenate(parts, axis=1))
        return np.stack(out, axis=1)

    def gauss_newton_s(self, s: State) -> np.ndarray:
        """``l''(a) f'(z)^2`` per output unit (m, n_L) (elementwise outputs)."""
        L = self.L
        a = s.a[L]
        d2 = self.d2l_da2(a, s.Y, frozen=self._fr(s, "d2l", a))
        return d2 * self._df(s, L, s.z[L]) ** 2

    def loss_curvature(self, s: State) -> np.ndarray:
        """``l''(a)`` per output unit (m, n_L)."""
        a = s.a[self.L]
        return self.d2l_da2(a, s.Y, frozen=self._fr(s, "d2l", a))

    def signature(self, s: State) -> tuple:
        """Which piece of every piecewise function each element sits on (unfrozen states)."""
        if s.frozen:
            return ()
        parts = []
        for l in range(1, self.L + 1):
            act = self.acts[l]
            if not act.softmax and act.f.piecewise:
                parts.append(act.f.branch(s.z[l]).tobytes())
        if self.ell.piecewise:
            parts.append(self.ell.branch(s.a[self.L], s.Y).tobytes())
        if self.l1:
            parts.extend(np.sign(W).tobytes() for W in s.W[1:])
        return tuple(parts)


#: one-sided differences of order 4: f'(0) ~ side * sum_k c_k f(side k h) / h
_ONE_SIDED = ((0, -25 / 12), (1, 4.0), (2, -3.0), (3, 4 / 3), (4, -1 / 4))


def _one_sided(fun, sig0, step: float):
    """The derivative at a kink, on the side where ``fun`` keeps the branch it takes at 0
    (ReLU at z = 0 takes its z <= 0 piece: the derivative from the left, 0, as the code's
    f'(0) = 0); None when neither side keeps it. Halves the step until two estimates agree;
    returns ``(derivative, step, error)`` (see :func:`fd`)."""

    def stencil(side, h):
        total, top = 0.0, 0.0
        for k, c in _ONE_SIDED:
            v, sig = fun(side * k * h)
            v = np.asarray(v, dtype=np.float64)
            if sig != sig0 or not np.all(np.isfinite(v)):
                return None, top
            total = total + c * v
            top = np.maximum(top, np.abs(v))
        return side * total / h, top

    for side in (-1.0, 1.0):
        h = step
        d, top = stencil(side, h)
        while d is None and h > _MIN_STEP:
            h /= 4
            d, top = stencil(side, h)
        if d is None:
            continue
        diff = None
        for _ in range(20):
            d2, top2 = stencil(side, h / 2)
            if d2 is None:
                break
            diff = np.abs(d2 - d)
            scale = float(np.max(np.abs(d2), initial=0.0))
            d, h, top = d2, h / 2, top2
            if np.max(diff, initial=0.0) <= max(1e-11 * scale, 256 * _EPS * np.max(top) / h):
                break
        return d, h, _error(diff, top, h)
    return None


def fd(fun, step: float = FD_STEP, with_error: bool = False):
    """The derivative at 0 of ``fun(t) -> (value, signature)`` by central differences of order 8.

    The step shrinks (by 4) while the signature of a stencil point differs from that at 0 (the
    stencil would straddle a kink) or a value is not finite (it left the domain, as ``a > 1``
    in ``log(1 - a)``); then it halves until two successive estimates agree to 1e-12 (relative
    to the largest) or differ by no more than rounding noise. When every stencil straddles a
    kink, the point is on one: one-sided differences on the side of its branch (see
    :func:`_one_sided`).

    Returns ``(derivative, step)``. With ``with_error`` (a reference for the verifier), each
    entry's own error is estimated, the larger of the last two estimates' difference and the
    rounding of the values at the final step (``FD_ROUNDING * eps * max|value| / step``); an
    entry whose error exceeds ``FD_ACCEPT`` of its scale (``max(|derivative|, FD_FLOOR)``) is
    NaN, not known: e.g. ``d(-log a)/da`` at ``a = 1e-20``, where no stencil that stays in the
    domain resolves the derivative. It returns ``(derivative, step, error)``, ``error`` the
    largest absolute error of the known entries.
    """
    _, sig0 = fun(0.0)

    def stencil(h):
        values = {}
        ok = True
        top = 0.0
        for k, _ in FD_WEIGHTS:
            for sgn in (1, -1):
                v, sig = fun(sgn * k * h)
                v = np.asarray(v)
                values[sgn * k] = v
                ok = ok and sig == sig0 and bool(np.all(np.isfinite(v)))
                if ok:
                    top = np.maximum(top, np.abs(v))
        return sum(c * (values[k] - values[-k]) for k, c in FD_WEIGHTS) / h, ok, top

    h = step
    d, ok, top = stencil(h)
    while not ok and h > _MIN_STEP:
        h /= 4
        d, ok, top = stencil(h)
    if not ok:  # the point itself sits on a kink: differences on the side of its branch
        one = _one_sided(fun, sig0, step)
        if one is None:  # nor does either side keep its branch inside the domain
            err = np.inf
        else:
            d, h, err = one
    else:
        diff = None
        for _ in range(12):
            d2, ok, top2 = stencil(h / 2)
            if not ok:
                break
            diff = np.abs(d2 - d)
            scale = float(np.max(np.abs(d2), initial=0.0))
            noise = 64 * _EPS * float(np.max(top2, initial=0.0)) / (h / 2)
            d, h, top = d2, h / 2, top2
            if np.max(diff, initial=0.0) <= max(1e-12 * scale, noise):
                break
        err = _error(diff, top, h)
    if not with_error:
        return d, h
    d = np.asarray(d, dtype=np.float64)
    err = np.broadcast_to(np.asarray(err, dtype=np.float64), d.shape)
    unknown = ~(err <= FD_ACCEPT * np.maximum(np.abs(d), FD_FLOOR))
    if unknown.any():
        d = np.where(unknown, np.nan, d)
    return d, h, float(np.max(err[~unknown], initial=0.0))


_EPS = float(np.finfo(np.float64).eps)
#: Rounding of a difference quotient, in units of ``eps * max|value| / step``: each value
#: carries a few units of rounding (a sum over samples and units), two enter each difference.
FD_ROUNDING = 8
#: An estimate is known where its own error is at most this share of its scale, ...
FD_ACCEPT = 1e-9
#: ... ``max(|derivative|, FD_FLOOR)`` (also the verifier's absolute floor,
#: ``verification.common.FLOOR``).
FD_FLOOR = 1e-3


def _error(diff, top, h: float):
    """Each entry's error: the last two estimates' difference (when there were two) or, if
    larger, the rounding of the values at step ``h``."""
    rounding = FD_ROUNDING * _EPS * np.asarray(top, dtype=np.float64) / h
    return rounding if diff is None else np.maximum(diff, rounding)
