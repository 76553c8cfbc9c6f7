"""Second order: the output's R-operator row, closed-form and block Hessians, Gauss-Newton.

The closed form (no hidden layer) and the block form (one hidden layer) are written entry by
entry in index form, with the L2 term on weight entries only: a bias entry is the weight entry
with its input replaced by 1 and no regulariser. ``S`` is the output curvature of
:mod:`.cost`: ``S_kp = s_k [k = p]`` for elementwise outputs, ``a_k ([k = p] - a_p)`` for softmax.
"""

from __future__ import annotations

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from . import notation as nt
from .ir import Derivation, Equation
from .rop import ROP
from .units import at, fprime, fsecond

SECOND = "Second order"
_theta1, _theta2 = sp.symbols("theta_1 theta_2")


def _S(d: Derivation, k: sp.Symbol, p: sp.Symbol) -> sp.Expr:
    """Entry (k, p) of the output curvature S of one sample."""
    L = d.depth
    if d.output.vector:
        a = nt.a(L)
        return a[k] * (sp.KroneckerDelta(k, p) - a[p])
    return nt.s(L)[k] * sp.KroneckerDelta(k, p)


def _mean(expr: sp.Expr) -> sp.Expr:
    return sp.Sum(expr, (nt.sample, 1, nt.N)) / nt.N


def _l2(d: Derivation, *pairs) -> sp.Expr:
    """``lambda_2/N`` times Kronecker deltas of ``pairs`` (0 without L2)."""
    if not d.spec.regularization.l2:
        return sp.Integer(0)
    return nt.lambda_2 / nt.N * sp.Mul(*(sp.KroneckerDelta(x, y) for x, y in pairs))


def SG(L: int) -> sp.MatrixSymbol:
    """``S^G_L`` (m x n_L): row x holds the Gauss-Newton curvature s^G of sample x."""
    nt.DISPLAY.setdefault(f"SG_{L}", (f"S^{{G({L})}}", "Sᴳ" + nt.sup(L)))
    return sp.MatrixSymbol(f"SG_{L}", nt.m, nt.n(L))


def S_parts(L: int) -> tuple[sp.MatrixSymbol, sp.MatrixSymbol, sp.MatrixSymbol]:
    """``S_d``, ``S_u``, ``S_v`` (m x n_L): row x holds the kernels d, u, v of the softmax
    curvature ``S = diag(d) + u v^T`` of sample x (``hess.out``)."""
    out = []
    for part in "duv":
        name = f"S{part.upper()}_{L}"
        nt.DISPLAY.setdefault(name, (f"S^{{({L})}}_{{{part}}}", "S" + nt.sup(L) + "_" + part))
        out.append(sp.MatrixSymbol(name, nt.m, nt.n(L)))
    return tuple(out)


def _rank_one_curvature(L: int) -> sp.Eq:
    """``S_x = diag(d) + u v^T``: the softmax curvature of one sample, as the prose states it."""
    d, u, v = (nt.vec(name, L) for name in "duv")
    return sp.Eq(nt.Sx(L), sp.MatAdd(DiagMatrix(d), sp.MatMul(u, v.T)), evaluate=False)


def ones_n(L: int) -> sp.MatrixSymbol:
    """The column of n_L ones (n_L x 1): ``M 1`` sums the rows of M, ``r 1^T`` repeats a column
    r over the n_L units."""
    name = f"ones_n_{L}"
    nt.DISPLAY.setdefault(name, (rf"\mathbf{{1}}_{{n_{{{L}}}}}", "𝟏ₙ" + nt.sub(str(L))))
    return sp.MatrixSymbol(name, nt.n(L), 1)


