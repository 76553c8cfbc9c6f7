"""Newton's conjugate-gradient loop is printed from the derivation's ``newton.cg*`` equations
(issue 9): ``A d = (H + mu I) d`` is distributed (``H d + mu d``, H d one R-operator sweep) and
computed once (``newton.cg.Ad``), the curvature ``d^T A d`` is printed once
(``newton.cg.curvature``) for the step length and the stopping test, and a wrong equation gives
a wrong direction."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symgrad.codegen.generate import build_context, render_source
from symgrad.codegen.step import print_vector
from symgrad.derivation import derive
from symgrad.derivation import notation as nt
from symgrad.runtime.loader import import_module_from_source
from symgrad.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
DAMPING = 1.0
SPEC = {
    "name": "newton_cg_printed",
    "inputs": 5,
    "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "sigmoid"}],
    "loss": "log_loss",
    "regularization": {"l2": 0.1},
    "optimizer": {"name": "newton", "damping": DAMPING, "learning_rate": 0.5},
    "init": {"scheme": "xavier", "seed": 3},
}


@pytest.fixture(scope="module")
def derivation():
    return derive(spec_from_dict(SPEC))


def _code(d) -> dict:
    return build_context(d)["step"].code


def test_printed_cg_arithmetic_is_the_matrix_formula(derivation):
    """Each printed line, evaluated on random vectors with an explicit H (Hd = H d), is the
    equation's matrix formula with A = H + mu I."""
    code = _code(derivation)
    rng = np.random.default_rng(0)
    P = 7
    B = rng.standard_normal((P, P))
    H = B + B.T
    A = H + DAMPING * np.eye(P)
    d, r, p = (rng.standard_normal(P) for _ in range(3))
    rho, alpha, beta = 1.7, 0.4, 0.6
    env = {"np": np, "d": d, "r": r, "p": p, "hvp": lambda v: H @ v, "damping": DAMPING}
    env |= {"rho": rho, "alpha": alpha, "beta": beta}

    def run(key):
        return eval(code[key], env)  # noqa: S307 (the printed code under test)

    # A d once (H d one call of hvp), read by the curvature and the residual's update
    env["Ad"] = run("newton.cg.Ad")
    np.testing.assert_allclose(env["Ad"], A @ d, rtol=1e-12)
    curvature = run("newton.cg.curvature")
    np.testing.assert_allclose(curvature, d @ A @ d, rtol=1e-12)
    env["curvature"] = curvature
    np.testing.assert_allclose(run("newton.cg.alpha"), rho / (d @ A @ d), rtol=1e-12)
    np.testing.assert_allclose(run("newton.cg.r"), r - alpha * A @ d, rtol=1e-12)
    np.testing.assert_allclose(run("newton.cg"), p + alpha * d, rtol=1e-12)
    np.testing.assert_allclose(run("newton.cg.rho"), r @ r, rtol=1e-12)
    np.testing.assert_allclose(run("newton.cg.rho_new"), r @ r, rtol=1e-12)
    env["rho_new"] = r @ r
    np.testing.assert_allclose(run("newton.cg.beta"), (r @ r) / rho, rtol=1e-12)
    np.testing.assert_allclose(run("newton.cg.d"), r + beta * d, rtol=1e-12)
    # the same updates written in place (the loop's form): the vector they write is the value
    wants = {"newton.cg": ("p", p + alpha * d), "newton.cg.r": ("r", r - alpha * A @ d)}
    wants["newton.cg.d"] = ("d", r + beta * d)
    for key, (name, want) in wants.items():
        scope = {**env, "p": p.copy(), "r": r.copy(), "d": d.copy()}
        held = scope[name]
        exec("\n".join(code[f"{key}.inplace"]), scope)  # noqa: S102 (the printed code)
        assert scope[name] is held, key  # written into, not rebound
        np.testing.assert_allclose(held, want, rtol=1e-12, err_msg=key)
    # the exact solve's inverse has no printed code (the template solves the system)
    assert "newton.exact" not in code


def test_printing_distributes_a_matrix_sum():
    d, r = nt.d_v, nt.r_v
    A = sp.MatAdd(nt.H, nt.mu * sp.Identity(nt.P))
    assert print_vector(sp.MatMul(d.T, A, d)) == "d @ Hd + d @ d * damping"
    assert print_vector(sp.MatAdd(r, -nt.alpha * sp.MatMul(A, d))) == (
        "-alpha * (Hd + d * damping) + r"
    )
    with pytest.raises(ValueError):
        print_vector(sp.MatMul(sp.Inverse(A), nt.g_v))


