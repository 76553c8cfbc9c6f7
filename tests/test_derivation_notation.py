"""One symbol, one meaning: regression tests for the notation bugs the verifier found in the IR.

- Newton's method is printed for the ``newton`` optimiser only (issue 9 finding 8);
- Newton's damping (mu) and the momentum coefficient (gamma) are different symbols;
- Newton's system uses the step's gradient g (the smooth part: data and L2), the same object as
  ``opt.grad``, not a grad C that would hold the L1 term;
- the index forms are of C (1/N), the matrix forms of the batch cost C_B (1/m), with distinct
  left sides;
- Adam's moments do not print like the batch size m.
"""

from __future__ import annotations

import sympy as sp

import symgrad
from symgrad import optimizers
from symgrad.derivation import notation as nt
from symgrad.printers.latex import latex
from symgrad.printers.text import pretty


def _derive(optimizer: dict, regularization: dict | None = None):
    spec = {
        "name": "notation",
        "inputs": 2,
        "layers": [{"units": 2, "activation": "tanh"}, {"units": 1, "activation": "identity"}],
        "loss": "mse",
        "optimizer": optimizer,
        "regularization": regularization or {},
    }
    return symgrad.derive(symgrad.load_spec(spec))


def test_newton_is_printed_for_newton_only() -> None:
    for name in optimizers.names():
        d = _derive({"name": name})
        newton = [k for k in d.keys if k.startswith("newton")]
        if name in ("lbfgs", "trust_ncg"):  # their own equations, keys lbfgs*, trust*
            assert newton == [], name
            prefix = name.split("_")[0]
            assert d.equations[-1].key.startswith(prefix), name
        elif name == "newton":
            assert newton == [
                "newton",
                "newton.shift",
                "newton.exact",
                "newton.cg.rho",
                "newton.cg.alpha",
                "newton.cg",
                "newton.cg.r",
                "newton.cg.beta",
                "newton.cg.d",
            ]
            assert d.equations[-1].key == "newton.cg.d"
        else:
            assert newton == [], name
            assert d.equations[-1].key == f"opt.{name}.theta", name
        assert not any(eq.section == "Newton's method" for eq in d.equations)


def test_the_damping_and_the_momentum_coefficient_are_different_symbols() -> None:
    damping = optimizers.get("newton").hyper
    assert {sym: field for sym, field in damping.items()} == {nt.mu: "damping"}
    for name in ("momentum", "nesterov"):
        (coefficient,) = optimizers.get(name).hyper
        assert coefficient != nt.mu and coefficient.name == "gamma"
        d = _derive({"name": name})
        assert r"\gamma v" in latex(d.equation(f"opt.{name}.v").rhs)
        assert not any(eq.rhs.has(nt.mu) for eq in d.equations if eq.key.startswith("opt."))
    assert latex(sp.Symbol("gamma")) != latex(nt.mu)


def test_newton_solves_for_the_step_gradient_g() -> None:
    d = _derive({"name": "newton"}, {"l2": 0.1, "l1": 0.01})
    g = d.equation("opt.grad")
    assert g.lhs == nt.g_v
    mu_s = sp.Symbol("mu_s", nonnegative=True)  # mu, raised while H + mu I is indefinite
    assert d.equation("newton.exact").rhs == sp.MatMul(
        sp.Inverse(sp.MatAdd(nt.H, mu_s * sp.Identity(nt.P))), nt.g_v
    )
    assert d.equation("newton.cg.rho").prose[3] == sp.Eq(nt.r_v, nt.g_v, evaluate=False)
    assert not any(eq.lhs.has(nt.lambda_1) or eq.rhs.has(nt.lambda_1) for eq in (g,))
    text = " ".join(p for p in g.prose if isinstance(p, str))
    assert "the L1 term is not in g, it is applied by the proximal step below" in text
    newton = " ".join(p for p in d.equation("newton").prose if isinstance(p, str))
    assert "an L1 term is the proximal step after the Newton step" in newton
    assert latex(nt.g_v) == "g" and "grad_C" not in nt.DISPLAY


def test_index_forms_are_of_c_and_matrix_forms_of_the_batch_cost() -> None:
    d = _derive({"name": "sgd", "batch_size": 4}, {"l2": 0.1})
    eq = d.equation("grad.W.1")
    assert eq.lhs == sp.Derivative(nt.C, nt.w(1)[nt.j, nt.i])
    assert eq.rhs.has(1 / nt.N) and not eq.rhs.has(nt.m)
    lhs, rhs = eq.matrix
    assert latex(lhs) == r"\nabla_{W^{(1)}} C_B"
    assert rhs.args[0] == sp.MatMul(1 / nt.m, nt.Delta(1).T * nt.A(0))
    assert latex(d.equation("rop.grad.W.1").matrix[0]) == r"(H_B v)_{W^{(1)}}"
    assert d.equation("rop.grad.W.1").rhs.has(1 / nt.N)
    notation = " ".join(p for c in d.conventions for p in c if isinstance(p, str))
    assert "(the index forms). A step on a batch of " in notation
    assert "which is C when the batch is the whole training set (m = N)." in notation
    g = d.equation("opt.grad").rhs
    assert g.args[0] == sp.MatMul(1 / nt.m, nt.SampleSum(nt.grad_Cx))


def test_adam_moments_do_not_print_like_the_batch_size() -> None:
    adam = optimizers.get("adam")
    first, second = adam.state
    assert latex(first) == "m_{t}" and latex(second) == "v_{t}"
    assert latex(first) != latex(nt.m) and pretty(first) != pretty(nt.m)
    assert (adam.key(first), adam.key(second)) == ("m", "v")  # the saved state keeps its keys
    d = _derive({"name": "adam", "batch_size": 4})
    assert latex(d.equation("opt.adam.m_t").lhs) == "m_{t}"
