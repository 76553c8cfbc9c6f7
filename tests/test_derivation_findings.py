"""Regression tests for findings 1-13 of issue 9 (the printed derivation), display side.

Each test reads what ``symgrad derive`` prints (the LaTeX of one equation, found by its tag) and
fails on the derivation before the SymPy IR (the string-built one): the numeric checks of every
equation live in the verification tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sympy as sp

import symgrad
from symgrad import calculus as calc
from symgrad.printers.render import render

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
a, y = calc.a, calc.y


def _derive(spec):
    return symgrad.derive(symgrad.load_spec(spec))


def _spec(name: str, layers: list, loss: str, **extra) -> dict:
    return {"name": name, "inputs": 3, "layers": layers, "loss": loss, **extra}


def block(d, key: str) -> str:
    """The LaTeX body of equation ``key`` in the printed derivation (found by its tag)."""
    tex = render(d, "latex")
    number = d.eq(key)
    end = tex.index(r"\tag{%d}" % number)
    start = tex.rindex(r"\begin{equation}", 0, end)
    return tex[start:end]


def flat(tex: str) -> str:
    """The LaTeX with line breaks and alignment removed (to search across broken lines)."""
    return re.sub(r"\s+", " ", tex.replace("&", "").replace(r"\\", " ").replace(r"\quad", ""))


# 1. the chain of the output delta keeps its parentheses ------------------------------------------
@pytest.mark.parametrize(
    ("act", "fprime"),
    [
        ("tanh", r"\left(1 - {a^{(1)}_{j}}^{2}\right)"),
        ("softplus", r"\left(1 - e^{- {a^{(1)}_{j}}}\right)"),
    ],
)
def test_finding01_output_delta_chain_is_parenthesised(act: str, fprime: str) -> None:
    d = _derive(_spec("f1", [{"units": 1, "activation": act}], "mse"))
    body = flat(block(d, "delta.out"))
    assert r"= \left({a^{(1)}_{j}} - y_{j}\right) " + fprime in body
    assert r"\cdot 1 -" not in body


# 2. the matrix-form gradients carry the regulariser ----------------------------------------------
def test_finding02_matrix_gradient_has_the_regulariser() -> None:
    d = _derive(
        _spec(
            "f2",
            [{"units": 2, "activation": "tanh"}, {"units": 1, "activation": "sigmoid"}],
            "log_loss",
            regularization={"l2": 0.1, "l1": 0.01},
        )
    )
    for l, prev in ((1, "X"), (2, "A^{(1)}")):
        body = flat(block(d, f"grad.W.{l}"))
        assert (
            r"\nabla_{W^{(%d)}} C_B = \frac{1}{m} \Delta^{(%d)\top} %s"
            r" + \frac{\lambda_2}{N} W^{(%d)}"
            r" + \frac{\lambda_1}{N} \operatorname{sign}\left(W^{(%d)}\right)"
            % (l, l, prev, l, l)
            in body
        ), body
        # and the bias gradient has none
        assert "lambda" not in block(d, f"grad.b.{l}")


# 3. the closed-form Hessian regularises weights only and adds scalars to scalars -----------------
def test_finding03_closed_form_hessian_leaves_the_bias_unregularised() -> None:
    d = _derive(EXAMPLES / "logistic_regression.yaml")
    ww = flat(block(d, "hess.closed"))
    assert r"+ \frac{\lambda_2 \delta_{iq}}{N}" in ww
    assert r"\left[\begin{matrix}I & 0\\0 & 0\end{matrix}\right]" in block(d, "hess.closed")
    for key in ("hess.closed.wb", "hess.closed.bb"):
        assert "lambda" not in block(d, key), key


def test_finding03_softmax_closed_form_entry_is_a_scalar() -> None:
    d = _derive(
        _spec(
            "f3",
            [{"units": 3, "activation": "softmax"}],
            "cross_entropy",
            regularization={"l2": 0.1},
        )
    )
    ww = flat(block(d, "hess.closed"))
    assert r"\frac{\partial^{2} C}{\partial {w^{(1)}_{ki}} \partial {w^{(1)}_{jq}}}" in ww
    assert r"+ \frac{\lambda_2 \delta_{iq} \delta_{jk}}{N}" in ww
    assert " I" not in ww.split("=", 1)[1]
    assert "lambda" not in block(d, "hess.closed.bb")


# 4. the block Hessian of one hidden layer includes L2 --------------------------------------------
def test_finding04_block_hessian_includes_l2() -> None:
    d = _derive(
        _spec(
            "f4",
            [{"units": 2, "activation": "tanh"}, {"units": 1, "activation": "identity"}],
            "mse",
            regularization={"l2": 0.1},
        )
    )
    assert r"+ \frac{\lambda_2 \delta_{ir} \delta_{jq}}{N}" in flat(block(d, "hess.blocks.11"))
    assert r"+ \frac{\lambda_2 \delta_{iq} \delta_{kp}}{N}" in flat(block(d, "hess.blocks.22"))
    assert "lambda" not in block(d, "hess.blocks.12")


# 5. Gauss-Newton with the J and S the code uses ---------------------------------------------------
def test_finding05_gauss_newton_states_the_code_s_for_unmatched_losses() -> None:
    d = _derive(EXAMPLES / "xor.yaml")  # mse with a sigmoid output: not matched
    gn = flat(block(d, "gauss_newton"))
    assert r"{J^{a}_{x}}^{\top} S^{\ell}_{x} J^{a}_{x}" in gn
    assert r"{J^{z}_{x}}^{\top} S^{G}_{x} J^{z}_{x}" in gn
    s = flat(block(d, "gauss_newton.s"))
    assert r"= \left(1 - {a^{(2)}_{j}}\right)^{2} {a^{(2)}_{j}}^{2}" in s
    # the kernel is l''(a) f'(z)^2, which is what the trainer's gauss_newton() uses
    assert sp.expand(d.kernel("gauss_newton.s") - a**2 * (1 - a) ** 2) == 0


# 6. the softmax delta keeps its indices ---------------------------------------------------------
def test_finding06_softmax_delta_indices() -> None:
    d = _derive(EXAMPLES / "softmax_iris.yaml")
    body = flat(block(d, "delta.out"))
    assert body.startswith(r"\begin{equation} \begin{split} {\delta^{(1)}_{j}} = ")
    assert (
        r"\sum_{k=1}^{n_{1}} \frac{\partial \ell}{\partial {a^{(1)}_{k}}} "
        r"\frac{\partial {a^{(1)}_{k}}}{\partial {z^{(1)}_{j}}}" in body
    )
    assert body.rstrip().endswith(
        r"= {a^{(1)}_{j}} - y_{j} [1ex] \Delta^{(1)} = A^{(1)} - Y \end{split}"
    )
    assert "_{m}" not in body


# 7. delta is per sample, C averages once ---------------------------------------------------------
def test_finding07_one_average_per_gradient() -> None:
    d = _derive(EXAMPLES / "mnist_textbook.yaml")
    assert r"\frac{\partial C_x}{\partial {z^{(2)}_{j}}}" in block(d, "delta.out")
    summed = flat(block(d, "backprop.sum.1"))
    assert summed.startswith(r"\begin{equation} \begin{split} \frac{\partial C_x}{\partial")
    assert r"\frac{1}{" not in summed and r"\frac{1}{" not in block(d, "backprop.1")
    for l in (1, 2):
        assert flat(block(d, f"grad.W.{l}")).count(r"\frac{1}{N}") == 2  # the chain and its rhs
    assert r"C_x = \sum_{j=1}^{n_{2}} \ell\left(" in flat(block(d, "cost.sample"))


# 8. the chosen optimiser's update is printed, with eta -------------------------------------------
def test_finding08_gradient_descent_update_is_printed() -> None:
    d = _derive(EXAMPLES / "xor.yaml")
    assert d.equations[-1].key == "opt.gd.theta"
    assert r"\theta &\leftarrow \theta - \eta g" in block(d, "opt.gd.theta")
    assert d.equations[-1].section == "Update"


def test_finding08_adam_update_is_printed() -> None:
    d = _derive(EXAMPLES / "mlp_digits.yaml")
    assert r"m_{t} &\leftarrow" in block(d, "opt.adam.m_t")
    assert r"v_{t} &\leftarrow" in block(d, "opt.adam.v_t")
    assert r"\theta &\leftarrow \theta - " in block(d, "opt.adam.theta")


def test_finding08_newton_step_has_eta_cg_and_the_indefinite_case() -> None:
    d = _derive(EXAMPLES / "logistic_regression.yaml")
    assert r"\theta &\leftarrow \theta - \eta p" in block(d, "newton")
    assert d.equation("newton").section == "Update"
    assert r"p &= \left(H + \mu_s I\right)^{-1} g" in block(d, "newton.exact")
    assert r"p &\leftarrow p + \alpha d" in block(d, "newton.cg")
    tex = render(d, "latex")
    assert "Above 2,000 parameters" in tex
    assert "the damping is raised until it has one" in tex
    assert "the indefinite case" in tex


# 9. the forward pass has its own number --------------------------------------------------------
@pytest.mark.parametrize("example", ["mlp_digits", "logistic_regression", "softmax_iris"])
def test_finding09_forward_pass_is_not_the_stable_loss(example: str) -> None:
    d = _derive(EXAMPLES / f"{example}.yaml")
    assert d.eq("forward.1") != d.eq("cost.stable")
    assert r"{z^{(1)}_{j}} &= \sum_{i=1}^{n_{0}} {w^{(1)}_{ji}} x_{i}" in block(d, "forward.1")
    assert r"\ell\left(" in block(d, "cost.stable")


# 10. prose is LaTeX text; text output is printed, not converted -----------------------------------
def test_finding10_prose_is_text_and_text_is_pretty_printed() -> None:
    d = _derive(EXAMPLES / "mlp_digits.yaml")
    for standalone in (False, True):
        tex = render(d, "latex", standalone=standalone)
        assert not [ln for ln in tex.splitlines() if ln.startswith("%")]
        assert "Z^{}(l)" not in tex
    text = render(d, "text")
    assert "\\" not in text
    for debris in ("Sum_j", "x~ x^T", ",;", "^(l)^T"):
        assert debris not in text
    assert "δ⁽²⁾ᵢ" in text and "∂Cₓ" in text


# 11. the regulariser uses the training-set size N ----------------------------------------------
def test_finding11_regulariser_uses_the_training_set_size() -> None:
    d = _derive(
        _spec(
            "f11",
            [{"units": 1, "activation": "identity"}],
            "mse",
            regularization={"l2": 0.1},
            optimizer={"name": "sgd", "batch_size": 32},
        )
    )
    assert r"\frac{\lambda_2 {w^{(1)}_{ji}}^{2}}{2 N}" in block(d, "reg.value")
    assert (
        r"w &\leftarrow \left(1 - \frac{\eta \lambda_2}{N}\right) w - \frac{\eta}{m} \sum_{x}"
        in block(d, "opt.weight_decay")
    )
    assert (
        r"g &= \frac{1}{m} \sum_{x} \nabla_{\theta} C_x + \frac{\lambda_2}{N} I_{w} \theta"
        in block(d, "opt.grad")
    )


# 12. non-smooth conventions are stated; L1 by a proximal step -------------------------------------
def test_finding12_conventions_and_the_proximal_step() -> None:
    d = _derive(
        _spec("f12", [{"units": 1, "activation": "relu"}], "mse", regularization={"l1": 0.1})
    )
    tex = render(d, "latex")
    assert r"(ReLU: \(f'(0) = 0\))" in tex
    assert "proximal (soft-threshold) step" in tex
    assert (
        r"w &\leftarrow \operatorname{sign}\left(u\right) "
        r"\max\left(0, \left|{u}\right| - \frac{\eta \lambda_1}{N}\right)" in block(d, "reg.prox")
    )
    assert "At z = 0 it takes the value of its piece for" in tex


# 13. readable forms ------------------------------------------------------------------------------
def test_finding13_sigmoid_derivative_reads_sigma_one_minus_sigma() -> None:
    d = _derive(EXAMPLES / "xor.yaml")
    body = block(d, "act.1.df")
    assert (
        r"= \left(1 - \sigma\left({z^{(1)}_{j}}\right)\right) \sigma\left({z^{(1)}_{j}}\right)"
        r" = \left(1 - {a^{(1)}_{j}}\right) {a^{(1)}_{j}}" in body
    )
    assert "cosh" not in body


def test_finding13_swish_derivative_reads_f_plus_sigma_one_minus_f() -> None:
    d = _derive(EXAMPLES / "custom_swish.yaml")
    f = r"f_{1}\left({z^{(1)}_{j}}\right)"
    assert r"= %s + \left(1 - %s\right) \sigma\left({z^{(1)}_{j}}\right)" % (f, f) in block(
        d, "act.1.df"
    )
    assert "cosh" not in block(d, "act.1.df")


def test_finding13_cauchy_delta_keeps_a_minus_y_whole() -> None:
    d = _derive(EXAMPLES / "custom_swish.yaml")
    body = flat(block(d, "delta.out"))
    assert (
        r"\frac{2 \left({a^{(2)}_{j}} - y_{j}\right)}{\left({a^{(2)}_{j}} - y_{j}\right)^{2} + 1}"
        in body
    )
    assert "y_{j}^{2}" not in body


def test_finding13_pseudo_huber_curvature_is_not_a_quartic() -> None:
    d = _derive(
        _spec(
            "f13",
            [{"units": 1, "activation": "sigmoid"}],
            "pseudo_huber",
            losses={"pseudo_huber": "sqrt(1 + (a - y)**2) - 1"},
        )
    )
    body = block(d, "hess.out")
    assert "}^{4}" not in body and "}^{3} y" not in body
    assert sp.count_ops(d.kernel("hess.out")) <= 25