def _module(d):
    return import_module_from_source(render_source(d, "net.yaml"), f"{d.spec.name}_cg_test")


def _trainer(module):
    cls = next(v for v in vars(module).values() if isinstance(v, type) and hasattr(v, "fit"))
    return cls()


def _reference_cg(apply, g, maxiter):
    """The loop the template typed before issue 9 (A d from one product, in place)."""
    p, r, d = np.zeros_like(g), g.copy(), g.copy()
    rr = float(r @ r)
    tol = 1e-20 * max(rr, 1e-300)
    for _ in range(maxiter):
        Ad = apply(d)
        dAd = float(d @ Ad)
        if dAd <= 0:
            if not p.any():
                p = g.copy()
            break
        step = rr / dAd
        p += step * d
        r -= step * Ad
        rr_new = float(r @ r)
        if rr_new < tol:
            break
        d *= rr_new / rr
        d += r
        rr = rr_new
    return p


def _data(n=30):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, SPEC["inputs"]))
    Y = (rng.random((n, 2)) < 0.5).astype(float)
    return X, Y


def test_generated_cg_gives_the_direction_of_the_textbook_loop(derivation, monkeypatch):
    """Above NEWTON_EXACT_MAX (patched to 0) the generated loop's direction is the one the
    typed loop gave, bit for bit, and solves (H + mu I) p = g."""
    module = _module(derivation)
    monkeypatch.setattr(module, "NEWTON_EXACT_MAX", 0)
    model = _trainer(module)
    X, Y = _data()
    n = 2 * len(X)  # the regulariser's N differs from the batch's m
    g = model._public(model._gradient(X, Y, n))
    P = g.size

    def apply(v):
        return model._rop(X, Y, v[:, None], False, n)[:, 0] + DAMPING * v

    p = model.newton_direction(X, Y, n=n)
    want = _reference_cg(apply, g, min(P, 250))
    np.testing.assert_array_equal(p, want)  # the same arithmetic, in the same order
    A = np.stack([apply(e) for e in np.eye(P)], axis=1)
    np.testing.assert_allclose(A @ p, g, rtol=1e-6, atol=1e-9)
    assert p @ g > 0


def test_a_wrong_cg_equation_gives_a_wrong_direction(derivation, monkeypatch):
    """The generated loop runs the IR's equations: a step length twice the printed one, or a
    residual without the damping, changes the direction."""
    X, Y = _data()
    right = _module(derivation)
    monkeypatch.setattr(right, "NEWTON_EXACT_MAX", 0)
    want = _trainer(right).newton_direction(X, Y)
    alpha = derivation.equation("newton.cg.alpha")
    r_eq = derivation.equation("newton.cg.r")
    mutations = {
        "newton.cg.alpha": dataclasses.replace(alpha, rhs=2 * alpha.rhs),
        "newton.cg.r": dataclasses.replace(
            r_eq, rhs=sp.MatAdd(nt.r_v, -nt.alpha * sp.MatMul(nt.H, nt.d_v))
        ),
    }
    for key, wrong in mutations.items():
        d = derive(spec_from_dict(SPEC))
        d.equations[d.equations.index(d.equation(key))] = wrong
        d._by_key[key] = wrong
        module = _module(d)
        monkeypatch.setattr(module, "NEWTON_EXACT_MAX", 0)
        got = _trainer(module).newton_direction(X, Y)
        assert np.abs(got - want).max() > 1e-3 * np.abs(want).max(), key


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_templates_type_no_cg_arithmetic(backend):
    """The loop places the printed lines: no product, division, in-place update or damping of
    its own (the tolerance is the stopping rule of newton.cg.rho's prose)."""
    tpl = (ROOT / "templates" / backend / "newton.py.jinja").read_text()
    loop = tpl[tpl.index("# conjugate gradients on") : tpl.index("return p", tpl.index("# conj"))]
    for line in loop.splitlines():
        code = re.sub(r"\{\{.*?\}\}", "", line.strip())
        if not code or code.startswith(("{%", "#", "tol = 1e-20 *", "tol = rtol * rtol *")):
            continue
        assert not re.search(r"@|\+=|-=|\*=|/|\*|damping", code), line
    assert 'code["newton.cg.curvature"]' in loop
