"""The function a generated trainer computes, rebuilt from its spec on the public parameters.

The curvature tools work on the trainer's public API only (``get_flat``, ``loss``,
``gradient_flat``, ``hvp``, ``hessian``, ``gauss_newton``); what that API does not give (per-layer
activations, the output curvature, the Jacobian of the output) is computed here from the spec by
a forward pass over the public parameter vector ``theta`` (W_1 row-major, b_1, W_2, ...). The
trainer's private caches are not used, so a change of its internals cannot change these results;
:meth:`Network.check` compares this forward pass with ``model.forward``.

Conventions (those of the derivation): per sample ``C_x = sum_j l(a_j, y_j)``,
``delta_l = dC_x / dz_l``; ``S = d delta_L / d z_L`` (the exact output curvature, ``hess.out``);
the Gauss-Newton weight ``S_G`` is ``S`` for a loss matched to its output activation and
``l''(a) f'(z)^2`` otherwise (``gauss_newton.s``). ReLU has ``f'(0) = 0``.

Curvature by the pre-activations is carried as factors: ``S_G = R diag(sign) R^T`` with ``R``
``(m, K, c)``; back-propagated, ``M_l = f'_l * (W_{l+1}^T M_{l+1})`` gives the Gauss-Newton
matrix of layer ``l``'s pre-activations ``M_l diag(sign) M_l^T`` per sample. No ``P x P``
matrix is ever formed here.

Longer than 400 lines on purpose: the forward pass, the per-sample Jacobian and Gauss-Newton
factors and their block sweeps share one layout of ``theta`` and one set of activation
derivatives; split, each part would re-state that layout.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass

import numpy as np

from ...spec import Spec, load_spec, parse_yaml

#: Samples per block in the per-sample sweeps (memory stays O(block * width^2)).
BLOCK_BYTES = 32 * 2**20


# ---------------------------------------------------------------------------------------
# Activations: f, f', f'' in z. Built-ins as stable NumPy (checked against the calculus
# layer's sympy.diff in tests/test_second_order.py); custom ones lambdified from it.


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _tanh_d(z):
    t = np.tanh(z)
    return 1.0 - t * t


def _tanh_d2(z):
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _sigmoid_d(z):
    s = _sigmoid(z)
    return s * (1.0 - s)


def _sigmoid_d2(z):
    s = _sigmoid(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _builtin(name: str, alpha: float | None):
    if name == "identity":
        return (lambda z: z, np.ones_like, np.zeros_like)
    if name == "sigmoid":
        return (_sigmoid, _sigmoid_d, _sigmoid_d2)
    if name == "tanh":
        return (np.tanh, _tanh_d, _tanh_d2)
    if name == "relu":
        return (
            lambda z: np.maximum(z, 0.0),
            lambda z: (z > 0).astype(np.float64),
            np.zeros_like,
        )
    if name == "leaky_relu":
        al = 0.01 if alpha is None else float(alpha)
        return (
            lambda z: np.where(z > 0, z, al * z),
            lambda z: np.where(z > 0, 1.0, al),
            np.zeros_like,
        )
    if name == "softplus":
        return (lambda z: np.logaddexp(0.0, z), _sigmoid, _sigmoid_d)
    if name == "elu":
        al = 1.0 if alpha is None else float(alpha)
        return (
            lambda z: np.where(z > 0, z, al * np.expm1(np.minimum(z, 0.0))),
            lambda z: np.where(z > 0, 1.0, al * np.exp(np.minimum(z, 0.0))),
            lambda z: np.where(z > 0, 0.0, al * np.exp(np.minimum(z, 0.0))),
        )
    return None


@dataclass(frozen=True)
class Activation:
    """``f``, ``f'`` and ``f''`` of one layer as NumPy functions of ``z`` (``softmax``: vector)."""

    name: str
    f: object
    df: object
    d2f: object
    softmax: bool = False


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logsumexp(z):
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[:, 0]


def activation(name: str, alpha: float | None, custom: dict[str, str]) -> Activation:
    """The activation ``name`` of a spec (built in, or a custom expression in ``z``)."""
    if name == "softmax":
        return Activation("softmax", _softmax, None, None, softmax=True)
    if name not in custom:
        fns = _builtin(name, alpha)
        if fns is not None:
            return Activation(name, *fns)
    return _lambdified_activation(name, alpha, tuple(sorted(custom.items())))


