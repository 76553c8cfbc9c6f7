"""The derivatives the reference chain rule gives directly (``Bindings.exact_derivative``).

The index evaluator asks for ``d F / d var`` before it falls back to differences: ``dC/dw``,
``dR/dw``, ``dC_x/dz_l`` (the delta), ``dC_x/da_l``, ``dz_l/da_{l-1}``, ``dz_l/dw_l``,
``da_l/dz_l``, ``f_l'``, ``dl/da``. Each row that uses them is also checked by differences at a
few points (see :mod:`.rows`), so an exact value is never the only evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from ...derivation import notation as nt
from .common import split_name

if TYPE_CHECKING:
    from .bindings import Net


def exact_derivative(net: Net, F, var, index, ndim):
    """``d F / d var`` at the points ``index`` evaluates (see ``Bindings.exact_derivative``),
    or None when the chain rule of the reference does not name it."""
    if not isinstance(var, sp.Indexed):
        return None
    st, ctx, L = net.state, net.ctx, net.ctx.L
    vname = var.base.label.name
    vstem, vl = ("a", 0) if vname == "x" else split_name(vname)

    def ids(ix):
        v = np.asarray(index(ix))
        return (v.astype(np.int64) - 1).reshape(v.shape if v.ndim else (1,) * ndim)

    samples = np.arange(net.m).reshape((net.m,) + (1,) * (ndim - 1))
    if vname == "w_flat" and F == nt.R:
        W = np.concatenate([st.W[k].ravel() for k in range(1, L + 1)])
        sign = np.concatenate(
            [st.frozen.get(("sign", k), np.sign(st.W[k])).ravel() for k in range(1, L + 1)]
        )
        g = ctx.ref.l2 / st.N * W + ctx.ref.l1 / st.N * sign
        return g[ids(var.indices[0])]
    if vl is None or vl > L:
        return None
    if F == nt.C and vstem in ("w", "b") and vl >= 1:
        gW, gb = net.gradient()
        arr = gW[vl] if vstem == "w" else gb[vl]
        return arr[tuple(ids(i) for i in var.indices)]
    if F == nt.R and vstem == "w" and vl >= 1:
        W, n_ = st.W[vl], st.N
        sign = st.frozen.get(("sign", vl), np.sign(W))
        g = ctx.ref.l2 / n_ * W + ctx.ref.l1 / n_ * sign
        return g[tuple(ids(i) for i in var.indices)]
    if F == nt.C_x and vstem in ("z", "a"):
        (q,) = var.indices
        if vstem == "z" and vl >= 1:
            g = net.deltas()[vl]
        elif vstem == "a" and vl < L:
            g = ctx.ref.back(st, net.deltas(), vl)  # the sum over the layers reading a_vl
        elif vstem == "a":
            g = ctx.ref.dl_da(st.a[L], st.Y, frozen=ctx.ref._fr(st, "dl", st.a[L]))
        else:
            return None
        return g[samples, ids(q)]
    if isinstance(F, sp.Indexed) and len(F.indices) == 1:
        return _indexed_by_indexed(net, F, var, vstem, vl, ids, samples)
    fstem, fl = split_name(type(F).__name__) if isinstance(F, sp.Function) else ("", None)
    if fstem == "f" and fl == vl and vstem == "z" and len(F.args) == 1:
        (arg,) = F.args
        if isinstance(arg, sp.Indexed) and arg.base.label.name == vname:
            if ctx.ref.acts[fl].softmax:
                return None
            p, q = ids(arg.indices[0]), ids(var.indices[0])
            return (p == q) * ctx.ref._df(st, fl, st.z[fl])[samples, p]
    if isinstance(F, sp.Function) and F.func.__name__ == "ell" and len(F.args) == 2:
        arg, target = F.args
        if (
            isinstance(arg, sp.Indexed)
            and arg.base.label.name == f"a_{L}"
            and vname == f"a_{L}"
            and isinstance(target, sp.Indexed)
            and target.base.label.name == "y"
            and target.indices == arg.indices
        ):
            g = ctx.ref.dl_da(st.a[L], st.Y, frozen=ctx.ref._fr(st, "dl", st.a[L]))
            p, q = ids(arg.indices[0]), ids(var.indices[0])
            return (p == q) * g[samples, p]
    return None


def _indexed_by_indexed(net: Net, F, var, vstem, vl, ids, samples):
    """``d F / d var`` for ``F`` one unit of a layer (``delta_L[k]``, ``z_l[k]``, ``a_l[k]``)."""
    st, ctx, L = net.state, net.ctx, net.ctx.L
    fname = F.base.label.name
    fstem, fl = ("a", 0) if fname == "x" else split_name(fname)
    if fl is None or fl > L:
        return None
    p = ids(F.indices[0])
    if fstem == "delta" and fl == L and vstem == "z" and vl == L:
        return net.output_jacobian()[samples, p, ids(var.indices[0])]
    if fstem == "z" and fl >= 1:
        if vstem == "a" and vl in ctx.ref.sources[fl]:  # the layer below, or a skip's source
            return ctx.ref.block(st.W[fl], fl, vl)[p, ids(var.indices[0])]
        if vstem == "w" and vl == fl:
            p2, q = (ids(i) for i in var.indices)
            return (p == p2) * ctx.ref.inp(st, fl)[samples, q]
        if vstem == "b" and vl == fl:
            return (p == ids(var.indices[0])).astype(np.float64)
    if fstem == "a" and vstem == "z" and vl == fl and fl >= 1:
        q = ids(var.indices[0])
        if ctx.ref.acts[fl].softmax:
            a = st.a[fl]
            return a[samples, p] * ((p == q) - a[samples, q])
        fp = ctx.ref._df(st, fl, st.z[fl])
        return (p == q) * fp[samples, p]
    return None
