"""The symbols of the derivation, and how each one is displayed.

Every symbol has a plain identifier as its SymPy name (``z_2``, ``delta_1``, ``W_2``,
``lambda_2``), so ``sympy.lambdify`` accepts any expression of the IR, and an entry in the display
table ``DISPLAY``: name -> (LaTeX, unicode). The printers read the table; nothing here prints.

Conventions (stated in the derivation's Notation section):

- index form: one sample, column vectors; ``z_l[j]`` is unit ``j`` of layer ``l``
  (``z^{(l)}_j``), ``w_l[j, i]`` the weight from unit ``i`` of layer ``l-1`` to unit ``j`` of
  layer ``l``; ``a_0 = x``.
- matrix form: a batch of ``m`` samples stored row-wise, distinct symbols: ``Z_l``, ``A_l``,
  ``Delta_l`` are ``m x n_l``, ``W_l`` is ``n_l x n_{l-1}``, ``b_l`` is ``1 x n_l`` and
  ``ones_m`` (``m x 1``) broadcasts it: ``Z_l = A_{l-1} W_l^T + ones_m b_l``.

The per-layer constructors are cached, so the same layer always gets the same objects. (The
module is over 400 lines because it is a table: one short constructor per symbol.)
"""

from __future__ import annotations

import functools
import re

import sympy as sp
from sympy.matrices.expressions.diagonal import DiagMatrix

from ..optimizers.base import eta, g, theta  # the optimiser's symbols, shared

#: name -> (LaTeX, unicode) for every symbol made here.
DISPLAY: dict[str, tuple[str, str]] = {}

_SUP = str.maketrans("0123456789()-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾⁻⁺")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _register(name: str, latex: str, uni: str) -> None:
    DISPLAY[name] = (latex, uni)


def display(name: str) -> tuple[str, str] | None:
    """The (LaTeX, unicode) display of the symbol called ``name``; None when it is not ours."""
    return DISPLAY.get(name)


def sup(l: int) -> str:
    """The unicode layer superscript ``⁽²⁾``."""
    return f"({l})".translate(_SUP)


def sub(text: str) -> str:
    """Unicode subscript digits (``2`` -> ``₂``)."""
    return text.translate(_SUB)


# -- scalars --------------------------------------------------------------------------------
#: index symbols: unit i of layer l-1, unit j of layer l, unit k (of the next layer, or softmax);
#: p, q, r for the second index of a Hessian entry
i, j, k, p, q, r = sp.symbols("i j k p q r", integer=True, positive=True)
#: batch size, training-set size
m = sp.Symbol("m", integer=True, positive=True)
N = sp.Symbol("N", integer=True, positive=True)
#: the sample index of a sum over the training set (displayed as x: ``sum_x C_x``)
sample = sp.Symbol("sample", integer=True, positive=True)
#: the cost (on the training set), the cost of one sample, the regulariser, the cost of a batch
#: of m samples (its data term averaged over the batch, R with its 1/N; C_B = C when m = N)
C = sp.Symbol("C", real=True)
C_x = sp.Symbol("C_x", real=True)
R = sp.Symbol("R", real=True)
C_B = sp.Symbol("C_B", real=True)
#: regulariser strengths (L2, L1), the damping of Newton's method (only; momentum's coefficient
#: is gamma, in symgrad.optimizers)
lambda_2 = sp.Symbol("lambda_2", nonnegative=True)
lambda_1 = sp.Symbol("lambda_1", nonnegative=True)
mu = sp.Symbol("mu", nonnegative=True)
#: the scalars of Newton's conjugate gradients: step length, r^T r at the start of an
#: iteration, the ratio of the new r^T r to it
alpha = sp.Symbol("alpha", real=True)
rho = sp.Symbol("rho", nonnegative=True)
beta = sp.Symbol("beta", nonnegative=True)
#: one weight (the regulariser's kernels), its value after a step without the L1 term
weight = sp.Symbol("w", real=True)
u = sp.Symbol("u", real=True)
#: the per-unit loss ell(a, y)
ell = sp.Function("ell")

