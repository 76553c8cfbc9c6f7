"""The closed-form Hessian of a model without hidden layers is printed from the matrix form of
``hess.closed`` (issue 9): ``H_j = (1/m) X~^T S_j X~ (+ the L2 term)``, and for softmax
regression the block of units k, j ``H_kj = (1/m) X~^T (delta_kj S^d_k + S^u_k S^v_j) X~ (+ the
L2 term)``, lowered by :mod:`symgrad.codegen.closed` (the syrk rewrite, the blocks of
X~ = [X, 1], the rank-one terms of every pair at once). It agrees with the R-operator's columns,
and a changed matrix form changes the generated Hessian or is refused."""

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
    K = spec["layers"][0]["units"]
    Y = (rng.random((m, K)) < 0.5).astype(float)
    if spec["layers"][0]["activation"] == "softmax":  # one class per sample
        Y = np.eye(K)[rng.integers(0, K, m)]
    return X, Y


CASES = {
    "logistic": _spec(),
    "logistic, no bias": _spec(bias=False),
    "3 sigmoid units": _spec(3),
    "tanh, mse (s < 0)": _spec(2, "tanh", "mse", l2=0.0),
    "linear, mse (s = 1)": _spec(1, "identity", "mse", bias=False),
    "softmax": _spec(3, "softmax", "cross_entropy"),
    "softmax, no bias, no L2": _spec(4, "softmax", "cross_entropy", bias=False, l2=0.0),
    "softmax, no bias": _spec(2, "softmax", "cross_entropy", bias=False),
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
    # softmax regression: S = diag(d) + u v^T with d = a, u = -a, v = a (hess.out.*): the
    # diagonal term by unit, unscaled; the rank-one terms of every pair by one syrk (u = -v)
    d = derive(spec_from_dict(_spec(3, "softmax", "cross_entropy")))
    closed = closed_hessian(d, NumPyPrinter)
    assert (closed.s, closed.coupled.v, closed.coupled.ratio) == ("a_1", "a_1", -1)
    assert closed.block("Hk", "sk", formed=True, scaled=False)[-1] != "Hk /= m"
    lines = closed.rank_one("Haug")
    assert lines[0] == "sv = np.broadcast_to(a_1, (m, 3))"
    assert lines[1] == "Vr = (sv[:, :, None] * Xt[:, None, :]).reshape(m, K * d)"
    assert lines[2].startswith("Haug -= (Vr.T @ Vr).reshape(K, d, K, d)")
    assert lines[-1] == "Haug /= m"
    # no number r with u = r v: the product U^T V
    coupled = dataclasses.replace(closed.coupled, ratio=None)
    lines = dataclasses.replace(closed, coupled=coupled).rank_one("Haug")
    assert "Ur = (su[:, :, None] * Xt[:, None, :]).reshape(m, K * d)" in lines
    assert "Haug += (Ur.T @ Vr).reshape(K, d, K, d)" in lines


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
    """The closed form's section places the printed blocks (softmax regression's too): no
    product, square root, sum or factor 1/m of its own."""
    tpl = (ROOT / "templates" / "numpy" / "second_order.py.jinja").read_text()
    start = tpl.index("{% set closed = out.closed_hessian %}")
    section = tpl[start : tpl.index("{% if reg.hess %}", start)]
    assert '{% for line in closed.block("H", "s") %}' in section
    assert '{% for line in closed.rank_one("Haug") %}' in section
    for line in section.splitlines():
        code = re.sub(r"\{\{.*?\}\}", "", line.strip())
        if not code or code.startswith(("{%", "#")):
            continue
        assert not re.search(r"@|sqrt|\.sum\(|/= ?m|\.T\b|jd|\bU\b|Vr", code), line


# -- softmax regression --------------------------------------------------------------------------

SOFTMAX = _spec(3, "softmax", "cross_entropy")


def _middle(rhs):
    """The middle factor ``delta_kj S^d_k + S^u_k S^v_j`` of the data term."""
    return _factors(_data_term(rhs))[1][1]


def _with_middle(make):
    def change(rhs):
        old = _middle(rhs)
        return rhs.xreplace({old: make(old)})

    return change


def _softmax_blocks(X, A, weights):
    """``sum_x w_kj(x) x~ x~^T / m`` per pair (k, j) in the flat order (W row-major, then b),
    ``weights(A)`` the (m, K, K) array of w_kj(x)."""
    m, n0 = X.shape
    K = A.shape[1]
    Xt = np.hstack([X, np.ones((m, 1))])
    aug = np.einsum("xkj,xp,xq->kpjq", weights(A), Xt, Xt) / m
    aug = aug.reshape(K * (n0 + 1), K * (n0 + 1))
    flat = [k * n0 + i for k in range(K) for i in range(n0)] + [K * n0 + k for k in range(K)]
    order = [k * (n0 + 1) + i for k in range(K) for i in range(n0)]
    order += [k * (n0 + 1) + n0 for k in range(K)]
    want = np.empty_like(aug)
    want[np.ix_(flat, flat)] = aug[np.ix_(order, order)]
    return want


def test_a_changed_softmax_matrix_form_changes_the_generated_hessian():
    """Each change of H_kj's matrix form is what the generated Hessian computes: without 1/m
    (m times the data part), S^d_k S^v_j for the rank-one term (u = +v: a_k a_j added instead
    of subtracted), delta_kj S^u_k for the diagonal term (d = -a < 0: the product, not syrk)."""
    X, Y = _data(SOFTMAX)
    m = len(X)
    model = _model(derive(spec_from_dict(SOFTMAX)))
    right = model.hessian(X, Y)
    reg = np.diag(model._reg_hess(m))
    A = model._forward(X)[2]
    eye = np.eye(A.shape[1])
    np.testing.assert_allclose(
        right - reg,
        _softmax_blocks(X, A, lambda A: A[:, :, None] * (eye - A[:, None, :])),
        rtol=1e-10,
        atol=1e-14,
    )
    Sd, Su, Sv = nt.Spart("d", "k"), nt.Spart("u", "k"), nt.Spart("v", "j")
    delta = sp.KroneckerDelta(nt.k, nt.j)

    def no_scale(rhs):
        data = _data_term(rhs)
        return rhs.xreplace({data: sp.MatMul(*_factors(data)[1])})

    got = _model(_mutated(SOFTMAX, no_scale), "_nom").hessian(X, Y)
    np.testing.assert_allclose(got - reg, m * (right - reg), rtol=1e-10)
    changes = {
        "_dv": (
            _with_middle(lambda _: sp.MatAdd(delta * Sd, sp.MatMul(nt.Spart("d", "k"), Sv))),
            lambda A: A[:, :, None] * (eye + A[:, None, :]),
        ),
        "_du": (
            _with_middle(lambda _: sp.MatAdd(delta * nt.Spart("u", "k"), sp.MatMul(Su, Sv))),
            lambda A: -A[:, :, None] * (eye + A[:, None, :]),
        ),
    }
    for tag, (change, weights) in changes.items():
        got = _model(_mutated(SOFTMAX, change), tag).hessian(X, Y)
        np.testing.assert_allclose(got - reg, _softmax_blocks(X, A, weights), rtol=1e-10)
        assert np.abs(got - right).max() > 1e-3


def test_a_softmax_matrix_form_the_lowering_does_not_know_is_refused():
    Sd, Su, Sv = nt.Spart("d", "k"), nt.Spart("u", "k"), nt.Spart("v", "j")
    delta = sp.KroneckerDelta(nt.k, nt.j)

    def l2_everywhere(rhs):  # the trainer's _reg_hess sits on the diagonal blocks only
        reg = next(t for t in rhs.args if t is not _data_term(rhs))
        return rhs.xreplace({reg: reg.xreplace({delta: sp.Integer(1)})})

    changes = [
        _with_middle(lambda _: sp.MatMul(Su, Sv)),  # no diagonal term
        _with_middle(lambda _: delta * Sd),  # no rank-one term
        _with_middle(lambda _: sp.MatAdd(delta * nt.Spart("d", "j"), sp.MatMul(Su, Sv))),
        _with_middle(lambda _: sp.MatAdd(Sd, sp.MatMul(Su, Sv))),  # no delta_kj
        _with_middle(lambda _: sp.MatAdd(delta * Sd, sp.MatMul(Su, nt.Spart("v", "k")))),
        _with_middle(lambda _: sp.MatAdd(delta * Sd, sp.MatMul(Sv, Su))),  # v_k u_j
        _with_middle(lambda _: nt.Sdiag("j")),  # an elementwise output's S_j
        l2_everywhere,
    ]
    for change in changes:
        with pytest.raises(ClosedFormError):
            closed_hessian(_mutated(SOFTMAX, change), NumPyPrinter)


def test_the_verifier_checks_the_softmax_blocks():
    """``symgrad verify``'s matrix row of hess.closed evaluates H_kj for pairs of units against
    the trainer's block; a wrong matrix form fails it."""
    from symgrad.runtime.verification.common import TOLERANCE
    from symgrad.runtime.verification.context import Context
    from symgrad.runtime.verification.rows import matrix_row

    def row(d):
        ctx = Context(d.spec, d, 0, 5, "float64", TOLERANCE["float64"], None)
        ctx.find_definitions(d.equations)
        return matrix_row(ctx, d.equation("hess.closed"))

    right = row(derive(spec_from_dict(SOFTMAX)))
    assert right.status == "ok" and "9 of the 9 pairs" in right.note, right
    Sd, Sv = nt.Spart("d", "k"), nt.Spart("v", "j")
    delta = sp.KroneckerDelta(nt.k, nt.j)
    wrong = _with_middle(lambda _: sp.MatAdd(delta * Sd, sp.MatMul(Sd, Sv)))
    assert row(_mutated(SOFTMAX, wrong)).status == "FAIL"
