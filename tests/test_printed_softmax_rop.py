"""A softmax output's R{Delta_L} (``rop.out``) is printed from its matrix form, like every other
statement of the R-operator sweep: ``S_d o R{Z} + S_u o ((S_v o R{Z}) 1 1^T)``, the kernels
d, u, v of ``S = diag(d) + u v^T`` over the batch, and the column of n_L ones that sums a row
(``M 1``) and repeats a column over the units (``r 1^T``). No template types it.

Checked here: the printer's forms of the columns of ones (NumPy and PyTorch); the generated
``_rop`` holds the printer's statement of ``rop.out`` under its citation and no typed kernel
line; a wrong matrix form changes the generated code and its H v, and ``symgrad verify`` fails
its row; the printed H v against differences of the gradient.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad import derive, load_spec
from symgrad.codegen.generate import render
from symgrad.codegen.regulariser import NAMES
from symgrad.codegen.rop import table
from symgrad.derivation import notation as nt
from symgrad.derivation.second_order import S_parts, ones_n
from symgrad.printers.matrix_numpy import (
    Array,
    Entrywise,
    MatrixNumPyPrinter,
    Ones,
    PrintError,
    text,
)
from symgrad.printers.torch import MatrixTorchPrinter
from symgrad.runtime.loader import import_module_from_source
from symgrad.runtime.verify import verify

ROOT = Path(__file__).resolve().parent.parent
SPEC = {
    "name": "softmax_rop",
    "inputs": 3,
    "layers": [{"units": 4, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
    "loss": "cross_entropy",
    "regularization": {"l2": 0.1},
}


def _data(n: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)), np.eye(3)[rng.integers(0, 3, n)]


def _module(d, name: str):
    source, _ = render(d, f"{name}.yaml")
    return source, import_module_from_source(source, name)


def _trainer(module):
    cls = next(v for v in vars(module).values() if isinstance(v, type) and hasattr(v, "hvp"))
    return cls(seed=0)


def _rop_lines(source: str) -> list[str]:
    start = source.index("    def _rop(")
    return source[start : source.index("    def hvp(", start)].splitlines()


# -- the printer -----------------------------------------------------------------------------


def test_columns_of_ones_on_the_right_print_as_row_sums_and_broadcasts():
    K = sp.Symbol("K", integer=True, positive=True)
    M, r = sp.MatrixSymbol("M", nt.m, K), sp.MatrixSymbol("r", nt.m, 1)
    R = sp.MatrixSymbol("R", nt.m, K)
    one = sp.MatrixSymbol("ones_K", K, 1)
    a = sp.Symbol("a", real=True)
    tab = {
        "M": Array("m_1"),
        "r": Array("r_1"),
        "R": Array("Rz_1", batched=True),
        "U": Entrywise(-a, {"a": "a_1"}),
        "ones_K": Ones(),
    }
    U = sp.MatrixSymbol("U", nt.m, K)
    p = MatrixNumPyPrinter(tab)
    assert p.matrix(M * one) == "m_1.sum(axis=-1, keepdims=True)"
    assert p.matrix(r * one.T) == "r_1"
    assert p.matrix(sp.MatMul(M, one, one.T)) == "m_1.sum(axis=-1, keepdims=True)"
    rank_one = sp.HadamardProduct(U, sp.MatMul(sp.HadamardProduct(M, R), one, one.T))
    # an entrywise product printed with its sign is subtracted
    assert p.matrix(sp.MatAdd(R, rank_one)) == (
        "Rz_1 - (Rz_1 * m_1).sum(axis=-1, keepdims=True) * a_1"
    )
    torch = MatrixTorchPrinter(tab)
    assert torch.matrix(sp.MatMul(M, one, one.T)) == "m_1.sum(axis=-1, keepdims=True)"
    with pytest.raises(PrintError):  # M^T 1^T: no column to repeat
        p.matrix(M.T * one.T)
    # the column of ones of the batch keeps its forms on the left
    assert p.matrix(nt.ones_m.T * M) == "m_1.sum(axis=-2, keepdims=True)"


def test_the_rows_sum_agrees_with_numpy():
    """The printed statement run on numbers: S R{z} per sample, S = diag(a) - a a^T."""
    d = derive(load_spec(SPEC))
    lhs, rhs = d.equation("rop.out").matrix
    p = MatrixNumPyPrinter(table(d), {**NAMES, "m": "m"})
    (line,) = p.assign("Rdelta_2", rhs)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5, 3))
    a = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    Rz = rng.standard_normal((2, 5, 3))  # two directions
    scope = {"np": np, "a_2": a, "z_2": z, "Rz_2": Rz, "Y": np.eye(3)[[0, 1, 2, 0, 1]]}
    exec(line, scope)  # noqa: S102 - the printer's own statement
    S = np.einsum("xk,kj->xkj", a, np.eye(3)) - np.einsum("xk,xj->xkj", a, a)
    np.testing.assert_allclose(scope["Rdelta_2"], np.einsum("xkj,dxj->dxk", S, Rz), atol=1e-14)


# -- the Derivation --------------------------------------------------------------------------


def test_rop_out_of_a_softmax_output_has_a_matrix_form():
    d = derive(load_spec(SPEC))
    eq = d.equation("rop.out")
    lhs, rhs = eq.matrix
    Sd, Su, Sv = S_parts(2)
    one = ones_n(2)
    assert lhs == nt.RDelta(2)
    assert rhs.has(Sd) and rhs.has(Su) and rhs.has(Sv) and rhs.has(one)
    assert eq.gauss_newton == ()  # softmax with cross-entropy: S is its own Gauss-Newton S
    # printed with the kernels of hess.out.diag, .u, .v; the ones are no array
    tab = table(d)
    for sym, key in zip((Sd, Su, Sv), ("hess.out.diag", "hess.out.u", "hess.out.v")):
        assert tab[sym.name].expr == d.kernel(key)
    assert isinstance(tab[one.name], Ones)


# -- the generated module --------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SPEC, ROOT / "examples" / "softmax_iris.yaml"])
def test_generated_rop_prints_rop_out_under_its_citation(spec):
    d = derive(load_spec(spec))
    source, _ = render(d, "net.yaml")
    lines = _rop_lines(source)
    L = d.depth
    lhs, rhs = d.equation("rop.out").matrix
    printed = MatrixNumPyPrinter(table(d), {**NAMES, "m": "m"}).assign(f"Rdelta_{L}", rhs)
    stmts = [ln.strip() for ln in lines]
    at = stmts.index(printed[0])
    assert stmts[at - 1] == f"# ({d.eq('rop.out')}) {text(lhs)} = {text(rhs)}"
    assert not any("vRz" in s for s in stmts)
    # the only sum over the units in _rop is the printed one
    assert [s for s in stmts if ".sum(axis=-1" in s or "np.sum(" in s] == printed


def test_the_templates_type_no_softmax_r_delta():
    numpy_tpl = (ROOT / "templates" / "numpy" / "second_order.py.jinja").read_text()
    torch_tpl = (ROOT / "templates" / "torch" / "module.py.jinja").read_text()
    for tpl in (numpy_tpl, torch_tpl):
        rop = tpl[tpl.index("def _rop(") : tpl.index("def hvp(")]
        assert "{% for line in rop.out %}" in rop
        assert not re.search(r"vRz|out\.rop_[sv]\b|rop\.eq_out|np\.sum|torch\.sum", rop)


def test_a_wrong_matrix_form_changes_the_code_and_fails_verify():
    """The rank-one part read with the diagonal kernel (d for u): the generated statement
    changes, its H v with it, and the verifier fails the matrix row of rop.out."""
    spec = load_spec(SPEC)
    X, Y = _data()
    v = np.random.default_rng(2).standard_normal(31)
    right_src, right_mod = _module(derive(spec), "softmax_rop_right")
    d = derive(spec)
    eq = d.equation("rop.out")
    Sd, Su, _ = S_parts(2)
    lhs, rhs = eq.matrix
    wrong = dataclasses.replace(eq, matrix=(lhs, rhs.xreplace({Su: Sd})))
    d.equations[d.equations.index(eq)] = wrong
    d._by_key["rop.out"] = wrong
    wrong_src, wrong_mod = _module(d, "softmax_rop_wrong")
    assert _rop_lines(right_src) != _rop_lines(wrong_src)
    hv_right = _trainer(right_mod).hvp(X, Y, v)
    hv_wrong = _trainer(wrong_mod).hvp(X, Y, v)
    assert np.max(np.abs(hv_right - hv_wrong)) > 1e-3
    rows = {r.form: r for r in verify(d).rows if r.key == "rop.out"}
    assert rows["matrix"].status == "FAIL", rows  # (the right form passes: tests/test_verify.py)
    assert rows["index"].status == "ok", rows


def test_printed_hvp_and_hessian_against_differences_of_the_gradient():
    d = derive(load_spec(SPEC))
    _, mod = _module(d, "softmax_rop_fd")
    t = _trainer(mod)
    X, Y = _data()
    theta = t.get_flat().copy()
    P = theta.size
    H = t.hessian(X, Y)
    cols = []
    for q in range(P):
        e = np.zeros(P)
        e[q] = 1e-5
        t.set_flat(theta + e)
        gp = t.gradient_flat(X, Y)
        t.set_flat(theta - e)
        gm = t.gradient_flat(X, Y)
        cols.append((gp - gm) / 2e-5)
    t.set_flat(theta)
    fd = np.stack(cols, axis=1)
    np.testing.assert_allclose(H, fd, atol=1e-7)
    v = np.random.default_rng(3).standard_normal(P)
    np.testing.assert_allclose(t.hvp(X, Y, v), fd @ v, atol=1e-6)