def build_rop_output(d: Derivation) -> None:
    L, j, k = d.depth, nt.j, nt.k
    gauss_newton: tuple = ()
    if d.output.vector:
        rhs = sp.Sum(_S(d, j, k) * nt.Rz(L)[k], (k, 1, nt.n(L)))
        Sd, Su, Sv = S_parts(L)
        ones = ones_n(L)
        RZ = nt.RZ(L)
        # S R{z} = d o R{z} + u (v^T R{z}) per sample: one row sum of V o R{Z} per sample
        rank_one = sp.MatMul(sp.HadamardProduct(Sv, RZ), ones, ones.T)
        matrix = (
            nt.RDelta(L),
            sp.MatAdd(sp.HadamardProduct(Sd, RZ), sp.HadamardProduct(Su, rank_one)),
        )
        prose = (
            "R{.} of the output delta: the output curvature S applied to R{z}. In matrix form, "
            "with ",
            Sd,
            ", ",
            Su,
            " and ",
            Sv,
            " holding the kernels d, u and v of every sample (",
            _rank_one_curvature(L),
            ") and ",
            ones,
            " a column of ",
            nt.n(L),
            " ones: the rank-one part sums each row of ",
            sp.HadamardProduct(Sv, RZ),
            " and repeats the sum over the units.",
        )
    else:
        rhs = nt.s(L)[j] * nt.Rz(L)[j]
        matrix = (nt.RDelta(L), sp.HadamardProduct(nt.S(L), nt.RZ(L)))
        prose = (
            "R{.} of the output delta: the output curvature s applied to R{z} (",
            nt.S(L),
            " holds s for every sample).",
        )
        if not d.loss.matching:  # Gauss-Newton keeps the loss's curvature only (gauss_newton.s)
            gauss_newton = ((nt.S(L), SG(L)),)
    d.add(
        Equation(
            "rop.out",
            ROP,
            nt.Rdelta(L)[j],
            rhs,
            matrix=matrix,
            prose=prose,
            gauss_newton=gauss_newton,
        )
    )


def _l2_block(bias: bool, fan_in: int = 0) -> sp.MatrixExpr:
    """``lambda_2/N [[I, 0], [0, 0]]`` on one unit's ``[w, b]`` (``lambda_2/N I`` without a
    bias) of a layer reading layer ``fan_in``: the L2 term sits on weight entries only."""
    n = nt.n(fan_in)
    if not bias:
        return nt.lambda_2 / nt.N * sp.Identity(n)
    return (
        nt.lambda_2
        / nt.N
        * sp.BlockMatrix(
            [
                [sp.Identity(n), sp.ZeroMatrix(n, 1)],
                [sp.ZeroMatrix(1, n), sp.ZeroMatrix(1, 1)],
            ]
        )
    )


