"""The code printer: its stable rewrites against SymPy, exact printed strings, in-place emission.

The rewrites (``stable_rewrite``) are proved equal to the original expressions by SymPy and
checked on numbers where the original form overflows or cancels; printed strings are compared
exactly, and laid out as ``ruff format`` lays them out.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

from symgrad import calculus as C
from symgrad.optimizers import get
from symgrad.optimizers.base import eta, g, t, theta
from symgrad.printers.inplace import InplaceEmitter
from symgrad.printers.numpy import NumPyPrinter, ScalarPrinter, stable_rewrite
from symgrad.printers.pylayout import format_code, layout, wrap_statement

x = sp.Symbol("x", real=True)
SIGMOID = 1 / (1 + sp.exp(-x))
SOFTPLUS = sp.log(1 + sp.exp(x))
ONE_MINUS_EXP = 1 - sp.exp(x)


def run(code: str, **values):
    """Evaluate printed NumPy code with warnings as errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return eval(code, {"np": np, "math": __import__("math")}, values)  # noqa: S307


# ---------------------------------------------------------------------------------------------
# stable rewrites
# ---------------------------------------------------------------------------------------------


def test_sigmoid_becomes_tanh_form_proved_and_stable():
    rewritten = stable_rewrite(SIGMOID)
    assert rewritten == (1 + sp.tanh(x / 2)) / 2
    assert sp.simplify((rewritten - SIGMOID).rewrite(sp.exp)) == 0
    code = NumPyPrinter({"x": "x"}).expression(SIGMOID)
    assert code == "0.5 * np.tanh(0.5 * x) + 0.5"
    xs = np.array([-800.0, -30.0, -1.0, 0.0, 2.5, 800.0])
    with mpmath.workdps(50):
        exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(v)))) for v in xs])
    # never overflows; (1 + tanh)/2 is accurate to an absolute eps/2 (not relative far left)
    np.testing.assert_allclose(run(code, x=xs), exact, rtol=1e-15, atol=1e-16)
    with pytest.raises(RuntimeWarning, match="overflow"):
        run("1 / (1 + np.exp(-x))", x=xs)  # the form it replaces


def test_softplus_becomes_logaddexp_proved_and_stable():
    rewritten = stable_rewrite(SOFTPLUS)
    assert rewritten == C.softplus(x)
    assert sp.simplify(rewritten.rewrite(sp.exp) - SOFTPLUS) == 0
    code = NumPyPrinter({"x": "x"}).expression(SOFTPLUS)
    assert code == "np.logaddexp(0.0, x)"
    xs = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.log(1 + mpmath.exp(mpmath.mpf(v)))) for v in xs])
    np.testing.assert_allclose(run(code, x=xs), exact, rtol=1e-15, atol=1e-300)
    with pytest.raises(RuntimeWarning, match="overflow"):
        run("np.log(1 + np.exp(x))", x=xs)


def test_one_minus_exp_becomes_expm1_proved_and_exact_near_zero():
    rewritten = stable_rewrite(ONE_MINUS_EXP)
    assert rewritten == -expm1(x)
    assert sp.simplify(rewritten.rewrite(sp.exp) - ONE_MINUS_EXP) == 0
    code = NumPyPrinter({"x": "x"}).expression(ONE_MINUS_EXP)
    assert code == "-np.expm1(x)"
    xs = np.array([-1e-12, 3e-17, 0.5])
    with mpmath.workdps(50):
        exact = np.array([float(1 - mpmath.exp(mpmath.mpf(v))) for v in xs])
    np.testing.assert_allclose(run(code, x=xs), exact, rtol=1e-15)
    assert abs(run("1 - np.exp(x)", x=xs)[1]) == 0.0  # the naive form loses 3e-17 entirely


def test_rewrites_reach_inside_larger_expressions():
    expr = SIGMOID * (1 - SIGMOID) + SOFTPLUS
    assert not stable_rewrite(expr).has(sp.exp)
    assert sp.simplify((stable_rewrite(expr) - expr).rewrite(sp.exp)) == 0


# ---------------------------------------------------------------------------------------------
# exact printed strings
# ---------------------------------------------------------------------------------------------

NAMES = {"z": "z_1", "a": "a_1", "y": "Y"}


@pytest.mark.parametrize(
    ("name", "f", "df"),
    [
        ("identity", "z_1", "1"),
        ("sigmoid", "0.5 * np.tanh(0.5 * z_1) + 0.5", "a_1 * (1 - a_1)"),
        ("tanh", "np.tanh(z_1)", "1 - a_1 * a_1"),
        ("relu", "np.where(z_1 > 0, z_1, 0)", "a_1 > 0"),
        ("leaky_relu", "np.where(z_1 > 0, z_1, 0.01 * z_1)", "np.where(a_1 > 0, 1, 0.01)"),
        ("softplus", "np.logaddexp(0.0, z_1)", "-np.expm1(-a_1)"),
        (
            "elu",
            "np.where(z_1 > 0, z_1, np.exp(np.minimum(z_1, 0.0)) - 1)",
            "np.where(a_1 > 0, 1, a_1 + 1)",
        ),
    ],
)
def test_activation_kernels_print_exactly(name, f, df):
    act = C.activation_calculus(name)
    p = NumPyPrinter(NAMES)
    assert p.expression(act.f) == f
    assert p.expression(act.df_out) == df


