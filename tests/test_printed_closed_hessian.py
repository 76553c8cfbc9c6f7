"""The closed-form Hessian of a model without hidden layers is printed from the matrix form of
``hess.closed`` (issue 9): ``H_j = (1/m) X~^T S_j X~ (+ the L2 term)``, lowered by
:mod:`symgrad.codegen.closed` (the syrk rewrite, the blocks of X~ = [X, 1]). It agrees with the
R-operator's columns, and a changed matrix form changes the generated Hessian."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad.codegen.closed import ClosedFormError, _factors, closed_hessian
from symgrad.codegen.generate import render_source
from symgrad.derivation import derive
from symgrad.derivation import notation as nt
from symgrad.printers.numpy import NumPyPrinter
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _spec(units=1, activation="sigmoid", loss="log_loss", bias=True, l2=0.2) -> dict:
    return {
        "name": f"closed_{units}_{activation}_{int(bias)}",
        "inputs": 4,
        "layers": [{"units": units, "activation": activation, "bias": bias}],
        "loss": loss,
        "regularization": {"l2": l2},
        "init": {"seed": 2},
    }


def _model(d, tag=""):
    module = import_module_from_source(render_source(d, "net.yaml"), f"{d.spec.name}{tag}_cl")
    cls = next(v for v in vars(module).values() if isinstance(v, type) and hasattr(v, "fit"))
    return cls()


def _data(spec, m=23):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((m, spec["inputs"]))
    Y = (rng.random((m, spec["layers"][0]["units"])) < 0.5).astype(float)
    return X, Y


CASES = {
    "logistic": _spec(),
    "logistic, no bias": _spec(bias=False),
    "3 sigmoid units": _spec(3),
    "tanh, mse (s < 0)": _spec(2, "tanh", "mse", l2=0.0),
    "linear, mse (s = 1)": _spec(1, "identity", "mse", bias=False),
}


@pytest.mark.parametrize("spec", CASES.values(), ids=CASES.keys())
def test_printed_closed_form_is_the_r_operators_hessian(spec):
    model = _model(derive(spec_from_dict(spec)))
    X, Y = _data(spec)
    H = model.hessian(X, Y)
    args = (X, Y, False, len(X)) if spec["regularization"]["l2"] else (X, Y, False)
    np.testing.assert_allclose(H, model._full(*args), rtol=1e-10, atol=1e-12)


def test_the_block_is_printed_from_the_matrix_form():
    d = derive(spec_from_dict(_spec()))
    closed = closed_hessian(d, NumPyPrinter)
    assert closed.s == "a_1 * (1 - a_1)"
    lines = closed.block("H", "s")
    assert "B = X * np.sqrt(s)" in "\n".join(lines)  # the syrk lowering, under s >= 0
    assert lines[-1] == "H /= m"  # the factor 1/m
    # s = 1 (the identity with mse): no sign test; no bias: one square block
    d = derive(spec_from_dict(_spec(1, "identity", "mse", bias=False)))
    closed = closed_hessian(d, NumPyPrinter)
    assert closed.block("H", "s") == [
        "B = X * np.sqrt(s)",
        "H[:] = B.T @ B  # symmetric rank-m update: NumPy calls syrk for B.T @ B",
        "H /= m",
    ]
    # softmax regression: no matrix form, nothing printed from it
    assert (
        closed_hessian(derive(spec_from_dict(_spec(3, "softmax", "cross_entropy"))), NumPyPrinter)
        is None
    )


def _mutated(spec, rhs_of):
    d = derive(spec_from_dict(spec))
    eq = d.equation("hess.closed")
    lhs, rhs = eq.matrix
    new = dataclasses.replace(eq, matrix=(lhs, rhs_of(rhs)))
    d.equations[d.equations.index(eq)] = new
    d._by_key[eq.key] = new
    return d


def _data_term(rhs):
    return next(t for t in rhs.args if nt.Xt() in t.atoms(sp.MatrixSymbol))


@pytest.mark.parametrize("units", [1, 3])
def test_a_changed_matrix_form_changes_the_generated_hessian(units):
    """Without 1/m the data part is m times larger; without S it is X~^T X~ / m (the L2
    diagonal, from reg.hess, is the same in both)."""
    spec = _spec(units)
    X, Y = _data(spec)
    m = len(X)
    right = _model(derive(spec_from_dict(spec))).hessian(X, Y)
    reg = np.diag(_model(derive(spec_from_dict(spec)))._reg_hess(m))
    Xt = np.hstack([X, np.ones((m, 1))])
    K = units

    def no_scale(rhs):
        data = _data_term(rhs)
        return rhs.xreplace({data: sp.MatMul(*_factors(data)[1])})

    def no_s(rhs):
        return rhs.xreplace({nt.Sdiag("j"): sp.Identity(nt.m)})

    got = _model(_mutated(spec, no_scale), "_nom").hessian(X, Y)
    np.testing.assert_allclose(got - reg, m * (right - reg), rtol=1e-10)
    got = _model(_mutated(spec, no_s), "_nos").hessian(X, Y)
    # X~^T X~ / m per unit, in the flat order (W row-major, then b)
    block = Xt.T @ Xt / m
    n0 = X.shape[1]
    flat = [k * n0 + i for k in range(K) for i in range(n0)] + [K * n0 + k for k in range(K)]
    aug = np.kron(np.eye(K), block)  # augmented order (k, [x, 1])
    order = [k * (n0 + 1) + i for k in range(K) for i in range(n0)]
    order += [k * (n0 + 1) + n0 for k in range(K)]
    want = np.empty_like(aug)
    want[np.ix_(flat, flat)] = aug[np.ix_(order, order)]
    np.testing.assert_allclose(got, want + reg, rtol=1e-10)
    assert np.abs(got - right).max() > 1e-3


def test_a_matrix_form_the_lowering_does_not_know_is_refused():
    spec = _spec()

    def extra(rhs):  # a term that is neither the data's nor the L2 term
        return sp.MatAdd(rhs, sp.Identity(nt.n(0) + 1))

    def without_ones(rhs):  # X^T S X where the layer has a bias: X~ = [X, 1] is the product's
        data = _data_term(rhs)
        return rhs.xreplace({data: sp.MatMul(1 / nt.m, nt.A(0).T, nt.Sdiag("j"), nt.A(0))})

    def without_l2(rhs):  # the spec has l2: the trainer's _reg_hess would disagree
        return _data_term(rhs)

    for change in (extra, without_ones, without_l2):
        with pytest.raises(ClosedFormError):
            closed_hessian(_mutated(spec, change), NumPyPrinter)


def test_the_template_types_no_closed_form_formula():
    """Outside softmax regression (no matrix form yet) the closed form's section places the
    printed block: no product, square root, sum or factor 1/m of its own."""
    tpl = (ROOT / "templates" / "numpy" / "second_order.py.jinja").read_text()
    start = tpl.index("{% set closed = out.closed_hessian %}")
    section = tpl[start : tpl.index("{% if reg.hess %}", start)]
    soft = section.index("{% if out.softmax %}")
    section = section[:soft] + section[section.index("{% else %}", soft) :]
    assert '{% for line in closed.block("H", "s") %}' in section
    for line in section.splitlines():
        code = re.sub(r"\{\{.*?\}\}", "", line.strip())
        if not code or code.startswith(("{%", "#")):
            continue
        assert not re.search(r"@|sqrt|\.sum\(|/= ?m|\.T\b", code), line
