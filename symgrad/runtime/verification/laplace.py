"""Rows of the Laplace approximation's equations (:mod:`symgrad.derivation.laplace`).

At the verifier's random parameters and batch (N = m samples), with a prior precision delta that
differs per parameter and makes Lambda positive definite, each equation's right side is
evaluated from the trainer (``hessian``, ``loss``), the reference network and finite
differences, and
compared with :func:`symgrad.runtime.curvature.laplace` (structure ``full``):

- ``laplace.precision``: N H - lambda_2 I_w + D_delta (H the trainer's Hessian, and also the
  reference network's by differences of its gradient) against the posterior precision;
- ``laplace.covariance``: the inverse of the printed precision against the posterior covariance;
- ``laplace.glm``: X~^T S X~ + D_delta (S from the reference's output curvature);
- ``laplace.se``, ``laplace.z``: from the printed covariance, against ``standard_errors`` and
  ``z_scores``;
- ``laplace.predictive``: J* Sigma J*^T with J* = dz^(L)/dtheta by differences of the reference
  network's forward pass at three new inputs, against ``functional_variance``;
- ``laplace.kappa``, ``laplace.probit``: against ``predict``;
- ``laplace.evidence``: against ``log_marginal_likelihood``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ..reference import fd
from .compare import compare
from .report import Row

if TYPE_CHECKING:
    from .context import Context


class _Posterior:
    """The numbers every Laplace row reads (computed once per verification)."""

    def __init__(self, ctx: Context) -> None:
        from ..curvature import laplace

        self.ctx = ctx
        st, model = ctx.state, ctx.trainer
        self.X = np.asarray(st.X, dtype=np.float64)
        self.Y = np.asarray(st.Y, dtype=np.float64)
        self.N = N = len(self.X)
        self.l2 = float(model.l2)
        self.theta = np.asarray(model.get_flat(), dtype=np.float64)
        P = self.theta.size
        self.Iw = np.diag(ctx.weight_mask.astype(np.float64))
        self.H = np.asarray(ctx.t_hessian(), dtype=np.float64)  # shared with the Hessian rows
        # the reference's Hessian by differences, shared with the Hessian rows (their memo)
        self.H_fd = ctx.hessian_matrix(ctx.base())
        summed = N * self.H - self.l2 * self.Iw
        low = float(np.linalg.eigvalsh((summed + summed.T) / 2)[0])
        # a prior that differs per parameter (a mix-up shows) and makes Lambda positive definite
        self.delta = max(1.0, 2.0 * abs(low)) * (1.0 + np.arange(P) / P)
        self.D = np.diag(self.delta)
        self.lap = laplace(model, self.X, self.Y, prior_precision=self.delta, structure="full")
        self.X_new = ctx.rng.standard_normal((3, self.X.shape[1]))

    def outputs(self, x: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """z^(L) (K,) of the reference network at one input."""
        ctx = self.ctx
        W, b = ctx.unflatten(self.theta if theta is None else theta)
        y = np.zeros((1, self.Y.shape[1]))
        return np.asarray(ctx.ref.state(W, b, x[None, :], y).z[ctx.L], dtype=np.float64)[0]

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """dz^(L)/dtheta (K, P) at one input, by differences of the reference network."""
        cols = []
        for q in range(self.theta.size):

            def fun(t, q=q):
                th = self.theta.copy()
                th[q] += t
                return self.outputs(x, th), ()

            cols.append(fd(fun)[0])
        return np.stack(cols, axis=1)

    def log_likelihood(self) -> float:
        """log p(D | theta) as the derivation states it: minus the summed per-sample cost (the
        trainer's loss times N without its penalty), minus N K log sqrt(2 pi) for mse."""
        ctx, model = self.ctx, self.ctx.trainer
        w = ctx.weight_mask * self.theta
        penalty = 0.5 * self.l2 * float(w @ w) + float(model.l1) * float(np.abs(w).sum())
        total = self.N * float(model.loss(self.X, self.Y)) - penalty
        out = -total
        if self.lap.likelihood == "gaussian":
            out -= self.N * self.Y.shape[1] * math.log(math.sqrt(2 * math.pi))
        return out


class _Eval:
    """A NumPy value of a SymPy expression of the Laplace section: matrix symbols and scalars
    from ``env`` (by name), indexed names over every value of their index (one array axis per
    index, a ``Sum`` adding along its own), the matrix algebra (sums, products, transposes,
    inverses, log-determinants) by NumPy."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.axes: dict[sp.Symbol, int] = {}

    def _index(self, i) -> np.ndarray:
        if i not in self.axes:
            raise KeyError(f"index {i} is not bound")
        axis, n = self.axes[i], self.sizes[i]
        shape = [1] * (max(self.axes.values()) + 1)
        shape[axis] = n
        return np.arange(n).reshape(shape)

    def __call__(self, e, sizes: dict | None = None):
        self.sizes = dict(sizes or {})
        for i in self.sizes:
            self.axes.setdefault(i, len(self.axes))
        return self.ev(e)

    def ev(self, e):  # noqa: C901 - one branch per kind of node
        if isinstance(e, sp.MatrixSymbol) or (isinstance(e, sp.Symbol) and e.name in self.env):
            return self.env[e.name]
        if isinstance(e, sp.Indexed):
            base = self.env[e.base.label.name]
            ids = [self._index(i) for i in e.indices]
            return np.asarray(base)[tuple(np.broadcast_arrays(*ids))]
        if e is sp.pi:
            return math.pi
        if isinstance(e, sp.Number):
            return float(e)
        if isinstance(e, sp.MatAdd):
            return sum(self.ev(a) for a in e.args)
        if isinstance(e, sp.MatMul):
            out = 1.0
            for a in e.args:
                v = self.ev(a)
                is_matrix = np.ndim(v) == 2 and getattr(a, "is_Matrix", False)
                out = out @ v if (np.ndim(out) == 2 and is_matrix) else out * v
            return out
        if isinstance(e, sp.Transpose):
            return self.ev(e.arg).T
        if isinstance(e, sp.Inverse):
            return np.linalg.inv(self.ev(e.arg))
        if isinstance(e, sp.log) and isinstance(e.args[0], sp.Determinant):
            sign, logdet = np.linalg.slogdet(self.ev(e.args[0].arg))
            return logdet if sign > 0 else math.nan
        if isinstance(e, sp.KroneckerProduct):
            out = self.ev(e.args[0])
            for a in e.args[1:]:
                out = np.kron(out, self.ev(a))
            return out
        if type(e).__name__ == "SampleSum":
            return sum(_Eval({**self.env, **one}).ev(e.args[0]) for one in self.env["samples"])
        if isinstance(e, sp.Sum):
            return self._sum(e.function, list(e.limits))
        if isinstance(e, sp.Add):
            return sum(self.ev(a) for a in e.args)
        if isinstance(e, sp.Mul):
            out = 1.0
            for a in e.args:
                out = out * self.ev(a)
            return out
        if isinstance(e, sp.Pow):
            return np.power(self.ev(e.base), float(e.exp))
        if isinstance(e, sp.exp):
            return np.exp(self.ev(e.args[0]))
        if isinstance(e, sp.log):
            return np.log(self.ev(e.args[0]))
        raise KeyError(f"cannot evaluate {type(e).__name__}: {e}")

    def _sum(self, body, limits):
        """``body`` summed over ``limits`` (innermost first, as SymPy keeps them): over the
        samples with each one's values, over an index along an axis of its own."""
        if not limits:
            return self.ev(body)
        (i, lo, hi) = limits[-1]
        inner = limits[:-1]
        if i.name == "sample":
            total = 0.0
            for one in self.env["samples"]:
                ev = _Eval({**self.env, **one})
                ev.axes, ev.sizes = dict(self.axes), dict(self.sizes)
                total = total + ev._sum(body, inner)
            return total
        self.sizes[i] = int(self.ev(hi)) - int(lo) + 1
        self.axes[i] = max(self.axes.values(), default=-1) + 1
        value = np.asarray(self._sum(body, inner), dtype=np.float64)
        axis = self.axes.pop(i)
        value = value.reshape(value.shape + (1,) * (axis + 1 - value.ndim))
        return value.sum(axis=axis, keepdims=True)


def _flat(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(-1)


def laplace_rows(ctx: Context, eq) -> list[Row]:
    """The row of one equation of the Laplace section: its right side evaluated from the
    trainer and the reference network, against the runtime's Laplace approximation."""
    from ...derivation import laplace as lp
    from ...derivation import notation as nt

    post: _Posterior = ctx.memo("laplace", lambda: _Posterior(ctx))
    key, lap = eq.key, post.lap
    P = post.theta.size
    env = {
        nt.N.name: float(post.N),
        nt.P.name: float(P),
        nt.lambda_2.name: post.l2,
        nt.H.name: post.H,
        nt.I_w.name: post.Iw,
        lp.D_delta.name: post.D,
        lp.dprior.label.name: post.delta,
        lp.theta.label.name: post.theta,
        nt.theta_v.name: post.theta[:, None],
        **{w.name: float(n) for w, n in ctx.derivation.widths.items()},
    }
    against = "laplace(structure='full')"
    try:
        # the printed precision and covariance give Lambda and Sigma to the later equations
        printed = ctx.derivation
        env[lp.Lambda.name] = _Eval(env)(printed.equation("laplace.precision").rhs)
        env[lp.Sigma.name] = _Eval(env)(printed.equation("laplace.covariance").rhs)
        if key in ("laplace.precision", "laplace.glm"):
            want = lap.posterior_precision()
            if key == "laplace.glm":
                s = ctx.base().s_out()  # (m, 1): the output curvature of each sample
                env[lp.Xt_N.name] = np.hstack([post.X, np.ones((post.N, 1))])
                env[lp.S_N.name] = np.diag(s[:, 0])
            pairs = [("rhs", _Eval(env)(eq.rhs), against, want)]
            if key == "laplace.precision":  # and with the reference's Hessian by differences
                got = _Eval({**env, nt.H.name: post.H_fd})(eq.rhs)
                pairs.append(("rhs, H by FD", got, against, want))
        elif key == "laplace.covariance":
            pairs = [("rhs", _Eval(env)(eq.rhs), against, lap.posterior_covariance())]
        elif key in ("laplace.se", "laplace.z"):
            env[lp.se.label.name] = np.sqrt(np.diag(env[lp.Sigma.name]))
            got = _flat(_Eval(env)(eq.rhs, {lp.p_index: P}))
            want = lap.standard_errors() if key == "laplace.se" else lap.z_scores()
            pairs = [
                ("rhs", got, "standard_errors()" if key == "laplace.se" else "z_scores()", want)
            ]
        elif key in ("laplace.predictive", "laplace.kappa", "laplace.probit"):
            f_mu, f_var = lap.functional_variance(post.X_new)
            K = f_mu.shape[1]
            got, want = [], []
            probs = lap.predict(post.X_new) if key == "laplace.probit" else None
            d = ctx.derivation  # the printed V* and kappa feed the later rows
            sandwich = d.equation("laplace.predictive").rhs
            kappa_rhs = d.equation("laplace.kappa").rhs if "laplace.kappa" in d else None
            for n, x in enumerate(post.X_new):
                J = post.jacobian(x)
                v = np.diagonal(_Eval({**env, lp.J_star.name: J})(sandwich))
                kappa = None
                if kappa_rhs is not None:
                    kappa = _flat(_Eval({**env, lp.v_f.label.name: v})(kappa_rhs, {nt.k: K}))
                if key == "laplace.predictive":
                    got.append(_Eval({**env, lp.J_star.name: J})(eq.rhs))
                    want.append(f_var[n])
                elif key == "laplace.kappa":
                    got.append(_flat(_Eval({**env, lp.v_f.label.name: v})(eq.rhs, {nt.k: K})))
                    want.append(1.0 / np.sqrt(1.0 + math.pi / 8.0 * np.diagonal(f_var[n])))
                else:
                    local = {**env, lp.kappa.label.name: kappa, lp.mu.label.name: post.outputs(x)}
                    got.append(_flat(_Eval(local)(eq.rhs, {nt.k: K})))
                    want.append(probs[n])
            label = {
                "laplace.predictive": "functional_variance()",
                "laplace.kappa": "functional_variance()",
                "laplace.probit": "predict()",
            }[key]
            pairs = [("rhs", np.stack(got), label, np.stack(want))]
        elif key == "laplace.evidence":
            env[lp.log_lik.name] = post.log_likelihood()
            got = _flat(_Eval(env)(eq.rhs))
            want = np.array([lap.log_marginal_likelihood()])
            pairs = [("rhs", got, "log_marginal_likelihood()", want)]
        else:
            return [Row(key, "matrix", "FAIL", note="not evaluable: no Laplace row for this key")]
    except (KeyError, ValueError, np.linalg.LinAlgError) as exc:
        return [Row(key, "matrix", "FAIL", note=f"not evaluable: {exc}")]
    return [compare(ctx, key, "matrix", pairs)]


def structured_rows(ctx: Context, eq) -> list[Row]:
    """The row of one K-FAC or Gauss-Newton-diagonal equation: its right side evaluated from the
    reference network (z, a, f'), the parameters and the output factor R_x, against the
    runtime's K-FAC factors and diagonal and the trainer's Gauss-Newton matrix."""
    from ...derivation import notation as nt
    from ..curvature import Network, diag_gauss_newton, kfac_factors

    def make():
        st, model = ctx.state, ctx.trainer
        X = np.asarray(st.X, dtype=np.float64)
        Y = np.asarray(st.Y, dtype=np.float64)
        net = Network(model)
        theta = np.asarray(model.get_flat(), dtype=np.float64)
        sweep = net.forward(theta, X)
        M, sign = net.ggn_factors(sweep, Y)
        L = ctx.L
        env = {
            nt.N.name: float(len(X)),
            nt.lambda_2.name: float(model.l2),
            "c": float(M[L].shape[2]),
            **{w.name: float(n) for w, n in ctx.derivation.widths.items()},
            "X": X,
        }
        for l in range(1, L + 1):
            env[f"W_{l}"] = np.asarray(st.W[l], dtype=np.float64)
            env[f"A_{l}"] = np.asarray(st.a[l], dtype=np.float64)
        samples = []
        for x in range(len(X)):
            one = {"R_x": M[L][x], "Sign_x": np.diag(sign[x]), "x": X[x]}
            # the factors of the layers the B and diagonal equations read (their own rows
            # check the recursion that gives them)
            one.update({f"M_{k}_x": M[k][x] for k in range(1, L + 1)})
            for l in range(1, L + 1):
                if l < L:
                    fp = ctx.ref.acts[l].df(np.asarray(st.z[l], dtype=np.float64)[x])
                    one[f"Fd_{l}_x"] = np.diag(fp)
                one[f"a_{l}"] = np.asarray(st.a[l], dtype=np.float64)[x]
            samples.append(one)
        env["samples"] = samples
        return env, M, kfac_factors(model, X, Y), diag_gauss_newton(model, X, Y)

    env, M, factors, diag_rt = ctx.memo("structured", make)
    key, parts = eq.key, eq.key.split(".")
    l = int(parts[-1])
    sizes = {nt.j: int(env[nt.n(l).name])}
    try:
        if parts[:2] == ["kfac", "M"]:
            # the recursion from the printed M of the layer above, sample by sample
            got, want = [], []
            for x, one in enumerate(env["samples"]):
                local = {k: v for k, v in one.items() if k != f"M_{l}_x"}
                got.append(_Eval({**env, **local})(eq.rhs))
                want.append(M[l][x])
            pairs = [("rhs", np.stack(got), "Network.ggn_factors", np.stack(want))]
        elif parts[:2] == ["kfac", "A"]:
            pairs = [("rhs", _Eval(env)(eq.rhs), "kfac_factors().A", factors[l - 1].A)]
        elif parts[:2] in (["kfac", "B"], ["kfac", "block"], ["diag", "W"], ["diag", "b"]):
            w, b = ctx.offsets[("w", l)], ctx.offsets[("b", l)]
            nw = int(env[nt.n(l).name]) * int(env[nt.n(l - 1).name])
            nb = int(env[nt.n(l).name])
            if parts[0] == "kfac" and parts[1] == "B":
                got = _Eval(env)(eq.rhs)
                bias = np.arange(b, b + nb)
                block = _gn_columns(ctx, bias)[bias]
                pairs = [
                    ("rhs", got, "kfac_factors().B", factors[l - 1].B),
                    ("rhs", got, "trainer Gauss-Newton b block", block),
                ]
            elif parts[1] == "block":
                pairs = [_kron_pair(eq.rhs, env, factors[l - 1], l, ctx.derivation, ctx.rng)]
            else:
                if parts[1] == "W":
                    sizes[nt.i] = int(env[nt.n(l - 1).name])
                    lo, count = w, nw
                else:
                    lo, count = b, nb
                got = _flat(_Eval(env)(eq.rhs, sizes))
                picked = np.arange(count)
                if count > _COLUMNS:  # a sample of the entries for a wide layer
                    picked = np.sort(ctx.rng.choice(count, _COLUMNS, replace=False))
                cols = lo + picked
                diag = _gn_columns(ctx, cols)[cols, np.arange(len(cols))]
                pairs = [
                    ("rhs", got[picked], "trainer Gauss-Newton diagonal", diag),
                    ("rhs", got, "diag_gauss_newton()", diag_rt[lo : lo + count]),
                ]
        else:
            return [Row(key, "matrix", "FAIL", note="not evaluable: no row for this key")]
    except (KeyError, ValueError, np.linalg.LinAlgError) as exc:
        return [Row(key, "matrix", "FAIL", note=f"not evaluable: {exc}")]
    return [compare(ctx, key, "matrix", pairs)]


#: the most Gauss-Newton columns a diagonal row takes from the trainer (a sample above)
_COLUMNS = 60
#: the largest Kronecker block formed whole; entries are sampled above
_KRON_ENTRIES = 4_000_000


def _gn_columns(ctx: Context, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` of the trainer's Gauss-Newton matrix (P, len(cols)), from its
    R-operator sweep with the unit vectors (public order, as ``hvp``)."""
    import inspect

    model, st = ctx.trainer, ctx.state
    P = model.get_flat().size
    V = np.zeros((P, len(cols)), dtype=model.dtype)
    V[cols, np.arange(len(cols))] = 1.0
    args = [st.X, st.Y, V, True]
    if len(inspect.signature(model._rop).parameters) == 5:
        args.append(len(st.X))
    return np.asarray(model._rop(*args), dtype=np.float64)


def _kron_pair(rhs, env: dict, factors, l: int, d, rng):
    """The printed block (the product of the printed factors, in the printed order) against
    ``kron(B, A)`` of the runtime's K-FAC factors: whole when small, else at 4,000 sampled
    entries (the order, B outer, is what a mix-up would change)."""
    if not isinstance(rhs, sp.KroneckerProduct) or len(rhs.args) != 2:
        raise ValueError(f"the K-FAC block is not a Kronecker product of two factors: {rhs}")
    printed = {
        f"KA_{l}": _Eval(env)(d.equation(f"kfac.A.{l}").rhs),
        f"KB_{l}": _Eval(env)(d.equation(f"kfac.B.{l}").rhs),
    }
    first, second = (np.asarray(printed[a.name]) for a in rhs.args)
    outer, inner = np.asarray(factors.B), np.asarray(factors.A)
    label = "kron(B, A) of kfac_factors()"
    if first.size * second.size <= _KRON_ENTRIES and outer.size * inner.size <= _KRON_ENTRIES:
        return ("rhs", np.kron(first, second), label, np.kron(outer, inner))
    n = outer.shape[0] * inner.shape[0]
    r, c = rng.integers(0, n, 4000), rng.integers(0, n, 4000)

    def entries(F, S):
        k = S.shape[0]
        return F[r // k, c // k] * S[r % k, c % k] if F.shape[0] * k == n else np.full(4000, np.nan)

    return ("rhs", entries(first, second), label + ", sampled entries", entries(outer, inner))