def test_layout_is_ruffs():
    a, y = C.a, C.y
    p = NumPyPrinter(NAMES)
    assert p.expression(a * (1 - a) * (a - y)) == "a_1 * (1 - a_1) * (a_1 - Y)"
    assert p.expression((a - y) ** 2 / 2) == "0.5 * (a_1 - Y) ** 2"
    assert p.expression(a**3) == "a_1**3"
    assert p.expression(sp.Rational(1, 3) * a) == "0.3333333333333333 * a_1"
    assert p.expression(-(a**2) / (1 + y)) == "-a_1 * a_1 / (Y + 1)"
    assert format_code("-a**2") == "-(a**2)"
    assert format_code("(x)**-t") == "x**-t"
    assert format_code("((a - b)) - (c - d)") == "a - b - (c - d)"
    assert format_code("f(x, out = y)[0 : n]") == "f(x, out=y)[0:n]"


def test_scalars_use_math_and_exact_decimals():
    b2 = sp.Rational("0.999")
    code = ScalarPrinter({"eta": "lr"}).doprint(
        eta * sp.sqrt(1 - b2**t) / (1 - sp.Rational("0.9") ** t)
    )
    assert code == "lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)"
    assert ScalarPrinter().doprint(1 - sp.Rational("0.9")) == "0.1"  # never 0.09999999999999998


def test_a_backend_is_a_subclass_with_its_module_as_data():
    class CuPyPrinter(NumPyPrinter):
        module = "cp"

    act = C.activation_calculus("softplus")
    assert CuPyPrinter(NAMES).expression(act.f) == "cp.logaddexp(0.0, z_1)"
    em = InplaceEmitter(NAMES, ("z", "a"), lambda k: f"t_{k}", printer=CuPyPrinter)
    assert em.assign(C.a, C.activation_calculus("tanh").f) == ["cp.tanh(z_1, a_1)"]


# ---------------------------------------------------------------------------------------------
# in-place emission
# ---------------------------------------------------------------------------------------------


def step_emitter(name: str):
    opt = get(name)
    names = {"theta": "store", "g": "grad", "eta": "lr", "t": "t"}
    arrays = {"theta", "g"}
    for sym in opt.state:
        names[sym.name] = f"opt_{opt.key(sym)}"
        arrays.add(sym.name)
    return opt, InplaceEmitter(names, arrays, lambda k: f"work_{k}", invariant=("eta",))


def hyper(opt, **values):
    return {sym: sp.Rational(values[field]) for sym, field in opt.hyper.items()}


def test_adam_step_prints_as_the_hand_written_loop():
    opt, em = step_emitter("adam")
    values = hyper(opt, beta1="0.9", beta2="0.999", eps="1e-8")
    for up in opt.updates:
        em.assign(up.target, up.value.subs(values))
    assert em.lines == [
        "np.multiply(opt_m, 0.9, opt_m)",
        "np.multiply(grad, 0.1, work_0)",
        "np.add(opt_m, work_0, opt_m)",
        "np.multiply(opt_v, 0.999, opt_v)",
        "np.multiply(grad, grad, work_0)",
        "np.multiply(work_0, 0.001, work_0)",
        "np.add(opt_v, work_0, opt_v)",
        "np.sqrt(opt_v, work_0)",
        "np.add(work_0, 1e-08 * math.sqrt(1 - 0.999**t), work_0)",
        "np.divide(opt_m, work_0, work_0)",
        "np.multiply(work_0, lr * math.sqrt(1 - 0.999**t) / (1 - 0.9**t), work_0)",
        "np.subtract(store, work_0, store)",
    ]
    assert em.scratch_used == 1 and em.hoisted == []


def test_folded_momentum_and_nesterov_steps():
    for name, expected in [
        (
            "momentum",
            [
                "np.multiply(opt_velocity, 0.9, opt_velocity)",
                "np.subtract(opt_velocity, grad, opt_velocity)",
                "np.add(store, opt_velocity, store)",
            ],
        ),
        (
            "nesterov",
            [
                "np.multiply(opt_velocity, 0.9, opt_velocity)",
                "np.subtract(opt_velocity, grad, opt_velocity)",
                "np.multiply(opt_velocity, 0.9, work_0)",
                "np.add(store, work_0, store)",
                "np.subtract(store, grad, store)",
            ],
        ),
    ]:
        opt, em = step_emitter(name)
        values = hyper(opt, momentum="0.9")
        for up in opt.updates:  # eta folded in: g stands for eta g
            em.assign(up.target, up.value.subs(values).subs(g, g / eta))
        assert em.lines == expected, name