@functools.lru_cache(maxsize=64)
def _lambdified_activation(name, alpha, custom_items) -> Activation:
    from ... import calculus as C
    from ..reference import lambdify

    act = C.activation_calculus(name, dict(custom_items), alpha)
    return Activation(
        name, lambdify([C.z], act.f), lambdify([C.z], act.df), lambdify([C.z], act.d2f)
    )


# ---------------------------------------------------------------------------------------
# The output: per-sample cost, delta, exact curvature S and Gauss-Newton factor R.


class Output:
    """The loss on the output layer: ``C_x``, ``delta_L``, ``S`` and the factor of ``S_G``.

    ``likelihood`` names the probabilistic reading of ``exp(-C_x)``: ``categorical``
    (softmax + cross_entropy), ``bernoulli`` (sigmoid + log_loss), ``gaussian`` (identity + mse,
    unit variance) or ``unnormalised`` (any other pair: ``exp(-C_x)`` is then not a normalised
    density and the marginal likelihood is up to a constant).
    """

    def __init__(self, spec: Spec, act: Activation) -> None:
        self.act = act
        self.loss = spec.loss
        self.K = spec.outputs
        builtin = spec.loss not in spec.losses
        pair = (act.name, spec.loss) if builtin and act.name not in spec.activations else None
        self.likelihood = {
            ("softmax", "cross_entropy"): "categorical",
            ("sigmoid", "log_loss"): "bernoulli",
            ("identity", "mse"): "gaussian",
        }.get(pair, "unnormalised")
        self.classification = self.likelihood in ("categorical", "bernoulli")
        self._lc = None
        if self.likelihood == "unnormalised":
            self._lc = _lambdified_loss(
                spec.loss,
                tuple(sorted(spec.losses.items())),
                act.name,
                spec.layers[-1].alpha,
                tuple(sorted(spec.activations.items())),
            )

    def cost(self, z, a, Y):
        """``C_x = sum_j l_j`` per sample (m,), in the stable form."""
        lk = self.likelihood
        if lk == "categorical":
            return _logsumexp(z) * Y.sum(axis=1) - np.sum(Y * z, axis=1)
        if lk == "bernoulli":
            return np.sum(np.logaddexp(0.0, z) - Y * z, axis=1)
        if lk == "gaussian":
            return 0.5 * np.sum((a - Y) ** 2, axis=1)
        return np.sum(self._lc["cost"](z, a, Y), axis=1)

    def delta(self, z, a, Y):
        """``delta_L = dC_x / dz_L`` (m, K)."""
        if self._lc is None:
            return a - Y
        return self._lc["delta"](z, a, Y)

    def hess(self, z, a, Y):
        """The exact ``S = d delta_L / dz_L`` per sample (m, K, K)."""
        if self.likelihood == "categorical":
            return _diag(a) - a[:, :, None] * a[:, None, :]
        if self.likelihood == "bernoulli":
            return _diag(a * (1.0 - a))
        if self.likelihood == "gaussian":
            return _diag(np.ones_like(a))
        return _diag(self._lc["s"](z, a, Y))

    def ggn_factor(self, z, a, Y):
        """``R`` (m, K, c) and ``sign`` (m, c) with ``S_G = R diag(sign) R^T`` per sample."""
        if self.likelihood == "categorical":
            r = np.sqrt(a)
            return _diag(r) - a[:, :, None] * r[:, None, :], np.ones_like(a)
        if self.likelihood == "bernoulli":
            s = a * (1.0 - a)
        elif self.likelihood == "gaussian":
            s = np.ones_like(a)
        else:
            s = self._lc["sG"](z, a, Y)
        return _diag(np.sqrt(np.abs(s))), np.where(s < 0, -1.0, 1.0)


def _diag(v):
    out = np.zeros(v.shape + v.shape[-1:], dtype=v.dtype)
    idx = np.arange(v.shape[-1])
    out[..., idx, idx] = v
    return out


@functools.lru_cache(maxsize=32)
def _lambdified_loss(loss, losses, act_name, alpha, activations) -> dict:
    from ... import calculus as C
    from ..reference import lambdify

    act = C.activation_calculus(act_name, dict(activations), alpha)
    if act.vector:  # pragma: no cover - softmax pairs only with cross_entropy (the calculus)
        raise ValueError("softmax is supported with cross_entropy only")
    lc = C.loss_calculus(loss, act, dict(losses))
    if lc.matching:
        s_g = lc.s
    else:
        d2l = lc.d2l_da2.subs(C.a, act.f) if lc.delta_in_z else lc.d2l_da2
        s_g = d2l * act.df**2
    args = [C.z, C.a, C.y]
    return {
        "cost": lambdify(args, lc.ell),
        "delta": lambdify(args, lc.delta),
        "s": lambdify(args, lc.s),
        "sG": lambdify(args, s_g),
    }


