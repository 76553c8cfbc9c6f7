"""The Derivation as an IR of SymPy objects: its shape, keys, kernels and readable forms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sympy as sp

import symgrad
from symgrad import calculus as calc
from symgrad import optimizers
from symgrad.derivation import Equation
from symgrad.derivation import notation as nt
from symgrad.derivation.laplace import MAX_PARAMS
from symgrad.derivation.laplace import SECTION as LAPLACE
from symgrad.derivation.units import at

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPECS = sorted(EXAMPLES.glob("*.yaml"))
IDS = [p.stem for p in SPECS]

_CACHE: dict = {}


def derivation(path: Path):
    if path not in _CACHE:
        _CACHE[path] = symgrad.derive(symgrad.load_spec(path))
    return _CACHE[path]


def _spec(layers, loss="mse", **extra) -> dict:
    return {"name": "t", "inputs": 3, "layers": layers, "loss": loss, **extra}


# ---------------------------------------------------------------------------------------------
# SymPy objects only
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_equations_hold_sympy_objects_only(path: Path) -> None:
    d = derivation(path)
    assert d.equations and all(isinstance(eq, Equation) for eq in d.equations)
    for eq in d.equations:
        for side in eq.sides:
            assert isinstance(side, sp.Basic), (eq.key, side)
        if eq.matrix is not None:
            assert len(eq.matrix) == 2 and all(isinstance(m, sp.Basic) for m in eq.matrix)
        for part in eq.prose:
            assert isinstance(part, (str, sp.Basic)), (eq.key, part)
            if isinstance(part, str):
                assert "\\" not in part and "$" not in part, (eq.key, part)  # no LaTeX in the IR
        assert eq.relation in ("=", "<-")
        assert eq.kernel is None or isinstance(eq.kernel, sp.Expr)


def test_the_ir_imports_no_printer() -> None:
    for path in sorted((ROOT / "symgrad" / "derivation").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level: a lazy import inside a method is allowed
            if isinstance(node, ast.ImportFrom):
                assert "printers" not in (node.module or ""), path.name
            if isinstance(node, ast.Import):
                assert all("printers" not in a.name for a in node.names), path.name


def test_width_does_not_change_the_equations() -> None:
    """The IR is built on one representative unit: only the widths' values differ."""
    layers = [{"units": 4, "activation": "tanh"}, {"units": 3, "activation": "softmax"}]
    narrow = symgrad.derive(symgrad.load_spec(_spec(layers, "cross_entropy")))
    layers = [{"units": 4096, "activation": "tanh"}, {"units": 10, "activation": "softmax"}]
    wide = symgrad.derive(symgrad.load_spec(_spec(layers, "cross_entropy", inputs=784)))
    # the one width-dependent part: the dense Laplace section, up to laplace.MAX_PARAMS
    assert narrow.spec.n_params <= MAX_PARAMS < wide.spec.n_params
    dense = [e for e in narrow.equations if e.section == LAPLACE]
    assert dense and not any(e.section == LAPLACE for e in wide.equations)
    narrow_rest = [e for e in narrow.equations if e.section != LAPLACE]
    assert [e.key for e in narrow_rest] == wide.keys
    for e1, e2 in zip(narrow_rest, wide.equations, strict=True):
        assert (e1.lhs, e1.steps, e1.rhs, e1.matrix, e1.kernel) == (
            e2.lhs,
            e2.steps,
            e2.rhs,
            e2.matrix,
            e2.kernel,
        )
    assert wide.widths == {nt.n(0): 784, nt.n(1): 4096, nt.n(2): 10}


# ---------------------------------------------------------------------------------------------
# Keys and kernels (the contract with code generation and verification)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_the_keys_code_generation_uses(path: Path) -> None:
    d = derivation(path)
    spec = d.spec
    for key in (
        "cost",
        "cost.sample",
        "delta.out",
        "hess.out",
        "rop.forward",
        "rop.backward",
        "rop.grad",
        "gauss_newton",
        "opt.grad",
    ):
        assert key in d, key
        d.eq(key)
    # Newton's method only for the newton optimiser (issue 9 finding 8: the chosen optimiser's
    # update ends the derivation)
    newton = [k for k in d.keys if k.startswith("newton")]
    if spec.optimizer.name == "newton":
        assert newton[0] == "newton" and "newton.cg.beta" in newton, newton
    else:
        assert newton == [], newton
    for layer in d.layers:
        l = layer.index
        for key in (f"grad.{l}", f"grad.W.{l}", f"forward.{l}", f"act.{l}.f"):
            assert key in d, key
        # a layer with bias: false has no bias gradient nor bias rows of H v
        assert (f"grad.b.{l}" in d) == layer.bias and (f"rop.grad.b.{l}" in d) == layer.bias
        if l < d.depth:
            assert f"backprop.{l}" in d and f"backprop.sum.{l}" in d
        if not layer.activation.vector:
            assert d.kernel(f"act.{l}.f") == layer.activation.f
            fp = (
                layer.activation.df_out if layer.activation.has_output_form else layer.activation.df
            )
            assert d.kernel(f"act.{l}.df") == fp
    assert ("hess.closed" in d) == (d.depth == 1)
    assert ("hess.blocks" in d) == (d.depth == 2)
    assert ("cost.stable" in d) == bool(d.loss.stable_in_z and d.loss.rewrites)
    reg = spec.regularization
    assert ("reg.value" in d) == ("reg.grad" in d) == bool(reg.l2 or reg.l1)
    assert ("reg.hess" in d) == bool(reg.l2)
    assert ("reg.prox" in d) == bool(reg.l1)
    assert d.kernel("delta.out") == d.loss.delta
    if d.output.vector:
        u, v = d.loss.jac_outer
        assert (d.kernel("hess.out.diag"), d.kernel("hess.out.u"), d.kernel("hess.out.v")) == (
            d.loss.jac_diag,
            u,
            v,
        )
    else:
        assert d.kernel("hess.out") == d.loss.s
        assert "gauss_newton.s" in d


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_the_display_is_the_kernel_on_its_unit(path: Path) -> None:
    """display = kernel.subs(scalar -> indexed) for the output layer's equations."""
    d = derivation(path)
    L = d.depth
    checks = [("delta.out", nt.j), ("cost.stable", nt.j)]
    if not d.output.vector:
        checks += [("hess.out", nt.j), ("gauss_newton.s", nt.j)]
    for key, idx in checks:
        if key in d:
            eq = d.equation(key)
            assert eq.rhs == at(eq.kernel, L, idx), key