for _name, _tex, _uni in (
    ("i", "i", "i"),
    ("j", "j", "j"),
    ("k", "k", "k"),
    ("q", "q", "q"),
    ("r", "r", "r"),
    ("m", "m", "m"),
    ("N", "N", "N"),
    ("sample", "x", "x"),
    ("C", "C", "C"),
    ("C_x", "C_x", "Cₓ"),
    ("R", "R", "R"),
    ("C_B", "C_B", "C_B"),
    ("alpha", r"\alpha", "α"),
    ("rho", r"\rho", "ρ"),
    ("beta", r"\beta", "β"),
    ("lambda_2", r"\lambda_2", "λ₂"),
    ("lambda_1", r"\lambda_1", "λ₁"),
    ("mu", r"\mu", "μ"),
    ("eta", r"\eta", "η"),
    ("theta", r"\theta", "θ"),
    ("w", "w", "w"),
    ("u", "u", "u"),
    ("ell", r"\ell", "ℓ"),
    ("x", "x", "x"),
    ("y", "y", "y"),
    ("X", "X", "X"),
    ("Y", "Y", "Y"),
    ("ones_m", r"\mathbf{1}", "𝟏"),
    ("H", "H", "H"),
    ("G", "G", "G"),
    ("J", "J", "J"),
    ("S", "S", "S"),
    ("I", "I", "I"),
    ("g", "g", "g"),
    ("v", "v", "v"),
    ("p", "p", "p"),
):
    _register(_name, _tex, _uni)

#: the inputs and targets of one sample (index form) and of a batch (matrix form)
x = sp.IndexedBase("x", real=True)
y = sp.IndexedBase("y", real=True)
ones_m = sp.MatrixSymbol("ones_m", m, 1)
#: layer l in general (for the Notation section), and a^{(0)} (= x)
zl, al, wl, a0 = (sp.IndexedBase(name, real=True) for name in ("z_l", "a_l", "w_l", "a_0"))
for _name, _tex, _uni in (
    ("z_l", "z^{(l)}", "z⁽ˡ⁾"),
    ("a_l", "a^{(l)}", "a⁽ˡ⁾"),
    ("w_l", "w^{(l)}", "w⁽ˡ⁾"),
    ("a_0", "a^{(0)}", "a⁽⁰⁾"),
):
    _register(_name, _tex, _uni)


class SampleSum(sp.MatrixExpr):
    """``sum_x M_x``: a matrix summed over the training samples (SymPy's ``Sum`` is scalar)."""

    def __new__(cls, summand: sp.MatrixExpr):
        return super().__new__(cls, summand)

    @property
    def summand(self) -> sp.MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return self.args[0].shape


# -- per layer ------------------------------------------------------------------------------
@functools.cache
def n(l: int) -> sp.Symbol:
    """The width of layer ``l`` (``n_0`` inputs)."""
    s = sp.Symbol(f"n_{l}", integer=True, positive=True)
    _register(s.name, f"n_{{{l}}}", "n" + sub(str(l)))
    return s


def _layer_base(stem: str, l: int, tex: str, uni: str) -> sp.IndexedBase:
    # no shape: substituting the widths (d.widths) must leave the base the same object
    name = f"{stem}_{l}"
    _register(name, f"{tex}^{{({l})}}", uni + sup(l))
    return sp.IndexedBase(name, real=True)


@functools.cache
def z(l: int) -> sp.IndexedBase:
    """Pre-activations of layer ``l``: ``z_l[j]``."""
    return _layer_base("z", l, "z", "z")


@functools.cache
def a(l: int) -> sp.IndexedBase:
    """Activations of layer ``l`` (``a(0)`` is the input ``x``)."""
    if l == 0:
        return x
    return _layer_base("a", l, "a", "a")


@functools.cache
def delta(l: int) -> sp.IndexedBase:
    """Deltas ``delta_l[j] = dC_x / dz_l[j]`` (per sample)."""
    return _layer_base("delta", l, r"\delta", "δ")


@functools.cache
def w(l: int) -> sp.IndexedBase:
    """Weights of layer ``l``: ``w_l[j, i]`` from unit i of layer l-1 to unit j of layer l."""
    return _layer_base("w", l, "w", "w")


@functools.cache
def b(l: int) -> sp.IndexedBase:
    """Biases of layer ``l``: ``b_l[j]``."""
    return _layer_base("b", l, "b", "b")