# ---------------------------------------------------------------------------------------
# The spec of a trainer


_SPEC_BLOCK = re.compile(r"^Spec \(sha256 [0-9a-f]+\):\n((?:(?: {4}.*)?\n)+)", re.M)


def spec_of(model, spec: Spec | str | dict | None = None) -> Spec:
    """The spec a trainer was generated from: ``spec`` if given, else ``model.spec``, else the
    spec the generated module prints in its docstring (checked against its ``SPEC_SHA256``)."""
    if spec is None:
        spec = getattr(model, "spec", None)
    if spec is None:
        module = sys.modules.get(type(model).__module__)
        doc = getattr(module, "__doc__", None) or ""
        found = _SPEC_BLOCK.search(doc)
        if found is None:
            raise ValueError(
                f"cannot tell the spec of {type(model).__name__}: pass spec= (the model has no "
                "'spec' attribute and its module prints none)"
            )
        text = "\n".join(line[4:] for line in found.group(1).splitlines())
        spec = load_spec(parse_yaml(text))
        want = getattr(module, "SPEC_SHA256", None)
        if want is not None and spec.digest() != want:
            raise ValueError(
                f"the spec printed in {module.__name__} does not match its SPEC_SHA256"
            )
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    n = model.get_flat().size
    if spec.n_params != n or spec.inputs != getattr(model, "n_inputs", spec.inputs):
        raise ValueError(
            f"the spec {spec.name!r} has {spec.n_params} parameters and {spec.inputs} inputs; "
            f"the model has {n} parameters"
        )
    return spec


# ---------------------------------------------------------------------------------------
# The network


@dataclass(frozen=True)
class Layer:
    """One dense layer: where ``W_l`` (units, fan_in) and ``b_l`` sit in the public vector."""

    units: int
    fan_in: int
    w: slice
    b: slice
    act: Activation


@dataclass
class Sweep:
    """A forward pass over a block of samples: ``a[0] = X``, ``z[l]``, ``a[l]`` (index 0 of
    ``z`` unused) and the parameters ``W[l]``, ``b[l]`` (views of ``theta``)."""

    W: list
    b: list
    z: list
    a: list


