"""One verification run: the random draw, the trainer, Hessians and the names the IR defines."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ...spec import Spec
from ..evaluate import IndexEvaluator, MatrixEvaluator, NotEvaluable, grid, index_ranges
from ..reference import Reference, State, fd
from .bindings import Net
from .common import HESSIAN_COLUMNS, HESSIAN_MAX, flat_params, random_batch


class Context:
    """Everything a verification run shares: spec, reference, trainer, data, direction v.

    The random parameters are the trainer's initialisation (weights at the scale of their
    scheme), with biases drawn from N(0, 0.5^2) where the scheme leaves them at zero, and each
    layer's weights and bias scaled down, in order, where a pre-activation over the batch would
    exceed ``Z_MAX`` in magnitude: a saturated unit puts the printed forms out of float64's
    reach (``log(1 - a)`` at ``a = 1 - 1e-17``, ``y/a`` at ``a = 1e-20``), while the equations
    hold for every parameter. The batch of ``batch`` samples is also the training set
    (``N = m``).
    """

    #: the largest |z| over the batch the drawn parameters may give (see the class doc)
    Z_MAX = 6.0

    def __init__(
        self, spec: Spec, derivation, seed: int, batch: int, dtype: str, tol: float, trainer=None
    ) -> None:
        from ..loader import load_trainer

        self.spec = spec
        self.derivation = derivation
        self.ref = Reference(spec)
        self.L = self.ref.L
        self.seed = seed
        self.dtype = dtype
        self.tol = tol
        self.trainer = trainer if trainer is not None else load_trainer(spec, seed, dtype)
        # a stream of its own: default_rng(seed) would repeat the trainer's initialisation, so
        # that the first inputs were the first weights (scaled) and z_1 grew with the fan-in
        self.rng = np.random.default_rng((seed, 0x5E1F))
        X, Y = random_batch(spec, batch, self.rng)
        params = self.trainer.params()
        #: whether layer l has a bias: one without keeps b_l = 0, in no flat vector
        self.bias = self.ref.bias
        W = [None] + [np.array(params[f"W_{l}"], dtype=np.float64) for l in range(1, self.L + 1)]
        b = [None] + [
            np.array(params[f"b_{l}"], dtype=np.float64)
            if self.bias[l]
            else np.zeros(W[l].shape[0])
            for l in range(1, self.L + 1)
        ]
        for l in range(1, self.L + 1):
            if self.bias[l] and not np.any(b[l]):
                b[l] = 0.5 * self.rng.standard_normal(b[l].shape)
        W0 = [None if w is None else w.copy() for w in W]
        self.state = self.ref.freeze(self._moderate(W, b, X, Y))
        for _ in range(20):  # a draw on which every unit is dead (ReLU) would check nothing
            gW, gb = self.ref.gradient(self.state)
            if any(np.any(gW[l]) or np.any(gb[l]) for l in range(1, self.L + 1)):
                break
            X, Y = random_batch(spec, batch, self.rng)
            b = [None] + [
                0.5 * self.rng.standard_normal(b[l].shape) if self.bias[l] else b[l]
                for l in range(1, self.L + 1)
            ]
            W = [None if w is None else w.copy() for w in W0]
            self.state = self.ref.freeze(self._moderate(W, b, X, Y))
        self.trainer.set_flat(flat_params(W, b, self.bias).astype(self.trainer.dtype))
        self.m = batch
        self.sizes = {nt.n(l): n for l, n in enumerate(spec.sizes)}
        self.sizes.update({nt.m: batch, nt.N: batch})
        # public flat order: W_1 (row-major), b_1, W_2, b_2, ...
        self.offsets = {}
        off = 0
        for l in range(1, self.L + 1):
            self.offsets[("w", l)] = off
            off += W[l].size
            if self.bias[l]:
                self.offsets[("b", l)] = off
                off += b[l].size
        self.P = off
        self.sizes[nt.P] = off
        self.theta0 = flat_params(W, b, self.bias)
        self.weight_mask = np.concatenate(
            [
                np.r_[np.ones(W[l].size), np.zeros(b[l].size if self.bias[l] else 0)]
                for l in range(1, self.L + 1)
            ]
        )
        #: names an equation defines (its lhs has no other value): name -> equation
        self.defined: dict = {}
        self._defining: set = set()
        self.v = self.rng.standard_normal(self.P)
        self.V = [None] + [self._block(self.v, "w", l) for l in range(1, self.L + 1)]
        self.Vb = [None] + [self._block(self.v, "b", l) for l in range(1, self.L + 1)]
        opt = spec.optimizer
        # Names bound everywhere; the optimiser's hyperparameters are bound by symbol in its
        # own rows only (see .steps).
        self.constants = {
            "lambda_2": float(spec.regularization.l2),
            "lambda_1": float(spec.regularization.l1),
            "mu": float(opt.damping),
            "eta": float(opt.learning_rate),
        }
        self._memo: dict = {}
        self.notes: set[str] = set()
        loss = getattr(derivation, "loss", None)
        self.matching = bool(getattr(loss, "matching", False))
        #: rows of the assignments (filled by verify: see .steps and .newton)
        self.update_rows: dict = {}
        self.update_defined: set = set()
        #: theta after the Newton step (before an L1 threshold), set by the newton row
        self.newton_theta: np.ndarray | None = None

    def _moderate(self, W: list, b: list, X: np.ndarray, Y: np.ndarray):
        """Scale W_l and b_l (in place, layer by layer) so that max |z_l| over the batch is at
        most ``Z_MAX``; the reference network's state at the result."""
        state = self.ref.state(W, b, X, Y)
        for l in range(1, self.L + 1):
            top = float(np.max(np.abs(state.z[l]), initial=0.0))
            if top > self.Z_MAX:
                W[l] *= self.Z_MAX / top
                b[l] *= self.Z_MAX / top
                state = self.ref.state(W, b, X, Y)
        return state

    def _block(self, flat, kind, l):
        if kind == "b" and not self.bias[l]:  # no bias: b_l (and its part of v) stays 0
            return np.zeros(self.state.b[l].shape)
        shape = self.state.W[l].shape if kind == "w" else self.state.b[l].shape
        off = self.offsets[(kind, l)]
        return np.asarray(flat[off : off + int(np.prod(shape))]).reshape(shape)

    def flat_index(self, kind: str, l: int, ids: tuple[int, ...]) -> int:
        """The public flat index of ``w_l[j, i]`` or ``b_l[j]`` (0-based ids)."""
        if kind == "w":
            return self.offsets[("w", l)] + ids[0] * self.state.W[l].shape[1] + ids[1]
        return self.offsets[("b", l)] + ids[0]

    def memo(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def weight_position(self, q: int) -> tuple[int, tuple[int, int]]:
        """Layer and (j, i) of weight ``q`` (0-based) of all weights in order (W_1, W_2, ...)."""
        for l in range(1, self.L + 1):
            size = self.state.W[l].size
            if q < size:
                return l, divmod(q, self.state.W[l].shape[1])
            q -= size
        raise IndexError(q)

    def base(self) -> Net:
        """The bindings of the base point, shared (with their memo) by every row."""
        if "_base" not in self._memo:
            self._memo["_base"] = Net(self, self.state)
        return self._memo["_base"]

    def unflatten(self, theta: np.ndarray) -> tuple[list, list]:
        """Public flat parameters -> ``W``, ``b`` lists (index 0 unused)."""
        W, b = [None], [None]
        for l in range(1, self.L + 1):
            W.append(self._block(theta, "w", l).copy())
            b.append(self._block(theta, "b", l).copy())
        return W, b

    # -- names defined by the derivation itself ------------------------------------------------
    def find_definitions(self, equations) -> None:
        """Record the equations whose left side is a name with no other value (``hd[k]``,
        ``p_v``, ``alpha``): their right side gives it, and the equations using it check it."""
        probe = self.base()
        for eq in equations:
            if not hasattr(eq, "lhs") or getattr(eq, "relation", "=") != "=":
                continue
            if eq.key.startswith(("opt.", "reg.prox")):
                continue  # the optimiser's step: see .steps
            lhs = eq.lhs
            if isinstance(lhs, sp.Indexed):
                name = lhs.base.label.name
                known = probe._indexed(name) is not None
            elif isinstance(lhs, sp.MatrixSymbol):
                name = lhs.name
                known = probe._matrix(name) is not None or name in ("G",)
            elif isinstance(lhs, sp.Symbol):
                name = lhs.name
                known = name in ("C", "C_x", "R") or name in self.constants
            else:
                continue
            if not known and name not in self.defined:
                self.defined[name] = eq
        self.update_defined = {e.key for e in self.defined.values()}

    def defined_value(self, name: str, b: Net):
        """The value of a name defined by an equation, in the bindings ``b``."""
        eq = self.defined[name]
        if name in self._defining:
            raise NotEvaluable(f"{name} is defined in terms of itself")
        self._defining.add(name)
        try:
            lhs = eq.lhs
            if isinstance(lhs, sp.Indexed):
                free = [ix for ix in lhs.indices if isinstance(ix, sp.Symbol)]
                if len(free) != len(lhs.indices):
                    raise NotEvaluable(f"{lhs}: indices that are not symbols")
                ranges = index_ranges([eq.rhs], free, b)
                pts = grid(free, ranges, 10**9, self.rng)
                vals = IndexEvaluator(b, free, pts).evaluate(eq.rhs)
                shape = [ranges[s] for s in free]
                return vals.reshape((vals.shape[0], *shape)), vals.shape[0] > 1
            value = MatrixEvaluator(b).evaluate(eq.rhs)
            if isinstance(lhs, sp.MatrixSymbol):
                return np.asarray(value)
            value = np.asarray(value, dtype=np.float64)
            if value.size != 1:
                raise NotEvaluable(f"{name} is not a scalar")
            return float(value.reshape(-1)[0])
        finally:
            self._defining.discard(name)

    # -- Hessians ------------------------------------------------------------------------------
    def hessian_matrix(self, b: Net):
        """The Hessian of the cost at ``b``'s state: differences of the chain-rule gradient up
        to HESSIAN_COLUMNS parameters, the trainer's (at the base point) up to HESSIAN_MAX."""
        if self.P <= HESSIAN_COLUMNS:
            return b._get("hessian", lambda: self.fd_hessian(b.state))
        if b.state is self.state and self.t_hessian() is not None:
            return self.t_hessian()
        raise NotEvaluable(f"the Hessian of {self.P} parameters (limit {HESSIAN_MAX})")

    def fd_hessian(self, st: State) -> np.ndarray:
        theta = flat_params(st.W, st.b, self.bias)
        cols = []
        for q in range(self.P):

            def fun(t, q=q):
                th = theta.copy()
                th[q] += t
                W, b = self.unflatten(th)
                moved = self.ref.with_params(st, W, b)
                gW, gb = self.ref.gradient(moved)
                return flat_params(gW, gb, self.bias), self.ref.signature(moved)

            cols.append(fd(fun)[0])
        H = np.stack(cols, axis=1).astype(np.float64)
        return (H + H.T) / 2

    def hessian_block(self, j: int):
        """The trainer's Hessian over ``[w_1[j, :], b_1[j]]`` (a model without hidden layers;
        ``w_1[j, :]`` alone without a bias): from ``hessian``, or from ``hvp`` columns above
        HESSIAN_MAX parameters."""
        if self.L != 1:
            return None
        n0 = self.state.W[1].shape[1]
        idx = j * n0 + np.arange(n0)
        if self.bias[1]:
            idx = np.concatenate([idx, [self.offsets[("b", 1)] + j]])
        H = self.t_hessian()
        if H is not None:
            return H[np.ix_(idx, idx)]

        def columns():
            eye = np.zeros(self.P)
            cols = []
            for q in idx:
                eye[q] = 1.0
                cols.append(self.trainer_hvp(eye)[idx])
                eye[q] = 0.0
            return np.stack(cols, axis=1)

        return self.memo(("hblock", j), columns)

    # -- the trainer ---------------------------------------------------------------------------
    def t_cache(self):
        return self.memo("cache", lambda: self.trainer._forward(self.state.X))

    def t_forward(self, stem: str, l: int) -> np.ndarray | None:
        """``z_l`` or ``a_l`` from the trainer's ``_forward`` cache [a_0, z_1, a_1, ...]; None
        for a ``z_l`` the trainer does not keep (its cache then holds ``a_l`` in that place)."""
        cache = self.t_cache()
        if l == 0:
            return cache[0]
        if stem == "a":
            return cache[2 * l]
        z, a = cache[2 * l - 1], cache[2 * l]
        if np.shares_memory(z, a):
            self.notes.add(
                f"trainer _forward returns a_{l} in the place of z_{l} (z_{l} not kept): z_{l} "
                "is compared with the reference network only"
            )
            return None
        return z

    def t_grad(self):
        return self.memo(
            "grad", lambda: np.asarray(self.trainer.gradient_flat(self.state.X, self.state.Y))
        )

    def t_loss(self):
        return self.memo("loss", lambda: float(self.trainer.loss(self.state.X, self.state.Y)))

    def t_hessian(self):
        if self.P > HESSIAN_MAX:
            return None
        return self.memo("hess", lambda: self.trainer.hessian(self.state.X, self.state.Y))

    def t_hessian_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Entries ``H[rows[k], cols[k]]`` of the trainer's Hessian: from ``hessian`` for a
        small model, else from ``hvp`` with the unit vectors of the columns needed."""
        if self.P <= HESSIAN_COLUMNS:
            return self.t_hessian()[rows, cols]
        out = np.empty(len(rows))
        for q in np.unique(cols):
            col = self.memo(
                ("hcol", int(q)),
                lambda q=q: self.trainer.hvp(self.state.X, self.state.Y, np.eye(1, self.P, q)[0]),
            )
            out[cols == q] = col[rows[cols == q]]
        return out

    def t_gauss_newton(self):
        if self.P > HESSIAN_MAX:
            return None
        return self.memo("gn", lambda: self.trainer.gauss_newton(self.state.X, self.state.Y))

    def t_hvp(self):
        return self.memo("hvp", lambda: self.trainer.hvp(self.state.X, self.state.Y, self.v))

    def trainer_hvp(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.trainer.hvp(self.state.X, self.state.Y, v), dtype=np.float64)

    def trainer_gnvp(self, v: np.ndarray) -> np.ndarray | None:
        """``G v`` from the trainer's R-operator (its private ``_rop``), where it has one."""
        import inspect

        rop = getattr(self.trainer, "_rop", None)
        if rop is None:
            return None
        args = [self.state.X, self.state.Y, np.asarray(v, float).reshape(-1, 1), True]
        if len(inspect.signature(rop).parameters) == 5:
            args.append(self.m)
        return np.asarray(rop(*args), dtype=np.float64)[:, 0]

    def t_deltas(self):
        """The trainer's per-sample deltas, where it exposes them (``_backward``)."""

        def make():
            back = getattr(self.trainer, "_backward", None)
            if back is None:
                return None
            try:
                grad = np.empty(self.P, dtype=self.trainer.dtype)
                return back(self.t_cache(), self.state.Y, grad)
            except Exception:  # a changed private signature: the FD comparison remains
                return None

        return self.memo("deltas", make)