@functools.cache
def s(l: int) -> sp.IndexedBase:
    """Output curvature ``s_l[j] = d delta_l[j] / d z_l[j]``."""
    return _layer_base("s", l, "s", "s")


@functools.cache
def f(l: int) -> sp.FunctionClass:
    """The activation of layer ``l`` as an undefined function (displayed ``f_l``)."""
    name = f"f_{l}"
    _register(name, f"f_{{{l}}}", "f" + sub(str(l)))
    return sp.Function(name)


# R-operator (Pearlmutter): R{.} = d/dr (.)(theta + r v) at r = 0, v = (v_l, vb_l).
@functools.cache
def v(l: int) -> sp.IndexedBase:
    """The weight part of the direction v: ``v_l[j, i]``."""
    return _layer_base("v", l, "v", "v")


@functools.cache
def vb(l: int) -> sp.IndexedBase:
    """The bias part of the direction v: ``vb_l[j]``."""
    name = f"vb_{l}"
    _register(name, f"v^{{({l})}}_{{b}}", "v" + sup(l) + "_b")
    return sp.IndexedBase(name, real=True)


def _r_base(stem: str, l: int, tex: str, uni: str) -> sp.IndexedBase:
    name = f"R{stem}_{l}"
    _register(name, r"\mathcal{R}\{%s^{(%d)}\}" % (tex, l), "R{" + uni + sup(l) + "}")
    return sp.IndexedBase(name, real=True)


@functools.cache
def Rz(l: int) -> sp.IndexedBase:
    """``R{z_l}``."""
    return _r_base("z", l, "z", "z")


@functools.cache
def Ra(l: int) -> sp.IndexedBase:
    """``R{a_l}`` (``R{a_0} = 0``)."""
    return _r_base("a", l, "a", "a")


@functools.cache
def Rdelta(l: int) -> sp.IndexedBase:
    """``R{delta_l}``."""
    return _r_base("delta", l, r"\delta", "δ")


# -- matrix forms (a batch of m samples, row-wise) ------------------------------------------
def _matrix(name: str, rows, cols, tex: str, uni: str) -> sp.MatrixSymbol:
    _register(name, tex, uni)
    return sp.MatrixSymbol(name, rows, cols)


@functools.cache
def Z(l: int) -> sp.MatrixSymbol:
    """``Z_l`` (m x n_l)."""
    return _matrix(f"Z_{l}", m, n(l), f"Z^{{({l})}}", "Z" + sup(l))


@functools.cache
def A(l: int) -> sp.MatrixSymbol:
    """``A_l`` (m x n_l); ``A(0)`` is the input batch ``X``."""
    if l == 0:
        return sp.MatrixSymbol("X", m, n(0))
    return _matrix(f"A_{l}", m, n(l), f"A^{{({l})}}", "A" + sup(l))


@functools.cache
def Y(L: int) -> sp.MatrixSymbol:
    """The target batch (m x n_L)."""
    return sp.MatrixSymbol("Y", m, n(L))


@functools.cache
def Delta(l: int) -> sp.MatrixSymbol:
    """``Delta_l`` (m x n_l): row x is ``delta_l`` of sample x."""
    return _matrix(f"Delta_{l}", m, n(l), rf"\Delta^{{({l})}}", "Δ" + sup(l))


@functools.cache
def W(l: int) -> sp.MatrixSymbol:
    """``W_l`` (n_l x n_{l-1}); entry (j, i) is ``w_l[j, i]``."""
    return _matrix(f"W_{l}", n(l), n(l - 1), f"W^{{({l})}}", "W" + sup(l))


@functools.cache
def B(l: int) -> sp.MatrixSymbol:
    """The bias row ``b_l`` (1 x n_l) of the matrix form (named ``b_l`` like its entries)."""
    return _matrix(f"b_{l}", 1, n(l), f"b^{{({l})}}", "b" + sup(l))


@functools.cache
def S(l: int) -> sp.MatrixSymbol:
    """``S_l`` (m x n_l), row x is ``s_l`` of sample x (``S = diag(s)`` per sample)."""
    return _matrix(f"S_{l}", m, n(l), f"S^{{({l})}}", "S" + sup(l))