class Network:
    """The trainer's function on the public parameter vector (see the module docstring)."""

    def __init__(self, model, spec: Spec | str | dict | None = None) -> None:
        spec = spec_of(model, spec)
        if spec.is_graph:
            raise ValueError(
                f"the curvature tools need a chain of layers; {spec.name!r} has skip connections"
            )
        without = [l for l, layer in enumerate(spec.layers, start=1) if not layer.bias]
        if without:
            raise ValueError(
                f"the curvature tools need a bias on every layer; layer {without[0]} of "
                f"{spec.name!r} has bias: false"
            )
        self.spec = spec
        self.sizes = list(spec.sizes)
        self.L = len(spec.layers)
        self.layers: list[Layer] = []
        offset = 0
        for l, layer in enumerate(spec.layers, start=1):
            u, f = self.sizes[l], self.sizes[l - 1]
            w = slice(offset, offset + u * f)
            b = slice(w.stop, w.stop + u)
            offset = b.stop
            act = activation(layer.activation, layer.alpha, spec.activations)
            self.layers.append(Layer(u, f, w, b, act))
        self.P = offset
        self.K = self.sizes[-1]
        self.output = Output(spec, self.layers[-1].act)
        mask = np.zeros(self.P, dtype=bool)
        for layer in self.layers:
            mask[layer.w] = True
        self.weight_mask = mask
        self.n_weights = int(mask.sum())

    # -- parameters and forward pass ---------------------------------------------------------
    def blocks(self) -> list[tuple[str, slice]]:
        """The parameter tensors in public order: ``[("W_1", slice), ("b_1", slice), ...]``."""
        out = []
        for l, layer in enumerate(self.layers, start=1):
            out += [(f"W_{l}", layer.w), (f"b_{l}", layer.b)]
        return out

    def unpack(self, theta: np.ndarray) -> tuple[list, list]:
        """``W[l]`` (units, fan_in) and ``b[l]`` as views of ``theta`` (index 0 unused)."""
        W, b = [None], [None]
        for layer in self.layers:
            W.append(theta[layer.w].reshape(layer.units, layer.fan_in))
            b.append(theta[layer.b])
        return W, b

    def forward(self, theta: np.ndarray, X: np.ndarray) -> Sweep:
        """The forward pass in float64 on ``X`` (m, inputs)."""
        W, b = self.unpack(np.asarray(theta, dtype=np.float64))
        a = [np.asarray(X, dtype=np.float64)]
        z = [None]
        for l, layer in enumerate(self.layers, start=1):
            zl = a[-1] @ W[l].T + b[l]
            z.append(zl)
            a.append(layer.act.f(zl))
        return Sweep(W, b, z, a)

    def check(self, model, theta: np.ndarray, X: np.ndarray, rtol: float = 1e-6) -> None:
        """Raise if this forward pass and ``model.forward`` disagree on ``X[:64]``."""
        X = np.asarray(X)[:64]
        mine = self.forward(theta, X).a[-1]
        theirs = np.asarray(model.forward(X), dtype=np.float64)
        scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
        err = float(np.max(np.abs(mine - theirs), initial=0.0))
        if err > rtol * scale:
            raise RuntimeError(
                f"the curvature tools' forward pass differs from {type(model).__name__}.forward "
                f"by {err:.3g}: the spec does not describe this model"
            )

    def block_size(self, square: int = 0) -> int:
        """Samples per block so that the per-sample arrays of a sweep fit in BLOCK_BYTES: the
        activations, a few (width, K) factors and, for ``square`` > 0, (square, square) ones."""
        widest = max(self.sizes[1:])
        per = 8 * (3 * sum(self.sizes) + 4 * widest * self.K + 4 * square * square)
        return max(1, BLOCK_BYTES // per)

    # -- per-sample backward sweeps ----------------------------------------------------------
    def deltas(self, s: Sweep, Y: np.ndarray) -> list:
        """``delta_l = dC_x / dz_l`` per sample (index 0 unused)."""
        L = self.L
        d = [None] * (L + 1)
        d[L] = self.output.delta(s.z[L], s.a[L], Y)
        for l in range(L - 1, 0, -1):
            d[l] = self.layers[l - 1].act.df(s.z[l]) * (d[l + 1] @ s.W[l + 1])
        return d

    def back_factors(self, s: Sweep, R: np.ndarray) -> list:
        """``M_l`` (m, units_l, c) for every layer, from ``M_L = R`` (m, K, c) by
        ``M_l = f'_l(z_l) * (W_{l+1}^T M_{l+1})`` (index 0 unused)."""
        L = self.L
        M = [None] * (L + 1)
        M[L] = R
        for l in range(L - 1, 0, -1):
            fp = self.layers[l - 1].act.df(s.z[l])
            M[l] = fp[:, :, None] * np.matmul(s.W[l + 1].T, M[l + 1])
        return M

    def ggn_factors(self, s: Sweep, Y: np.ndarray) -> tuple[list, np.ndarray]:
        """``M_l`` and ``sign``: the Gauss-Newton matrix by ``z_l`` is ``M_l diag(sign) M_l^T``."""
        R, sign = self.output.ggn_factor(s.z[self.L], s.a[self.L], Y)
        return self.back_factors(s, R), sign

    def jacobian_factors(self, s: Sweep) -> list:
        """``M_l = d z_L / d z_l`` transposed, (m, units_l, K): the Jacobian of the output's
        pre-activation by layer l's is ``M_l^T``; by ``W_l`` it is ``M_l[:, i, k] a_{l-1}[j]``."""
        m = s.a[0].shape[0]
        eye = np.broadcast_to(np.eye(self.K), (m, self.K, self.K))
        return self.back_factors(s, eye)

    def hessian_by_z(self, s: Sweep, Y: np.ndarray) -> list:
        """The exact Hessian of ``C_x`` by each layer's pre-activations, (m, u_l, u_l):
        ``H_L = S``, ``H_l = D W^T H_{l+1} W D + diag(f''_l(z_l) * (delta_{l+1} W_{l+1}))``
        with ``D = diag(f'_l(z_l))`` (index 0 unused)."""
        L = self.L
        d = self.deltas(s, Y)
        H = [None] * (L + 1)
        H[L] = self.output.hess(s.z[L], s.a[L], Y)
        for l in range(L - 1, 0, -1):
            act = self.layers[l - 1].act
            fp = act.df(s.z[l])
            W = s.W[l + 1]
            inner = np.matmul(np.matmul(W.T, H[l + 1]), W)
            Hl = fp[:, :, None] * inner * fp[:, None, :]
            idx = np.arange(fp.shape[1])
            Hl[:, idx, idx] += act.d2f(s.z[l]) * (d[l + 1] @ W)
            H[l] = Hl
        return H

    def jacobian(self, s: Sweep) -> np.ndarray:
        """``d z_L / d theta`` per sample (m, K, P), public order (small blocks only)."""
        M = self.jacobian_factors(s)
        m = s.a[0].shape[0]
        J = np.empty((m, self.K, self.P))
        for l, layer in enumerate(self.layers, start=1):
            Ml = M[l].transpose(0, 2, 1)  # (m, K, u)
            J[:, :, layer.w] = (Ml[:, :, :, None] * s.a[l - 1][:, None, None, :]).reshape(
                m, self.K, -1
            )
            J[:, :, layer.b] = Ml
        return J

    def ggn_vp(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, v: np.ndarray):
        """``G v`` of the summed data term ``sum_x C_x`` (no regulariser), once."""
        return self.curvature_operator(theta, X, Y, exact=False)(v)

    def curvature_operator(self, theta, X, Y, exact: bool = True):
        """``v -> H v`` (``exact``) or ``v -> G v`` of the summed data term ``sum_x C_x``.

        The R-operator (Pearlmutter 1994) with the forward pass, the deltas, ``f'``, ``f''``
        and the output curvature computed once: each product is one forward sweep of
        ``R{z_l}`` and one backward sweep of ``R{delta_l}`` (for ``G`` without the ``f''`` and
        ``delta V`` terms, and with ``S_G`` at the output).
        """
        s = self.forward(theta, X)
        L = self.L
        fp = [None] + [self.layers[l - 1].act.df(s.z[l]) for l in range(1, L)]
        if exact:
            d = self.deltas(s, Y)
            fpp = [None] + [self.layers[l - 1].act.d2f(s.z[l]) for l in range(1, L)]
            back = [None] + [d[l + 1] @ s.W[l + 1] for l in range(1, L)]
            S = self.output.hess(s.z[L], s.a[L], Y)
        else:
            R, sign = self.output.ggn_factor(s.z[L], s.a[L], Y)
            S = np.einsum("mkc,mc,mlc->mkl", R, sign, R)

        def apply(v):
            V, vb = self.unpack(np.asarray(v, dtype=np.float64).ravel())
            Rz = [None] * (L + 1)
            Ra = [None] * (L + 1)
            for l in range(1, L + 1):
                Rz[l] = s.a[l - 1] @ V[l].T + vb[l]
                if l > 1:
                    Rz[l] += Ra[l - 1] @ s.W[l].T
                if l < L:
                    Ra[l] = fp[l] * Rz[l]
            Rd = np.einsum("mkl,ml->mk", S, Rz[L])
            out = np.empty(self.P)
            for l in range(L, 0, -1):
                layer = self.layers[l - 1]
                gW = Rd.T @ s.a[l - 1]
                if exact and l > 1:
                    gW += d[l].T @ Ra[l - 1]
                out[layer.w] = gW.ravel()
                out[layer.b] = Rd.sum(axis=0)
                if l > 1:
                    Rback = Rd @ s.W[l]
                    if exact:
                        Rback += d[l] @ V[l]
                        Rd = fp[l - 1] * Rback + fpp[l - 1] * Rz[l - 1] * back[l - 1]
                    else:
                        Rd = fp[l - 1] * Rback
            return out

        return apply

    def ggn_dense_sum(self, theta, X, Y) -> np.ndarray:
        """The Gauss-Newton matrix of ``sum_x C_x`` (P, P) as ``F^T diag(sign) F`` with the rows
        of ``F`` the back-propagated columns of ``S_G``'s factor (``J^T R``): one GEMM per block
        of samples, ``F`` held 64 MiB at a time."""
        G = np.zeros((self.P, self.P))
        n = X.shape[0]
        step = max(1, (64 * 2**20) // (8 * self.P * self.K))
        for lo in range(0, n, step):
            s = self.forward(theta, X[lo : lo + step])
            M, sign = self.ggn_factors(s, Y[lo : lo + step])
            m, c = sign.shape
            F = np.empty((m, c, self.P))
            for l, layer in enumerate(self.layers, start=1):
                Mt = M[l].transpose(0, 2, 1)  # (m, c, units)
                F[:, :, layer.w] = (Mt[:, :, :, None] * s.a[l - 1][:, None, None, :]).reshape(
                    m, c, -1
                )
                F[:, :, layer.b] = Mt
            F = F.reshape(m * c, self.P)
            G += F.T @ (F * sign.reshape(-1, 1))
        return G
