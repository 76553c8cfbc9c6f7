"""The IR's names bound to the reference network of one state (see :class:`Net`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from ..evaluate import Bindings, NotEvaluable
from ..reference import State, fd, lambdify
from .common import flat_params, split_name
from .exact import exact_derivative

if TYPE_CHECKING:
    from .context import Context


#: the diagonal matrices of the softmax closed form (``Sdiagd_k``...): the kernels of
#: ``S = diag(d) + u v^T`` (hess.out.diag, .u, .v) they hold
_SOFTMAX_PARTS = {"Sdiagd": "hd", "Sdiagu": "hu", "Sdiagv": "hv"}
#: the unit columns of the one-hidden-layer blocks (``e1_j``, ``et1_j``: see nt.unit)
_UNIT = nt.UNIT_NAME


class Net(Bindings):
    """The IR's names bound to the reference network in ``state``.

    Values of ``delta_l``, ``s_L``, ``R{z_l}``... come from the chain rule of the reference and
    from differences of it. ``at_sample`` selects one sample for the per-sample matrices of a
    ``SampleSum`` (``Jz_x``, ``Ss_x``, ``gradC_x``...); ``at_unit`` one output unit for the
    matrices named ``..._j`` of the closed-form Hessian blocks. ``sizes`` overrides the integer
    symbols (``m`` for a batch smaller than the training set).
    """

    def __init__(
        self, ctx: Context, state: State, scalars: dict | None = None, sizes: dict | None = None
    ) -> None:
        self.ctx = ctx
        self.state = state
        self.m = len(state.X)
        self.sizes = {**ctx.sizes, **(sizes or {})}
        self.sample = nt.sample
        self._scalars = dict(scalars or {})
        self._memo: dict = {}
        self._at: int | None = None
        self._unit: int | None = None
        self._pair: tuple[int, int] | None = None

    def _get(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _view(self) -> Net:
        """A copy sharing the memo (same state)."""
        view = type(self).__new__(type(self))
        view.__dict__.update(self.__dict__)
        return view

    def at_sample(self, x: int) -> Net:
        view = self._view()
        view._at = x
        return view

    def at_unit(self, j: int) -> Net:
        view = self._view()
        view._unit = j
        return view

    def at_pair(self, k: int, j: int) -> Net:
        """Output units k (rows) and j (columns) for the matrices named ``..._k``, ``..._j``
        and ``..._kj`` of the softmax closed form's blocks; the index symbols k and j take
        their (1-based) values."""
        view = self.at_unit(j)
        view._pair = (k, j)
        view._scalars = {**self._scalars, "k": k + 1, "j": j + 1}
        return view

    def at_block(self, name: str, a: int, b: int) -> Net:
        """The block ``name`` (``H11_jq``, ``H12_jk``, ``H22_kp``) of the one-hidden-layer
        Hessian for units a (rows) and b (columns) (0-based): the index symbols of its name take
        their (1-based) values, the unit columns ``e1_j``... pick those units."""
        view = self._view()
        idx = name.rsplit("_", 1)[1]
        view._block = (name, a, b)
        view._scalars = {**self._scalars, idx[0]: a + 1, idx[1]: b + 1}
        return view

    def _block_matrix(self, name: str):
        """``At_1 = [A_1, 1]``; with ``at_block``: the unit columns ``e1_j``, ``et1_j``... and
        the block ``H11_jq``... of the Hessian (the reference's, differences of the gradient, up
        to HESSIAN_COLUMNS parameters; the trainer's above, from ``hvp`` columns above
        HESSIAN_MAX)."""
        st = self.state
        if name == "At_1":
            return np.hstack([st.a[1], np.ones((self.m, 1))])
        block = getattr(self, "_block", None)
        if block is None:
            return None
        found = _UNIT.fullmatch(name)
        if found:
            tilde, l, idx = found.group(1), int(found.group(2)), found.group(3)
            pos = self._scalars.get(idx)
            if pos is None:
                return None
            size = st.a[l].shape[1] + (1 if tilde else 0)
            return np.eye(size)[:, pos - 1 : pos]
        if name == block[0]:
            try:
                H = self.ctx.hessian_matrix(self)
            except NotEvaluable:  # above HESSIAN_MAX: the trainer's block, from hvp columns
                found = self.trainer_block()
                if found is None:
                    raise
                return found
            rows, cols = self.block_params(*block)
            return H[np.ix_(rows, cols)]
        return None

    def block_params(self, name: str, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The flat indices of the rows (unit a) and columns (unit b) of the block ``name``:
        ``[w_l[a, :], b_l[a]]`` of the layers its name gives (``H12``: layer 1, then 2)."""
        ctx = self.ctx
        out = []
        for l, unit in zip((int(name[1]), int(name[2])), (a, b), strict=True):
            fan_in = self.state.W[l].shape[1]
            idx = ctx.offsets[("w", l)] + unit * fan_in + np.arange(fan_in)
            if ctx.bias[l]:
                idx = np.concatenate([idx, [ctx.offsets[("b", l)] + unit]])
            out.append(idx)
        return out[0], out[1]

    def trainer_block(self):
        """The trainer's block for the units of ``at_block`` (None elsewhere)."""
        block = getattr(self, "_block", None)
        if block is None or self.state is not self.ctx.state:
            return None
        rows, cols = self.block_params(*block)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        return self.ctx.t_hessian_at(r.ravel(), c.ravel()).reshape(r.shape)

    def moved(self, state: State, scalars: dict | None = None) -> Net:
        """The same kind of bindings at another state (no shared memo)."""
        out = self._view()
        out.state = state
        out._memo = {}
        out._scalars = self._scalars if scalars is None else scalars
        return out

    # -- derived quantities ----------------------------------------------------------------------
    def deltas(self):
        return self._get("delta", lambda: self.ctx.ref.deltas(self.state))

    def gradient(self):
        return self._get("grad", lambda: self.ctx.ref.gradient(self.state))

    def flat_gradient(self) -> np.ndarray:
        gW, gb = self.gradient()
        return flat_params(gW, gb, self.ctx.bias).astype(np.float64)

    def smooth_gradient(self) -> np.ndarray:
        """The gradient of the smooth part of C (data and L2; the L1 term is a proximal step)."""
        st, ref = self.state, self.ctx.ref
        sign = [None] + [st.frozen.get(("sign", l), np.sign(st.W[l])) for l in self._layers()]
        zeros = [None] + [np.zeros(st.b[l].size) for l in self._layers()]
        return self.flat_gradient() - ref.l1 / st.N * flat_params(sign, zeros, self.ctx.bias)

    def per_sample_gradient(self) -> np.ndarray:
        """``dC_x / dtheta`` of every sample (m, P), public order."""
        return self._get("psg", lambda: self.ctx.ref.per_sample_gradient(self.state))

    def _layers(self):
        return range(1, self.ctx.L + 1)

    def output_jacobian(self):
        """``d delta_L[k] / d z_L[j]`` per sample (m, n_L, n_L), by differences of the
        chain-rule delta."""

        def make():
            ref, st, L = self.ctx.ref, self.state, self.ctx.L
            cols = []
            for j in range(st.z[L].shape[1]):

                def fun(t, j=j):
                    z = st.z[L].copy()
                    z[:, j] += t
                    moved = ref.override(st, "z", L, z)
                    return ref.deltas(moved)[L], ref.signature(moved)

                cols.append(fd(fun)[0])
            return np.stack(cols, axis=2)

        return self._get("jac", make)

    def gauss_newton_s(self):
        """The curvature of the Gauss-Newton matrix per output unit: ``s`` for a loss matched
        to its output activation (J = dz/dtheta), ``l''(a) f'(z)^2`` otherwise (J = da/dtheta)."""
        if self.ctx.matching:
            return self.s_out()
        return self.ctx.ref.gauss_newton_s(self.state)

    def s_out(self):
        """``s_L[j] = d delta_L[j] / d z_L[j]`` (the diagonal of ``output_jacobian``)."""
        return np.diagonal(self.output_jacobian(), axis1=1, axis2=2)

    def rop(self):
        """R{z_l}, R{a_l}, R{delta_l}, (Hv)_W, (Hv)_b: differences along the direction v."""

        def make():
            ref, st, ctx = self.ctx.ref, self.state, self.ctx
            L = ctx.L
            sizes = []

            def fun(r):
                W = [None] + [st.W[l] + r * ctx.V[l] for l in range(1, L + 1)]
                b = [None] + [st.b[l] + r * ctx.Vb[l] for l in range(1, L + 1)]
                moved = ref.with_params(st, W, b)
                d = ref.deltas(moved)
                gW, gb = ref.gradient(moved)
                parts = []
                for l in range(1, L + 1):
                    parts += [moved.z[l], moved.a[l], d[l], gW[l], gb[l], ref.inp(moved, l)]
                sizes[:] = [p.shape for p in parts]
                return np.concatenate([p.ravel() for p in parts]), ref.signature(moved)

            flat, _ = fd(fun)
            names = ("z", "a", "delta", "HvW", "Hvb", "u")  # u: a layer's (merged) input
            out: dict = {name: [None] for name in names}
            off = 0
            for k, shape in enumerate(sizes):
                size = int(np.prod(shape))
                out[names[k % 6]].append(flat[off : off + size].reshape(shape))
                off += size
            return out

        return self._get("rop", make)

    # -- the Bindings interface ------------------------------------------------------------------
    def scalar(self, name):
        if name in self._scalars:
            return self._scalars[name]
        ref, st = self.ctx.ref, self.state
        if name == "C":
            return ref.cost(st)
        if name == "C_x":
            return ref.cost_per_sample(st)
        if name == "R":
            return ref.penalty(st)
        value = self.ctx.constants.get(name)
        if value is None and name in self.ctx.defined:
            return self.ctx.defined_value(name, self)
        return value

    def indexed(self, name):
        found = self._indexed(name)
        if found is None and name in self.ctx.defined:
            return self.ctx.defined_value(name, self)
        if found is None:
            return None
        # the output layer's a is kept in extended precision (see Reference): its differences
        # near a = 1 (log(1 - a)) need the digits float64 would drop
        arr = np.asarray(found[0])
        return (arr if arr.dtype == np.longdouble else arr.astype(np.float64)), found[1]

    def _indexed(self, name):
        st, L, ref = self.state, self.ctx.L, self.ctx.ref
        if name == "x":
            return st.X, True
        if name == "y":
            return st.Y, True
        if name == "w_flat":  # every weight, W_1 row-major, then W_2, ...
            return np.concatenate([st.W[k].ravel() for k in range(1, L + 1)]), False
        stem, l = split_name(name)
        if l is None or l > L or (l == 0 and stem != "a"):
            return None
        elementwise = not ref.acts[L].softmax
        table = {
            "z": lambda: (st.z[l], True),
            "a": lambda: (st.a[l], True),
            "delta": lambda: (self.deltas()[l], True),
            "w": lambda: (st.W[l], False),
            "b": lambda: (st.b[l], False),
            "v": lambda: (self.ctx.V[l], False),
            "vb": lambda: (self.ctx.Vb[l], False),
            "Rz": lambda: (self.rop()["z"][l], True),
            "Ra": lambda: (self.rop()["a"][l], True),
            "Rdelta": lambda: (self.rop()["delta"][l], True),
            "Hv_w": lambda: (self.rop()["HvW"][l], False),
            "Hv_b": lambda: (self.rop()["Hvb"][l], False),
            # skip connections: layer l's (merged) input and its R{.}
            "u": lambda: (ref.inp(st, l), True),
            "Ru": lambda: (self.rop()["u"][l], True),
        }
        if l == L and elementwise:
            table["s"] = lambda: (self.s_out(), True)
            table["sG"] = lambda: (self.gauss_newton_s(), True)
        make = table.get(stem)
        return None if make is None else make()

    def matrix(self, name):
        found = self._matrix(name)
        if found is None and name in self.ctx.defined:
            return self.ctx.defined_value(name, self)
        return None if found is None else np.asarray(found, np.float64)

    def _matrix(self, name):
        st, L, ctx, ref = self.state, self.ctx.L, self.ctx, self.ctx.ref
        whole = {
            "X": lambda: st.X,
            "Y": lambda: st.Y,
            "ones_m": lambda: np.ones((self.m, 1)),
            "Xt": lambda: np.hstack([st.X, np.ones((self.m, 1))]),
            "I_w": lambda: np.diag(ctx.weight_mask),
            "g_v": lambda: self.smooth_gradient()[:, None],
            "theta_v": lambda: flat_params(st.W, st.b, ctx.bias)[:, None],
            "H": lambda: ctx.hessian_matrix(self),
        }
        if name in whole:
            return whole[name]()
        found = self._block_matrix(name)
        if found is not None:
            return found
        if name.endswith("_x"):
            return self._per_sample(name[:-2])
        if self._pair is not None and name.endswith(("_k", "_kj")):
            return self._per_pair(*name.rsplit("_", 1))
        if name.endswith("_j"):
            return self._per_unit(name[:-2])
        stem, l = split_name(name)
        block = split_name(stem)  # W_c_l, V_c_l: the columns of W_c (V_c) that read layer l
        if l is not None and block[0] in ("W", "V") and block[1] is not None:
            c = block[1]
            if 1 <= c <= L and l < c:
                full = st.W[c] if block[0] == "W" else ctx.V[c]
                return ref.block(full, c, l)
        if l is None or l > L or l < 1:
            return None
        act = ref.acts[l]
        table = {
            "Z": lambda: st.z[l],
            "A": lambda: st.a[l],
            "Delta": lambda: self.deltas()[l],
            "W": lambda: st.W[l],
            "b": lambda: st.b[l][None, :],
            "V": lambda: ctx.V[l],
            "vb": lambda: ctx.Vb[l][None, :],
            "RZ": lambda: self.rop()["z"][l],
            "RA": lambda: self.rop()["a"][l],
            "RDelta": lambda: self.rop()["delta"][l],
            "dC_dW": lambda: self.gradient()[0][l],
            "dC_db": lambda: self.gradient()[1][l][None, :],
            "Hv_W": lambda: self.rop()["HvW"][l],
            "Hv_b": lambda: self.rop()["Hvb"][l][None, :],
            "U": lambda: ref.inp(st, l),
            "RU": lambda: self.rop()["u"][l],
        }
        if l < L:
            table["dC_dA"] = lambda: ref.back(st, self.deltas(), l)
        if not act.softmax:
            table["FP"] = lambda: ref._df(st, l, st.z[l])
            table["FPP"] = lambda: self._fpp(l)
        if l == L and not act.softmax:
            table["S"] = self.s_out
        if l == L and act.softmax:
            # S = diag(d) + u v^T: its kernels at every sample (hess.out.diag, .u, .v), and the
            # column of n_L ones that sums a row (M 1) and repeats a column (r 1^T)
            for stem_, kernel in (("SD", "hd"), ("SU", "hu"), ("SV", "hv")):
                table[stem_] = lambda kernel=kernel: self._kernel_rows(kernel)
            table["ones_n"] = lambda: np.ones((st.a[l].shape[1], 1))
        make = table.get(stem)
        return None if make is None else make()

    def _kernel_rows(self, name: str) -> np.ndarray:
        """An output kernel defined in index form (``hd[k]``) at every sample and unit (m, n_L)."""
        found = self.indexed(name)
        if found is None:
            raise NotEvaluable(f"no values for the kernel {name}")
        values, per_sample = found
        if not per_sample:
            values = np.broadcast_to(values, (self.m, *np.shape(values)))
        return np.asarray(values, np.float64)

    def matrix_times(self, name, v):
        ctx = self.ctx
        if name == "I_w":
            return ctx.weight_mask[:, None] * v
        if name == "H" and self.state is ctx.state:
            return np.stack([ctx.trainer_hvp(c) for c in v.T], axis=1)
        if name == "H_kj" and self._pair is not None and ctx.L == 1 and self.state is ctx.state:
            # the trainer's block of output units k, j, by hvp
            k, j = self._pair
            rows, cols = self._unit_params(k), self._unit_params(j)
            full = np.zeros((ctx.P, v.shape[1]))
            full[cols] = v
            return np.stack([ctx.trainer_hvp(c)[rows] for c in full.T], axis=1)
        if name == "H_j" and self._unit is not None and ctx.L == 1 and self.state is ctx.state:
            # the trainer's block of output unit j, over [w_1[j, :], b_1[j]], by hvp
            n0 = self.state.W[1].shape[1]
            j = self._unit
            idx = j * n0 + np.arange(n0)
            if ctx.bias[1]:
                idx = np.concatenate([idx, [ctx.offsets[("b", 1)] + j]])
            full = np.zeros((ctx.P, v.shape[1]))
            full[idx] = v
            return np.stack([ctx.trainer_hvp(c)[idx] for c in full.T], axis=1)
        return None

    def _fpp(self, l: int) -> np.ndarray:
        """f_l'' at every z_l: from its output form in a_l where there is one (no overflow of
        cosh(z)^2 for a large z), else in z."""
        from ... import calculus

        act = self.ctx.ref.calculus[l]
        if act.d2f_out is not None:
            fn = self.ctx.memo(("d2f_out", l), lambda: lambdify([calculus.a], act.d2f_out))
            return fn(np.asarray(self.state.a[l], np.float64))
        fn = self.ctx.memo(("d2f", l), lambda: lambdify([calculus.z], act.d2f))
        return fn(self.state.z[l])

    def _per_sample(self, stem):
        """``Jz_x``, ``Ja_x``, ``Ss_x``, ``SsG_x``, ``Sl2_x``, ``gradC_x`` of the sample
        selected by ``at_sample``."""
        if self._at is None:
            return None
        x, ref, st = self._at, self.ctx.ref, self.state
        table = {
            "Jz": lambda: self._get("Jz", lambda: ref.jacobian(st, "z"))[x],
            "Ja": lambda: self._get("Ja", lambda: ref.jacobian(st, "a"))[x],
            "Ss": lambda: self.output_jacobian()[x],
            "SsG": lambda: np.diag(self.gauss_newton_s()[x]),
            "Sl2": lambda: np.diag(ref.loss_curvature(st)[x]),
            "gradC": lambda: self.per_sample_gradient()[x][:, None],
        }
        make = table.get(stem)
        return None if make is None else make()

    def _per_unit(self, stem):
        """``Sdiag_j`` (diag of s_L[:, j] over the batch) and ``H_j`` (the trainer's Hessian
        block of output unit j, over [w_j, b_j]) for the unit selected by ``at_unit``."""
        if self._unit is None:
            return None
        j, L = self._unit, self.ctx.L
        if stem == "Sdiag" and not self.ctx.ref.acts[L].softmax:
            return np.diag(self.s_out()[:, j])
        if stem in _SOFTMAX_PARTS and self.ctx.ref.acts[L].softmax:
            return np.diag(self._kernel_rows(_SOFTMAX_PARTS[stem])[:, j])
        if stem == "H" and self._pair is None:
            return self.ctx.hessian_block(j)
        return None

    def _per_pair(self, stem, idx):
        """``Sdiagd_k``, ``Sdiagu_k`` (diag of the softmax kernels d, u of unit k over the
        batch) and ``H_kj`` (the trainer's Hessian block of output units k and j) for the pair
        selected by ``at_pair``."""
        k, _ = self._pair
        if idx == "k" and stem in _SOFTMAX_PARTS and self.ctx.ref.acts[self.ctx.L].softmax:
            return np.diag(self._kernel_rows(_SOFTMAX_PARTS[stem])[:, k])
        if idx == "kj" and stem == "H":
            return self.pair_block()
        return None

    def _unit_params(self, j: int) -> np.ndarray:
        """The flat indices of ``[w_1[j, :], b_1[j]]`` (``w_1[j, :]`` without a bias)."""
        ctx = self.ctx
        n0 = self.state.W[1].shape[1]
        idx = j * n0 + np.arange(n0)
        if ctx.bias[1]:
            idx = np.concatenate([idx, [ctx.offsets[("b", 1)] + j]])
        return idx

    def pair_block(self):
        """The trainer's Hessian over ``[w_1[k, :], b_1[k]]`` (rows) and ``[w_1[j, :], b_1[j]]``
        (columns) of a model without hidden layers, for the pair of ``at_pair``: from
        ``hessian``, or from ``hvp`` columns above HESSIAN_MAX parameters; None elsewhere."""
        ctx = self.ctx
        if self._pair is None or ctx.L != 1 or self.state is not ctx.state:
            return None
        k, j = self._pair
        rows, cols = self._unit_params(k), self._unit_params(j)
        H = ctx.t_hessian()
        if H is not None:
            return H[np.ix_(rows, cols)]

        def columns():
            eye = np.zeros(ctx.P)
            out = []
            for q in cols:
                eye[q] = 1.0
                out.append(ctx.trainer_hvp(eye))
                eye[q] = 0.0
            return np.stack(out, axis=1)

        return ctx.memo(("hpair", j), columns)[rows]

    def rewrite(self, expr):
        stem, l = split_name(type(expr).__name__)
        if stem == "f" and l is not None and 1 <= l <= self.ctx.L and len(expr.args) == 1:
            (arg,) = expr.args
            if (
                self.ctx.ref.acts[l].softmax
                and isinstance(arg, sp.Indexed)
                and arg.base.label.name == f"z_{l}"
            ):
                return nt.a(l)[arg.indices]
        return None

    def function(self, name):
        if name == "ell":
            return self.ctx.ref.ell
        stem, l = split_name(name)
        if stem == "f" and l is not None and 1 <= l <= self.ctx.L:
            act = self.ctx.ref.acts[l]
            return None if act.softmax else act.f
        return None

    def exact_derivative(self, F, var, index, ndim):
        return exact_derivative(self, F, var, index, ndim)

    def per_sample_var(self, var):
        if not isinstance(var, sp.Indexed):
            return False
        name = var.base.label.name
        return name in ("x", "y") or split_name(name)[0] in ("z", "a")

    def perturb(self, var, t, sample):
        ctx, st, ref = self.ctx, self.state, self.ctx.ref
        if isinstance(var, sp.Symbol):
            base = self.scalar(var.name)
            if base is None:
                raise NotEvaluable(f"cannot vary {var}: it has no value")
            return self.moved(st, {**self._scalars, var.name: base + t})
        if not isinstance(var, sp.Indexed):
            raise NotEvaluable(f"cannot vary {var}")
        name = var.base.label.name
        ids = tuple(int(i) - 1 for i in var.indices)
        if name == "w_flat":
            l, pos = ctx.weight_position(ids[0])
            name, ids = f"w_{l}", pos
        stem, l = split_name(name)
        if stem in ("w", "b") and l is not None and 1 <= l <= ctx.L:
            return self.moved(ref.nudge(st, stem, l, ids, t))
        if name in ("x", "y") or (stem in ("z", "a") and l is not None and l <= ctx.L):
            kind, layer = ("a", 0) if name == "x" else ("y", 0) if name == "y" else (stem, l)
            arr = (st.Y if kind == "y" else st.z[layer] if kind == "z" else st.a[layer]).copy()
            if sample is None:
                arr[:, ids[0]] += t
            else:
                arr[sample, ids[0]] += t
            return self.moved(ref.override(st, kind, layer, arr))
        raise NotEvaluable(f"cannot vary {var}")

    def signature(self):
        return self.ctx.ref.signature(self.state)