@functools.cache
def V(l: int) -> sp.MatrixSymbol:
    """The weight part of v as a matrix (n_l x n_{l-1})."""
    return _matrix(f"V_{l}", n(l), n(l - 1), f"V^{{({l})}}", "V" + sup(l))


@functools.cache
def Vb(l: int) -> sp.MatrixSymbol:
    """The bias part of v as a row (1 x n_l)."""
    return _matrix(f"vb_{l}", 1, n(l), f"v^{{({l})}}_{{b}}", "v" + sup(l) + "_b")


@functools.cache
def RZ(l: int) -> sp.MatrixSymbol:
    """``R{Z_l}`` (m x n_l)."""
    return _matrix(f"RZ_{l}", m, n(l), r"\mathcal{R}\{Z^{(%d)}\}" % l, "R{Z" + sup(l) + "}")


@functools.cache
def RA(l: int) -> sp.MatrixSymbol:
    """``R{A_l}`` (m x n_l)."""
    return _matrix(f"RA_{l}", m, n(l), r"\mathcal{R}\{A^{(%d)}\}" % l, "R{A" + sup(l) + "}")


@functools.cache
def RDelta(l: int) -> sp.MatrixSymbol:
    """``R{Delta_l}`` (m x n_l)."""
    return _matrix(
        f"RDelta_{l}", m, n(l), r"\mathcal{R}\{\Delta^{(%d)}\}" % l, "R{Δ" + sup(l) + "}"
    )


@functools.cache
def FP(l: int) -> sp.MatrixSymbol:
    """``F'_l`` (m x n_l): f_l' at every entry of ``Z_l``."""
    return _matrix(f"FP_{l}", m, n(l), f"F_{{{l}}}'", "F" + sub(str(l)) + "′")


@functools.cache
def FPP(l: int) -> sp.MatrixSymbol:
    """``F''_l`` (m x n_l): f_l'' at every entry of ``Z_l``."""
    return _matrix(f"FPP_{l}", m, n(l), f"F_{{{l}}}''", "F" + sub(str(l)) + "″")


@functools.cache
def GW(l: int) -> sp.MatrixSymbol:
    """``nabla_{W_l} C_B`` (n_l x n_{l-1}): the gradient of a batch's cost (1/m)."""
    return _matrix(
        f"dC_dW_{l}", n(l), n(l - 1), r"\nabla_{W^{(%d)}} C_B" % l, "∇_W" + sup(l) + " C_B"
    )


@functools.cache
def Gb(l: int) -> sp.MatrixSymbol:
    """``nabla_{b_l} C_B`` (1 x n_l): the gradient of a batch's cost (1/m)."""
    return _matrix(f"dC_db_{l}", 1, n(l), r"\nabla_{b^{(%d)}} C_B" % l, "∇_b" + sup(l) + " C_B")


@functools.cache
def HvW(l: int) -> sp.MatrixSymbol:
    """The weight block of the batch cost's Hessian-vector product (n_l x n_{l-1})."""
    return _matrix(f"Hv_W_{l}", n(l), n(l - 1), r"(H_B v)_{W^{(%d)}}" % l, "(H_B v)_W" + sup(l))


@functools.cache
def Hvb(l: int) -> sp.MatrixSymbol:
    """The bias block of the batch cost's Hessian-vector product (1 x n_l)."""
    return _matrix(f"Hv_b_{l}", 1, n(l), r"(H_B v)_{b^{(%d)}}" % l, "(H_B v)_b" + sup(l))


@functools.cache
def dCdA(l: int) -> sp.MatrixSymbol:
    """``dC_x/dA_l`` (m x n_l): row x holds ``dC_x / da_l`` of sample x."""
    return _matrix(
        f"dC_dA_{l}", m, n(l), r"\frac{\partial C_x}{\partial A^{(%d)}}" % l, "∂Cₓ/∂A" + sup(l)
    )


@functools.cache
def HvW_(l: int) -> sp.IndexedBase:
    """``(Hv)`` at weight ``w_l[j, i]`` (index form)."""
    name = f"Hv_w_{l}"
    _register(name, r"(Hv)_{w^{(%d)}}" % l, "(Hv)_w" + sup(l))
    return sp.IndexedBase(name, real=True)