def test_loop_invariant_factors_are_hoisted():
    l2, n = sp.symbols("lambda_2 N")
    em = InplaceEmitter(
        {"theta": "store", "g": "grad", "lambda_2": "l2", "N": "n", "eta": "lr"},
        {"theta", "g", "lambda_2"},
        lambda k: f"work_{k}",
        invariant=("lambda_2", "N", "eta"),
    )
    assert em.assign(g, g + eta * l2 * theta / n) == [
        "np.multiply(c_0, store, work_0)",
        "np.add(grad, work_0, grad)",
    ]
    assert em.hoisted == [("c_0", "lr * l2 / n")]


def test_soft_threshold_reads_theta_before_overwriting_it():
    l1, n = sp.symbols("lambda_1 N")
    em = InplaceEmitter(
        {"theta": "store", "lambda_1": "l1", "N": "n", "eta": "lr"},
        {"theta", "lambda_1"},
        lambda k: f"work_{k}",
        invariant=("lambda_1", "N", "eta"),
    )
    prox = sp.sign(theta) * sp.Max(sp.Abs(theta) - eta * l1 / n, 0)
    lines = em.assign(theta, prox)
    assert lines == [
        "np.sign(store, work_0)",
        "np.abs(store, store)",
        "np.subtract(store, c_0, store)",
        "np.maximum(store, 0, out=store)",
        "np.multiply(store, work_0, store)",
    ]
    store = np.array([-2.0, -0.5, 0.0, 0.3, 4.0])
    env = {"np": np, "store": store, "work_0": np.empty(5), "c_0": 1.0}
    for line in lines:
        exec(line, env)  # noqa: S102
    np.testing.assert_array_equal(store, [-1.0, 0.0, 0.0, 0.0, 3.0])


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus"])
def test_in_place_activations_compute_the_kernel(name):
    """Forward (a_l written over z_l's buffer) and the f' multiply, against the plain print."""
    act = C.activation_calculus(name)
    z = np.linspace(-6, 6, 13)
    buffers = {"a_1": z.copy(), "delta_1": np.ones(13), "t_1_0": np.empty(13), "np": np}
    em = InplaceEmitter(
        {"z": "a_1", "a": "a_1", "delta": "delta_1"}, ("z", "a", "delta"), lambda k: f"t_1_{k}"
    )
    for line in em.assign(C.a, act.f):
        exec(line, buffers)  # noqa: S102
    expected = run(NumPyPrinter({"z": "z"}).expression(act.f), z=z)
    np.testing.assert_allclose(buffers["a_1"], np.broadcast_to(expected, z.shape), rtol=1e-15)
    em = InplaceEmitter({"a": "a_1", "delta": "delta_1"}, ("a", "delta"), lambda k: f"t_1_{k}")
    for line in em.multiply(sp.Symbol("delta", real=True), act.df_out):
        exec(line, buffers)  # noqa: S102
    fp = run(NumPyPrinter({"a": "a"}).expression(act.df_out), a=buffers["a_1"])
    np.testing.assert_allclose(buffers["delta_1"], np.broadcast_to(fp, z.shape), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# long statements
# ---------------------------------------------------------------------------------------------


def test_long_assignments_wrap_as_ruff_wraps_them():
    line = "            curvature = " + " * ".join(f"np.exp(z_{i})" for i in range(8)) + " / d"
    assert wrap_statement(line) == "\n".join(
        ["            curvature = ("]
        + ["                np.exp(z_0)"]
        + [f"                * np.exp(z_{i})" for i in range(1, 8)]
        + ["                / d", "            )"]
    )
    value = "a_2 * (1 - a_2) * " * 3 + "Y_1"
    line = "        curvature_of_the_hidden_layer_one_j = " + value
    assert len(line) > 100
    expected = f"        curvature_of_the_hidden_layer_one_j = (\n            {value}\n        )"
    assert wrap_statement(line) == expected
    docstring = '    """' + "x = " + "a + " * 30 + 'b"""'
    assert layout(docstring + "\n") == docstring + "\n"  # a long string is never touched


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_printed_statements_are_ruff_formatted(tmp_path):
    p = NumPyPrinter(NAMES)
    exprs = [
        act_expr
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "softplus", "elu")
        for act_expr in (C.activation_calculus(name).f, C.activation_calculus(name).d2f)
    ]
    lines = [f"v{i} = {p.expression(e.subs(C.z, C.a))}" for i, e in enumerate(exprs)]
    lines.append(
        "        " + wrap_statement("        w = " + " + ".join(["a_1 * (1 - a_1)"] * 8)).strip()
    )
    source = "\n".join(lines[:-1]) + "\n"
    path = tmp_path / "printed.py"
    path.write_text(source)
    done = subprocess.run(
        ["ruff", "format", "--diff", "--line-length", "100", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