def build_closed_form(d: Derivation) -> None:
    """The Hessian of a model without hidden layers, entry by entry (``hess.closed*``)."""
    L = 1
    x = nt.a(0)
    i, j, k, q = nt.i, nt.j, nt.k, nt.q
    w, b = nt.w(L), nt.b(L)
    bias = d.layers[0].bias
    if d.output.vector:
        # units k (row) and j (column) are coupled through the softmax
        S = _S(d, k, j)
        rows = (
            (
                "hess.closed",
                sp.Derivative(nt.C, w[k, i], w[j, q]),
                _mean(S * x[i] * x[q]) + _l2(d, (k, j), (i, q)),
            ),
            ("hess.closed.wb", sp.Derivative(nt.C, w[k, i], b[j]), _mean(S * x[i])),
            ("hess.closed.bb", sp.Derivative(nt.C, b[k], b[j]), _mean(S)),
        )
        prose = (
            "Closed form for softmax regression: every pair of output units k, j is coupled "
            "by the softmax curvature; the L2 term sits on weight entries only",
        )
        # per sample S = diag(d) + u v^T (hess.out.diag, .u, .v): the block of units k, j
        Sd, Su, Sv = nt.Spart("d", "k"), nt.Spart("u", "k"), nt.Spart("v", "j")
        middle = sp.MatAdd(sp.KroneckerDelta(k, j) * Sd, sp.MatMul(Su, Sv))
        xt = nt.Xt() if bias else nt.A(0)
        data = sp.MatMul(1 / nt.m, xt.T, middle, xt)
        size = nt.n(0) + 1 if bias else nt.n(0)
        reg = _l2_block(bias) * sp.KroneckerDelta(k, j)
        blk = sp.MatrixSymbol("H_kj", size, size)
        nt.DISPLAY.setdefault("H_kj", ("H_{kj}", "Hₖⱼ"))
        matrix = (blk, sp.MatAdd(data, reg) if d.spec.regularization.l2 else data)
        words = (
            ". In matrix form, over a batch X with ",
            *((nt.Xt(), " = [X, 1], ") if bias else ()),
            Sd,
            ", ",
            Su,
            " and ",
            Sv,
            " the diagonal matrices over the batch of d_k, u_k and v_j, the kernels of ",
            _rank_one_curvature(d.depth),
            ", the block of output units k (rows) and j (columns) over their parameters "
            + ("[w_k, b_k] and [w_j, b_j]:" if bias else "w_k and w_j:"),
        )
    else:
        s = nt.s(L)[j]
        rows = (
            (
                "hess.closed",
                sp.Derivative(nt.C, w[j, i], w[j, q]),
                _mean(s * x[i] * x[q]) + _l2(d, (i, q)),
            ),
            ("hess.closed.wb", sp.Derivative(nt.C, w[j, i], b[j]), _mean(s * x[i])),
            ("hess.closed.bb", sp.Derivative(nt.C, (b[j], 2)), _mean(s)),
        )
        prose = (
            "Closed form for a model without hidden layers: output units do not interact, so "
            "H has one block per output unit j (entries between units are 0); the L2 term sits "
            "on weight entries only",
        )
        reg = _l2_block(bias)
        xt = nt.Xt() if bias else nt.A(0)
        data = sp.MatMul(1 / nt.m, xt.T * nt.Sdiag("j") * xt)
        size = nt.n(0) + 1 if bias else nt.n(0)
        blk = sp.MatrixSymbol("H_j", size, size)
        nt.DISPLAY.setdefault("H_j", ("H_{j}", "Hⱼ"))
        matrix = (blk, sp.MatAdd(data, reg) if d.spec.regularization.l2 else data)
    if not bias:  # no bias entries
        rows = rows[:1]
        prose = (*prose, "; the layer has no bias (bias: false), so H has weight entries only")
    for n_row, (key, lhs, rhs) in enumerate(rows):
        if n_row == 0:
            text: tuple = (*prose, ".")
            if d.output.vector:
                text = (*prose, *words)
            elif not bias:
                text = (
                    *prose,
                    ". In matrix form, over a batch X with ",
                    nt.Sdiag("j"),
                    " the diagonal matrix of unit j's s over the batch:",
                )
            else:
                text = (
                    *prose,
                    ". In matrix form, over a batch with ",
                    nt.Xt(),
                    " = [X, 1] and ",
                    nt.Sdiag("j"),
                    " the diagonal matrix of unit j's s over the batch:",
                )
        elif n_row == 1:
            text = ("Its bias entries: the input replaced by 1, no regulariser.",)
        else:
            text = ()
        d.add(Equation(key, SECOND, lhs, rhs, matrix=matrix if n_row == 0 else None, prose=text))