@functools.cache
def Hvb_(l: int) -> sp.IndexedBase:
    """``(Hv)`` at bias ``b_l[j]`` (index form)."""
    name = f"Hv_b_{l}"
    _register(name, r"(Hv)_{b^{(%d)}}" % l, "(Hv)_b" + sup(l))
    return sp.IndexedBase(name, real=True)


@functools.cache
def sG(l: int) -> sp.IndexedBase:
    """The Gauss-Newton curvature of output unit j: ``sG_l[j]``."""
    name = f"sG_{l}"
    _register(name, r"s^{G}", "sᴳ")
    return sp.IndexedBase(name, real=True)


@functools.cache
def vec(stem: str, l: int) -> sp.MatrixSymbol:
    """Layer ``l``'s column ``a^{(l)}``, ``z^{(l)}`` or ``s^{(l)}`` of one sample (n_l x 1)."""
    if stem == "fp":  # f_l' at every unit
        return _matrix(f"fpvec_{l}", n(l), 1, rf"f_{{{l}}}'\left(z^{{({l})}}\right)", "f′(z)")
    return _matrix(f"{stem}vec_{l}", n(l), 1, f"{stem}^{{({l})}}", stem + sup(l))


#: the softmax output Jacobian d delta_k / d z_j = hd_k [k = j] + hu_k hv_j (diagonal + rank one)
hd = sp.IndexedBase("hd", real=True)
hu = sp.IndexedBase("hu", real=True)
hv = sp.IndexedBase("hv", real=True)
#: the number of parameters, the flat parameter vector, the step's gradient g (of the smooth part
#: of the batch cost: data and L2 terms, not L1) and the gradient of one sample's cost
P = sp.Symbol("P", integer=True, positive=True)
theta_v = sp.MatrixSymbol("theta_v", P, 1)
g_v = sp.MatrixSymbol("g_v", P, 1)
grad_Cx = sp.MatrixSymbol("gradC_x", P, 1)  # noqa: N816 - nabla_theta C_x (per sample: "_x")
#: Hessian, Gauss-Newton matrix, identity on the weights (0 on the biases)
H = sp.MatrixSymbol("H", P, P)
G = sp.MatrixSymbol("G", P, P)
I_w = sp.MatrixSymbol("I_w", P, P)
#: Newton's direction, the conjugate-gradient residual and search direction
p_v = sp.MatrixSymbol("p_v", P, 1)
r_v = sp.MatrixSymbol("r_v", P, 1)
d_v = sp.MatrixSymbol("d_v", P, 1)
for _name, _tex, _uni in (
    ("X", "X", "X"),
    ("Y", "Y", "Y"),
    ("hd", "d", "d"),
    ("hu", "u", "u"),
    ("hv", "v", "v"),
    ("P", "P", "P"),
    ("theta_v", r"\theta", "θ"),
    ("g_v", "g", "g"),
    ("gradC_x", r"\nabla_{\theta} C_x", "∇Cₓ"),
    ("I_w", "I_{w}", "I_w"),
    ("p_v", r"p", "p"),
    ("r_v", r"r", "r"),
    ("d_v", r"d", "d"),
):
    _register(_name, _tex, _uni)


@functools.cache
def J(L: int, stem: str = "a") -> sp.MatrixSymbol:
    """The Jacobian ``J_x = d stem^{(L)} / d theta`` of one sample (n_L x P)."""
    name = f"J{stem}_x"
    _register(name, f"J^{{{stem}}}_{{x}}", f"J{stem}ₓ")
    return sp.MatrixSymbol(name, n(L), P)


@functools.cache
def Sx(L: int, stem: str = "s") -> sp.MatrixSymbol:
    """``S_x = diag(s)`` of one sample (n_L x n_L) (``stem`` ``l2`` for ``diag(l''(a))``)."""
    name = f"S{stem}_x"
    tex = {"s": "S_{x}", "sG": r"S^{G}_{x}", "l2": r"S^{\ell}_{x}"}[stem]
    _register(name, tex, "Sₓ")
    return sp.MatrixSymbol(name, n(L), n(L))


