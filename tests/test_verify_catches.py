"""The verifier catches a wrong equation, and names it: the numeric regression tests of issue 9's
findings 1-5 and of the IR bugs the verifier found (each wrong form below is what the old
derivation printed).

Each test builds the derivation, replaces one equation by the wrong form, and asserts that the
verifier fails exactly that row while the right form of the same row passes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad import derive, load_spec
from symgrad.derivation import notation as nt
from symgrad.runtime.verify import HESSIAN_MAX, verify

ROOT = Path(__file__).resolve().parent.parent


def _spec(layers, loss="mse", l2=0.0, name="wrong", inputs=3, **extra):
    return load_spec(
        {
            "name": name,
            "inputs": inputs,
            "layers": [{"units": u, "activation": a} for u, a in layers],
            "loss": loss,
            "regularization": {"l2": l2},
            **extra,
        }
    )


def _replace(d, key: str, **changes):
    """``d`` with equation ``key`` changed (a new Equation in its place)."""
    eq = d.equation(key)
    d.equations[d.equations.index(eq)] = dataclasses.replace(eq, **changes)
    return d


def _row(report, key: str, form: str):
    (row,) = [r for r in report.rows if r.key == key and r.form == form]
    return row


def _right_and_wrong(spec, key: str, form: str, **changes):
    right = _row(verify(derive(spec)), key, form)
    wrong = _row(verify(_replace(derive(spec), key, **changes)), key, form)
    return right, wrong


@pytest.mark.parametrize("out", ["tanh", "softplus"])
def test_finding_1_the_output_delta_that_lost_its_parentheses_fails(out):
    # printed as (a - y) * 1 - a^2, i.e. (a - y) - a^2, instead of (a - y)(1 - a^2)
    spec = _spec([(3, out)])
    a, y = nt.a(1)[nt.j], nt.y[nt.j]
    lost = {"tanh": a**2, "softplus": sp.exp(-a)}[out]  # f'(z) = 1 - lost, in output form
    assert sp.simplify(derive(spec).equation("delta.out").rhs - (a - y) * (1 - lost)) == 0
    right, bad = _right_and_wrong(spec, "delta.out", "index", rhs=(a - y) * 1 - lost)
    assert right.status == "ok", right
    assert bad.status == "FAIL" and bad.error > 1e-3, bad


def test_finding_2_a_matrix_gradient_without_its_regulariser_fails():
    spec = _spec([(3, "tanh"), (2, "identity")], l2=0.3)
    d = derive(spec)
    lhs, rhs = d.equation("grad.W.1").matrix
    assert rhs.has(nt.lambda_2)
    dropped = sp.MatMul(1 / nt.m, nt.Delta(1).T * nt.A(0))
    right, bad = _right_and_wrong(spec, "grad.W.1", "matrix", matrix=(lhs, dropped))
    assert right.status == "ok", right
    assert bad.status == "FAIL" and bad.error > 1e-6, bad
    assert "trainer gradient_flat" in bad.against


def test_finding_3_a_closed_form_hessian_that_regularises_the_bias_fails():
    spec = _spec([(1, "sigmoid")], loss="log_loss", l2=0.5)
    d = derive(spec)
    lhs, rhs = d.equation("hess.closed").matrix
    (term,) = [t for t in rhs.args if t.has(nt.lambda_2)]
    everything = rhs - term + nt.lambda_2 / nt.N * sp.Identity(nt.n(0) + 1)
    right, bad = _right_and_wrong(spec, "hess.closed", "matrix", matrix=(lhs, everything))
    assert right.status == "ok", right
    assert bad.status == "FAIL" and bad.error > 1e-3, bad
    bb = d.equation("hess.closed.bb").rhs + nt.lambda_2 / nt.N
    right, bad = _right_and_wrong(spec, "hess.closed.bb", "index", rhs=bb)
    assert right.status == "ok" and bad.status == "FAIL", (right, bad)


def test_finding_4_a_block_hessian_without_l2_fails():
    spec = _spec([(3, "tanh"), (1, "sigmoid")], l2=0.4)
    d = derive(spec)
    rhs = d.equation("hess.blocks.11").rhs
    assert rhs.has(nt.lambda_2)
    right, bad = _right_and_wrong(spec, "hess.blocks.11", "index", rhs=rhs.subs(nt.lambda_2, 0))
    assert right.status == "ok", right
    assert bad.status == "FAIL" and bad.error > 1e-3, bad


def test_finding_5_gauss_newton_with_the_matched_loss_form_fails_for_xor():
    # J = dz/dtheta and S = s is not what gauss_newton() computes for mse on a sigmoid output
    spec = load_spec(Path(__file__).resolve().parent.parent / "examples" / "xor.yaml")
    d = derive(spec)
    eq = d.equation("gauss_newton")
    L = 2
    wrong = eq.rhs.xreplace({nt.Sx(L, "sG"): nt.Sx(L, "s")})
    assert wrong != eq.rhs
    right, bad = _right_and_wrong(spec, "gauss_newton", "matrix", rhs=wrong, steps=())
    assert right.status == "ok", right
    assert bad.status == "FAIL" and bad.error > 1e-4, bad
    assert bad.against == "trainer gauss_newton"


def test_an_equation_the_verifier_cannot_evaluate_is_a_failure_that_says_why():
    spec = _spec([(2, "sigmoid")])
    d = _replace(derive(spec), "forward.1", rhs=derive(spec).equation("forward.1").rhs + nt.mu)
    d = _replace(d, "act.1.f", rhs=sp.Symbol("zeta") * nt.z(1)[nt.j])
    report = verify(d)
    assert _row(report, "forward.1", "index").status == "FAIL"  # mu is the damping: a value
    row = _row(report, "act.1.f", "index")
    assert (row.status, row.note) == ("FAIL", "not evaluable: rhs: no value for the symbol zeta")
    assert not report.ok and report.max_error == float("inf")


def test_a_wrong_trainer_gradient_fails_the_gradient_rows(monkeypatch):
    spec = _spec([(3, "tanh"), (2, "identity")])
    import symgrad

    model = symgrad.load_trainer(spec, seed=0, dtype="float64")
    right = model.gradient_flat

    def wrong(X, Y):
        g = np.array(right(X, Y))
        g[12] *= 1.001  # W_2[0, 0]: W_1 (3 x 3) and b_1 (3) come first
        return g

    monkeypatch.setattr(model, "gradient_flat", wrong)
    report = verify(derive(spec), trainer=model)
    failed = {(r.key, r.form) for r in report.failures}
    assert ("grad.W.2", "index") in failed and ("grad.W.2", "matrix") in failed
    assert ("grad.W.1", "index") not in failed and ("grad.b.1", "index") not in failed


def test_the_cg_beta_is_an_equation_and_a_wrong_one_fails():
    # The conjugate-gradient update d <- r + beta d used beta, defined in prose only ("not
    # evaluable: no value for the symbol beta"). It is the new r^T r over rho, the r^T r kept
    # from the start of the iteration (the trainer's rr_new / rr).
    spec = load_spec(ROOT / "examples" / "linear_regression_newton.yaml")
    d = derive(spec)
    beta = d.equation("newton.cg.beta")
    assert (beta.lhs, beta.rhs) == (nt.beta, sp.MatMul(1 / nt.rho, nt.r_v.T, nt.r_v))
    assert d.equation("newton.cg.rho").rhs == sp.MatMul(nt.r_v.T, nt.r_v)
    assert d.eq("newton.cg.rho") < d.eq("newton.cg.r") < d.eq("newton.cg.beta")
    report = verify(d)
    assert report.ok, report.table()
    assert _row(report, "newton.cg.d", "update").against == "one CG iteration"
    # beta without the division by rho is wrong, and the direction it gives fails
    undivided = sp.MatMul(nt.r_v.T, nt.r_v)
    d = _replace(derive(spec), "newton.cg.beta", rhs=undivided)
    bad = _row(verify(d), "newton.cg.d", "update")
    assert bad.status == "FAIL" and bad.error > 1e-3, bad


def test_a_step_gradient_that_regularises_the_biases_fails():
    # opt.grad printed + lambda_2 theta / N for every parameter; the trainer (rightly) penalises
    # the weights only: g = (1/m) sum_x grad C_x + (lambda_2 / N) I_w theta.
    spec = _spec([(2, "tanh"), (1, "identity")], l2=0.5, optimizer={"name": "sgd", "batch_size": 2})
    d = derive(spec)
    data, l2 = d.equation("opt.grad").rhs.args
    assert l2 == sp.MatMul(nt.lambda_2 / nt.N, nt.I_w, nt.theta_v)
    everything = sp.MatAdd(data, sp.MatMul(nt.lambda_2 / nt.N, nt.theta_v))
    right, bad = _right_and_wrong(spec, "opt.grad", "update", rhs=everything)
    assert right.status == "ok" and right.against == "reference batch gradient", right
    assert bad.status == "FAIL" and bad.error > 1e-3, bad


@pytest.mark.parametrize("key", ["grad.W.1", "grad.b.2", "rop.grad.W.2", "rop.grad.b.1"])
def test_a_batch_form_averaged_over_the_training_set_fails_on_m_below_n(key):
    # The matrix forms are those of the batch cost C_B (1/m); with 1/N in their place they agree
    # on the whole set (m = N) and fail on a batch of m < N samples.
    spec = _spec([(3, "tanh"), (2, "identity")], l2=0.3)
    d = derive(spec)
    lhs, rhs = d.equation(key).matrix
    wrong = rhs.xreplace({1 / nt.m: 1 / nt.N})
    assert wrong != rhs
    report = verify(_replace(d, key, matrix=(lhs, wrong)))
    assert _row(report, key, "matrix").status == "ok"
    bad = _row(report, key, "batch")
    assert bad.status == "FAIL" and bad.error > 1e-3, bad
    assert bad.note == "m = 3 of N = 5 samples"
    right = _row(verify(derive(spec)), key, "batch")
    assert right.status == "ok", right
    assert right.against.split(", ")[0] in ("trainer _gradient(n = N)", "trainer _rop(n = N)")


def test_newton_above_the_exact_size_is_checked_by_its_conjugate_gradients():
    # Above NEWTON_EXACT_MAX parameters the trainer solves by conjugate gradients: the printed
    # iteration, run matrix-free on the trainer's hvp with its stopping rule (3,001 parameters:
    # above the verifier's HESSIAN_MAX too), must give the trainer's step; with L1 the step's
    # weights are checked after the threshold (reg.prox), its biases directly.
    spec = _spec(
        [(1, "identity")],
        inputs=3000,
        name="wide_newton",
        optimizer={"name": "newton", "learning_rate": 0.5, "damping": 0.3},
        init={"scheme": "xavier"},
        regularization={"l1": 0.05},
    )
    assert spec.n_params == 3001 > HESSIAN_MAX
    d = derive(spec)
    report = verify(d)
    assert report.ok, report.table()
    row = _row(report, "newton", "update")
    assert row.against == "trainer fit (1 step), biases", row
    assert row.note.startswith("conjugate gradients on H v (3001 parameters): "), row
    assert _row(report, "reg.prox", "update").against == "trainer fit (1 step)"
    # a step length twice the printed one is caught
    alpha = d.equation("newton.cg.alpha")
    bad = verify(_replace(d, "newton.cg.alpha", rhs=2 * alpha.rhs))
    for key in ("newton", "reg.prox", "newton.cg"):
        row = _row(bad, key, "update")
        assert row.status == "FAIL" and row.error > 1e-3, row


def test_a_wrong_line_search_slope_fails_the_lbfgs_row_and_changes_the_code():
    """phi'(0) = g^T p is an equation (lbfgs.slope): printed with the wrong sign, the verifier
    fails the L-BFGS row (finite differences and the trainer's logged slope disagree with it),
    and the generated line search reads the printed slope, not a typed one."""
    from symgrad.codegen.generate import render

    spec = _spec([(3, "tanh"), (1, "sigmoid")], "log_loss", l2=0.1, optimizer={"name": "lbfgs"})
    g, p = nt.g_v, nt.p_v
    assert _row(verify(derive(spec)), "lbfgs", "update").status == "ok"
    d = _replace(derive(spec), "lbfgs.slope", rhs=-sp.MatMul(g.T, p))
    assert _row(verify(d), "lbfgs", "update").status == "FAIL"
    source = render(d, "net.yaml")[0]
    assert "dphi_0 = float(-g @ p)" in source or "dphi_0 = float(-(g @ p))" in source
    assert "dphi_0 = float(g @ p)" in render(derive(spec), "net.yaml")[0]


def test_a_wrong_trust_region_curvature_test_changes_the_code_and_fails_the_row():
    """The Steihaug iteration's test d^T H d > 0 is the printed kernel of trust.cg.alpha: the
    generated loop prints it, and the verifier's iteration evaluates it. Printed reversed, the
    step goes to the boundary at once, which the trainer does not do: the row fails."""
    from symgrad.codegen.generate import render

    spec = _spec([(3, "tanh"), (1, "sigmoid")], "log_loss", l2=0.1, optimizer={"name": "trust_ncg"})
    dv, H = nt.d_v, nt.H
    source = render(derive(spec), "net.yaml")[0]
    assert "if d @ Hd > 0:" in source
    assert _row(verify(derive(spec)), "trust", "update").status == "ok"
    wrong = sp.Lt(sp.MatMul(dv.T, H, dv), 0, evaluate=False)
    d = _replace(derive(spec), "trust.cg.alpha", kernel=wrong)
    assert "if d @ Hd < 0:" in render(d, "net.yaml")[0]
    assert _row(verify(d), "trust", "update").status == "FAIL"