def build_blocks(d: Derivation) -> None:
    """The exact Hessian of a network with one hidden layer, block by block."""
    i, j, k, p, q, r = nt.i, nt.j, nt.k, nt.p, nt.q, nt.r
    x, a1 = nt.a(0), nt.a(1)
    w1, w2, delta2 = nt.w(1), nt.w(2), nt.delta(2)
    n1, n2 = nt.n(1), nt.n(2)
    hidden = d.layers[0].activation
    fp, fpp = fprime(hidden), fsecond(hidden)
    fpj, fpq, fppj = at(fp, 1, j), at(fp, 1, q), at(fpp, 1, j)
    if d.output.vector:
        s22 = _S(d, k, p)
        s11 = sp.Sum(sp.Sum(w2[k, j] * _S(d, k, p) * w2[p, q], (p, 1, n2)), (k, 1, n2))
        s12 = sp.Sum(_S(d, k, p) * w2[p, j], (p, 1, n2))
    else:
        s = nt.s(2)
        s22 = s[k] * sp.KroneckerDelta(k, p)
        s11 = sp.Sum(w2[k, j] * s[k] * w2[k, q], (k, 1, n2))
        s12 = s[k] * w2[k, j]
    back = sp.Sum(w2[k, j] * delta2[k], (k, 1, n2))
    e11 = fpj * fpq * x[i] * x[r] * s11
    if fpp != 0:
        e11 += sp.KroneckerDelta(j, q) * fppj * x[i] * x[r] * back
    e12 = fpj * x[i] * a1[q] * s12 + sp.KroneckerDelta(j, q) * fpj * x[i] * delta2[k]
    e22 = s22 * a1[i] * a1[q]
    rows = (
        (
            "hess.blocks.11",
            sp.Derivative(nt.C, w1[j, i], w1[q, r]),
            _mean(e11) + _l2(d, (j, q), (i, r)),
            _tag(_theta1, _theta1)
            + (
                " (both parameters in layer 1): the Gauss-Newton part through the output "
                "curvature"
                + (" and the hidden layer's own curvature f''." if fpp != 0 else " (f'' = 0)."),
            ),
        ),
        (
            "hess.blocks.12",
            sp.Derivative(nt.C, w1[j, i], w2[k, q]),
            _mean(e12),
            _tag(_theta1, _theta2)
            + (
                ": the Gauss-Newton part plus the cross term from ",
                sp.Eq(
                    nt.z(2)[k],
                    sp.Sum(w2[k, q] * a1[q], (q, 1, n1)) + (nt.b(2)[k] if d.layers[1].bias else 0),
                ),
                " (where q = j); no regulariser between layers.",
            ),
        ),
        (
            "hess.blocks.22",
            sp.Derivative(nt.C, w2[k, i], w2[p, q]),
            _mean(e22) + _l2(d, (k, p), (i, q)),
            _tag(_theta2, _theta2) + (": the output layer sees its inputs only.",),
        ),
    )
    # the matrix forms are written for a chain of two layers (a skip connection: index form)
    forms, words = block_forms(d) if not d.graph else ({}, {k: () for k, *_ in rows})
    for n_row, (key, lhs, rhs, text) in enumerate(rows):
        prose = (*text, *words[key])
        if n_row == 0:
            prose = (
                "The exact Hessian of a network with one hidden layer, block by block. ",
                _theta1,
                *_holds(d, _theta2),
                *_tag(_theta1, _theta2),
                " names the rows and columns of H it fills. ",
                *_bias_entries(d, x[i], a1[q]),
                *prose,
            )
        d.add(Equation(key, SECOND, lhs, rhs, matrix=forms.get(key), prose=prose))
    d.alias("hess.blocks", "hess.blocks.11")


def _inputs(d: Derivation, l: int) -> sp.MatrixSymbol:
    """The inputs of layer l + 1 over the batch: ``[A_l, 1]`` with a bias, else ``A_l``."""
    if not d.layers[l].bias:
        return nt.A(l)
    return nt.Xt() if l == 0 else nt.At(l)