@functools.cache
def Xt() -> sp.MatrixSymbol:
    """The input batch with a column of ones: ``[X, 1]`` (m x (n_0 + 1))."""
    return _matrix("Xt", m, n(0) + 1, r"\tilde{X}", "X̃")


@functools.cache
def Sdiag(idx: str) -> sp.MatrixSymbol:
    """``diag(s_j)`` over the batch (m x m)."""
    return _matrix(f"Sdiag_{idx}", m, m, f"S_{{{idx}}}", "S" + idx)


_UNI_SUP = {"d": "ᵈ", "u": "ᵘ", "v": "ᵛ"}
_UNI_SUB = {"j": "ⱼ", "k": "ₖ"}


@functools.cache
def Spart(part: str, idx: str) -> sp.MatrixSymbol:
    """``diag(part_idx)`` over the batch (m x m): the kernel ``part`` (d, u or v) of unit idx
    of the softmax curvature ``S = diag(d) + u v^T`` at every sample."""
    uni = "S" + _UNI_SUP.get(part, part) + _UNI_SUB.get(idx, idx)
    return _matrix(f"Sdiag{part}_{idx}", m, m, f"S^{{{part}}}_{{{idx}}}", uni)


def Diag(column: sp.MatrixExpr) -> DiagMatrix:
    """``diag(c)``: the diagonal matrix of a column c."""
    return DiagMatrix(column)


@functools.cache
def At(l: int) -> sp.MatrixSymbol:
    """``A~_l = [A_l, 1]`` (m x (n_l + 1)): layer l's outputs with a column of ones (the inputs
    of layer l + 1 with its bias)."""
    return _matrix(f"At_{l}", m, n(l) + 1, rf"\tilde{{A}}^{{({l})}}", "Ã" + sup(l))


#: the names :func:`unit` gives: ``e1_j`` (``e`` layer ``_`` index), ``et1_j`` with ``tilde``
UNIT_NAME = re.compile(r"e(t?)(\d)_([a-z])")


@functools.cache
def unit(l: int, idx: str, tilde: bool = False) -> sp.MatrixSymbol:
    """``e_idx``: the unit column (n_l x 1) selecting unit idx of layer l (``M e_j`` is column
    j of M); ``tilde``: the same unit among the n_l + 1 columns of ``A~_l = [A_l, 1]``."""
    if tilde:
        return _matrix(f"et{l}_{idx}", n(l) + 1, 1, rf"\tilde{{e}}_{{{idx}}}", "ẽ" + idx)
    return _matrix(f"e{l}_{idx}", n(l), 1, f"e_{{{idx}}}", "e" + idx)


@functools.cache
def Hblock(rows: int, cols: int, idx: str, size: tuple) -> sp.MatrixSymbol:
    """The block of the Hessian between unit idx[0] of layer ``rows`` (its weights and bias:
    the rows) and unit idx[1] of layer ``cols`` (the columns), ``size`` (rows, columns)."""
    name = f"H{rows}{cols}_{idx}"
    return _matrix(name, *size, f"H^{{({rows}{cols})}}_{{{idx}}}", f"H{rows}{cols}_{idx}")


__all__ = [
    "DISPLAY",
    "A",
    "B",
    "C",
    "C_B",
    "C_x",
    "Delta",
    "FP",
    "FPP",
    "GW",
    "Gb",
    "HvW",
    "Hvb",
    "N",
    "R",
    "RA",
    "RDelta",
    "RZ",
    "Ra",
    "Rdelta",
    "Rz",
    "S",
    "SampleSum",
    "V",
    "Vb",
    "W",
    "Y",
    "Z",
    "a",
    "a0",
    "alpha",
    "al",
    "b",
    "beta",
    "delta",
    "display",
    "ell",
    "eta",
    "f",
    "g",
    "i",
    "j",
    "k",
    "p",
    "q",
    "r",
    "rho",
    "lambda_1",
    "lambda_2",
    "m",
    "mu",
    "n",
    "ones_m",
    "s",
    "sample",
    "theta",
    "u",
    "v",
    "vb",
    "w",
    "weight",
    "wl",
    "x",
    "y",
    "z",
    "zl",
]