def test_optimiser_updates_come_from_their_modules() -> None:
    for name in optimizers.names():
        opt = optimizers.get(name)
        spec = _spec([{"units": 1, "activation": "identity"}], optimizer={"name": name})
        d = symgrad.derive(symgrad.load_spec(spec))
        assert d.equations[-1].section == "Update"
        if not opt.first_order:  # Newton's method, L-BFGS, the trust region: their own keys
            key = {"lbfgs": "lbfgs", "trust_ncg": "trust"}.get(name, "newton")
            assert d.equation(key).section == "Update"
            continue
        keys = [f"opt.{name}.{u.target.name}" for u in opt.updates]
        assert [k for k in d.keys if k.startswith(f"opt.{name}.")] == keys
        for key, upd in zip(keys, opt.updates, strict=True):
            eq = d.equation(key)
            assert (eq.lhs, eq.rhs, eq.kernel, eq.relation) == (
                upd.target,
                upd.value,
                upd.value,
                "<-",
            )


def test_aliases_and_missing_keys() -> None:
    d = derivation(EXAMPLES / "xor.yaml")
    assert d.eq("grad.2") == d.eq("grad.W.2")
    assert d.eq("rop.forward") == d.eq("rop.forward.1")
    assert d.eq("rop.backward") == d.eq("rop.out")
    assert d.eq("rop.grad") == d.eq("rop.grad.b.1")
    assert d.eq("hess.blocks") == d.eq("hess.blocks.11")
    assert d.equation("act.2.df") is d.equation("act.1.df")  # both layers are sigmoid
    assert "grad.3" not in d
    with pytest.raises(KeyError, match="grad.3"):
        d.eq("grad.3")
    with pytest.raises(KeyError, match="equation 'forward.1' has no kernel"):
        d.kernel("forward.1")


def test_regulariser_kernels() -> None:
    spec = _spec([{"units": 1, "activation": "identity"}], regularization={"l2": 0.1, "l1": 0.2})
    d = symgrad.derive(symgrad.load_spec(spec))
    w, lam2, lam1, N = nt.weight, nt.lambda_2, nt.lambda_1, nt.N
    assert d.kernel("reg.value") == lam2 * w**2 / (2 * N) + lam1 * sp.Abs(w) / N
    assert d.kernel("reg.grad") == lam2 * w / N + lam1 * sp.sign(w) / N
    assert d.kernel("reg.hess") == lam2 / N
    u = nt.u
    prox = d.kernel("reg.prox")
    values = {nt.eta: sp.Rational(1, 2), lam1: 1, N: 1}
    assert prox.subs(values | {u: sp.Rational(3, 10)}) == 0  # inside the threshold: stays at 0
    assert prox.subs(values | {u: 2}) == sp.Rational(3, 2)
    assert prox.subs(values | {u: -2}) == -sp.Rational(3, 2)


# ---------------------------------------------------------------------------------------------
# Readable forms (calculus), proved equal
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "custom", "expected"),
    [
        ("sigmoid", None, (1 - calc.sigma(calc.z)) * calc.sigma(calc.z)),
        ("tanh", None, 1 - sp.tanh(calc.z) ** 2),
        ("softplus", None, calc.sigma(calc.z)),
        ("swish", {"swish": "z / (1 + exp(-z))"}, calc.a + (1 - calc.a) * calc.sigma(calc.z)),
    ],
)
def test_readable_first_derivatives(name: str, custom, expected) -> None:
    act = calc.activation_calculus(name, custom)
    assert act.df_z == expected
    # proved equal: with a = f(z), numerically at a few points as well
    form = act.df_z.subs(calc.a, act.f).rewrite(sp.exp)
    for point in (-3, -0.5, 0.25, 2):
        assert float(form.subs(calc.z, point)) == pytest.approx(
            float(act.df.subs(calc.z, point)), rel=1e-14
        )


def test_readable_picks_the_fewest_operations_and_keeps_ties() -> None:
    z = calc.z
    plain = sp.exp(z) / (sp.exp(z) + 1)
    assert calc.readable([plain, calc.sigma(z)], plain) == calc.sigma(z)
    # a simpler but wrong candidate is rejected by the proof
    assert calc.readable([plain, sp.exp(z)], plain) == plain
    # ties keep the incumbent
    assert calc.readable([sp.cosh(z) ** -2, 1 - sp.tanh(z) ** 2], sp.cosh(z) ** -2) == (
        sp.cosh(z) ** -2
    )