def block_forms(d: Derivation) -> tuple[dict, dict]:
    """The matrix forms of ``hess.blocks.11``, ``.12`` and ``.22``, one block per pair of units
    over the batch (see the prose), and the words that introduce each; the L2 term sits on
    weight entries only, between layers there is none."""
    j, q, k, p = nt.j, nt.q, nt.k, nt.p
    m, L2 = nt.m, d.spec.regularization.l2
    ej, eq = nt.unit(1, "j"), nt.unit(1, "q")
    ek, ep = nt.unit(2, "k"), nt.unit(2, "p")
    etj = nt.unit(1, "j", tilde=True) if d.layers[1].bias else ej
    X, A1 = _inputs(d, 0), _inputs(d, 1)
    FP, W2, D2 = nt.FP(1), nt.W(2), nt.Delta(2)
    Fj, Fq, Wj, Wq = FP * ej, FP * eq, W2 * ej, W2 * eq
    w2 = nt.w(2)
    # the columns c of the terms X~^T diag(c) X~ (one term per line of the display)
    if d.output.vector:
        Sd, Su, Sv = S_parts(2)
        s11 = [Sd * sp.HadamardProduct(Wj, Wq), sp.HadamardProduct(Su * Wj, Sv * Wq)]
        s12 = [w2[k, j] * Sd * ek, sp.HadamardProduct(Su * ek, Sv * Wj)]
        s22 = [sp.KroneckerDelta(k, p) * Sd * ek, sp.HadamardProduct(Su * ek, Sv * ep)]
        curvature: tuple = (Sd, ", ", Su, " and ", Sv, " the kernels d, u and v of ")
        curvature = (*curvature, _rank_one_curvature(2), " at every sample")
    else:
        S = nt.S(2)
        s11 = [S * sp.HadamardProduct(Wj, Wq)]
        s12 = [w2[k, j] * S * ek]
        s22 = [sp.KroneckerDelta(k, p) * S * ek]
        curvature = (S, " the output curvature s at every sample")
    c11 = [sp.HadamardProduct(Fj, Fq, t) for t in s11]
    fpp = fsecond(d.layers[0].activation)
    if fpp != 0:
        c11.append(sp.KroneckerDelta(j, q) * sp.HadamardProduct(nt.FPP(1) * ej, D2 * W2 * ej))
    n0, n1 = (nt.n(l) + (1 if d.layers[l].bias else 0) for l in range(2))
    sandwich = [
        ("hess.blocks.11", "jq", (n0, n0), [X.T * nt.Diag(c) * X for c in c11], (j, q, 0)),
        (
            "hess.blocks.12",
            "jk",
            (n0, n1),
            [X.T * nt.Diag(sp.HadamardProduct(Fj, c)) * A1 for c in s12]
            + [X.T * sp.HadamardProduct(Fj, D2 * ek) * etj.T],
            None,
        ),
        ("hess.blocks.22", "kp", (n1, n1), [A1.T * nt.Diag(c) * A1 for c in s22], (k, p, 1)),
    ]
    forms = {}
    for key, idx, size, data, reg in sandwich:
        lhs = nt.Hblock(int(key[-2]), int(key[-1]), idx, size)
        terms = [sp.MatMul(1 / m, t) for t in data]
        if reg is not None and L2:
            a, b, l = reg
            terms.append(sp.KroneckerDelta(a, b) * _l2_block(d.layers[l].bias, l))
        forms[key] = (lhs, sp.MatAdd(*terms))
    ones = " = [X, 1]" if d.layers[0].bias else " = X (layer 1 has no bias)"
    ones2 = " = [A_1, 1]" if d.layers[1].bias else " = A_1 (layer 2 has no bias)"
    units = (" over their parameters (weights, then the bias where the layer has one)",)
    words = {
        "hess.blocks.11": (
            " In matrix form, over a batch with ",
            X,
            ones,
            ", ",
            A1,
            ones2,
            ", ",
            FP,
            *((" and ", nt.FPP(1)) if fpp != 0 else ()),
            " the hidden layer's f' and f'' at every sample, "
            if fpp != 0
            else " the hidden layer's f' at every sample, ",
            D2,
            " the output deltas, ",
            *curvature,
            ", ",
            ej,
            " the unit column that picks unit j (M e_j is column j of M) and diag(c) the "
            "diagonal matrix of a column c over the batch: the block of hidden units j (rows) "
            "and q (columns)",
            *units,
            ":",
        ),
        "hess.blocks.12": (
            " In matrix form, the block of hidden unit j (rows) and output unit k (columns), with ",
            etj,
            " the unit column that picks column j of ",
            A1,
            ":",
        ),
        "hess.blocks.22": (" In matrix form, the block of output units k (rows) and p (columns):",),
    }
    return forms, words


def _holds(d: Derivation, theta2: sp.Symbol) -> tuple:
    """What theta_1 and theta_2 hold: the weights, and the biases where the layer has them."""
    b1, b2 = (layer.bias for layer in d.layers)
    if b1 and b2:
        return (
            " holds the weights and biases of layer 1, ",
            theta2,
            " those of layer 2, and a block tag such as ",
        )
    return (
        " holds the weights" + (" and biases" if b1 else "") + " of layer 1, ",
        theta2,
        " the weights" + (" and biases" if b2 else "") + " of layer 2, and a block tag such as ",
    )


def _bias_entries(d: Derivation, x_i: sp.Expr, a1_q: sp.Expr) -> tuple:
    """The prose on the bias entries of the block Hessian: none for a layer without bias."""
    inputs = [v for v, layer in zip((x_i, a1_q), d.layers, strict=True) if layer.bias]
    if len(inputs) == 2:
        return (
            "A bias entry is the weight entry with its input (",
            x_i,
            " or ",
            a1_q,
            ") replaced by 1 and without the regulariser. ",
        )
    without = " and ".join(f"layer {l.index}" for l in d.layers if not l.bias)
    if not inputs:
        return (
            f"There are no bias entries: {without} ha{'ve' if ' and ' in without else 's'} "
            "no bias (bias: false). ",
        )
    return (
        "A bias entry is the weight entry with its input (",
        inputs[0],
        f") replaced by 1 and without the regulariser; {without} has no bias (bias: false). ",
    )


def _tag(row: sp.Symbol, col: sp.Symbol) -> tuple:
    """A block tag ``[theta_1, theta_2]`` as prose parts."""
    return ("Block [", row, ", ", col, "]")


def build_gauss_newton(d: Derivation) -> None:
    L = d.depth
    loss = d.loss
    l2 = d.spec.regularization.l2

    def gn(J: sp.MatrixSymbol, S: sp.MatrixSymbol) -> sp.Expr:
        core = sp.MatMul(1 / nt.N, nt.SampleSum(sp.MatMul(J.T, S, J)))
        return sp.MatAdd(core, nt.lambda_2 / nt.N * nt.I_w) if l2 else core

    Jz, Ja = nt.J(L, "z"), nt.J(L, "a")
    if d.output.vector or loss.matching:
        steps: tuple = ()
        rhs = gn(Jz, nt.Sx(L, "s"))
        prose: tuple = (
            "The Gauss-Newton approximation, with ",
            sp.Eq(Jz, sp.Derivative(nt.vec("z", L), nt.theta_v), evaluate=False),
            " and ",
            nt.Sx(L, "s"),
            " the output curvature of one sample (positive semi-definite): the R-operator "
            "sweep without the f'' and delta V terms.",
        )
    else:
        steps = (gn(Ja, nt.Sx(L, "l2")),)
        rhs = gn(Jz, nt.Sx(L, "sG"))
        prose = (
            "The Gauss-Newton approximation for a loss not matched to its output activation "
            "keeps the loss's curvature in a: ",
            sp.Eq(Ja, sp.Derivative(nt.vec("a", L), nt.theta_v), evaluate=False),
            " and ",
            nt.Sx(L, "l2"),
            " the diagonal matrix of ",
            sp.Derivative(nt.ell(nt.a(L)[nt.j], nt.y[nt.j]), (nt.a(L)[nt.j], 2)),
            " (positive semi-definite whenever the loss is convex in a). The code applies it to ",
            sp.Eq(Jz, sp.Derivative(nt.vec("z", L), nt.theta_v), evaluate=False),
            ", as ",
            sp.Eq(Ja, sp.MatMul(DiagMatrix(nt.vec("fp", L)), Jz), evaluate=False),
            ", with ",
            nt.Sx(L, "sG"),
            " the diagonal matrix of the previous equation.",
        )
    if l2:
        prose = (
            *prose,
            " The L2 term adds ",
            nt.lambda_2 / nt.N,
            " on the weights only (",
            nt.I_w,
            ": 1 on each weight, 0 on each bias).",
        )
    d.add(Equation("gauss_newton", SECOND, nt.G, rhs, steps=steps, prose=prose))
