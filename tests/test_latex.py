"""The printed derivation: LaTeX that compiles, Markdown for MathJax, text by the pretty printer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

import symgrad
from symgrad.derivation import notation as nt
from symgrad.printers.latex import latex
from symgrad.printers.render import render
from symgrad.printers.text import pretty

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXTRA = {
    "l2_l1_alphas": {
        "name": "l2_l1_alphas",
        "inputs": 3,
        "layers": [
            {"units": 4, "activation": "leaky_relu", "alpha": 0.2},
            {"units": 3, "activation": "elu", "alpha": 0.5},
            {"units": 2, "activation": "softplus"},
        ],
        "loss": "mse",
        "regularization": {"l2": 0.01, "l1": 0.001},
        "optimizer": {"name": "momentum", "batch_size": 8},
    },
    "softmax_l2_l1": {
        "name": "softmax_l2_l1",
        "inputs": 3,
        "layers": [{"units": 4, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.01, "l1": 0.001},
        "optimizer": {"name": "rmsprop", "batch_size": 8},
    },
    "custom_inline": {
        "name": "custom_inline",
        "inputs": 2,
        "activations": {"cube": "z**3 / 3 + z", "expo": "exp(z)"},
        "losses": {"pseudo_huber": "sqrt(1 + (a - y)**2) - 1"},
        "layers": [{"units": 2, "activation": "cube"}, {"units": 1, "activation": "expo"}],
        "loss": "pseudo_huber",
        "optimizer": {"name": "nesterov"},
    },
    "deep_sigmoid_newton": {
        "name": "deep_sigmoid_newton",
        "inputs": 2,
        "layers": [
            {"units": 3, "activation": "sigmoid"},
            {"units": 3, "activation": "tanh"},
            {"units": 3, "activation": "relu"},
            {"units": 1, "activation": "sigmoid"},
        ],
        "loss": "log_loss",
        "regularization": {"l2": 0.01},
        "optimizer": {"name": "newton"},
    },
}
SPECS = {p.stem: p for p in sorted(EXAMPLES.glob("*.yaml"))} | EXTRA
NAMES = [pytest.param(name, id=name) for name in SPECS]

_CACHE: dict = {}


def derivation(name: str):
    if name not in _CACHE:
        _CACHE[name] = symgrad.derive(symgrad.load_spec(SPECS[name]))
    return _CACHE[name]


# ---------------------------------------------------------------------------------------------
# The printers on single objects: exact strings
# ---------------------------------------------------------------------------------------------


def test_latex_of_the_notation() -> None:
    j, i = nt.j, nt.i
    assert latex(nt.w(2)[j, i]) == "{w^{(2)}_{ji}}"
    assert latex(nt.delta(1)[i] ** 2) == "{\\delta^{(1)}_{i}}^{2}"
    assert latex(nt.W(2).T) == r"W^{(2)\top}"
    assert latex(nt.Delta(2).T * nt.A(1)) == r"\Delta^{(2)\top} A^{(1)}"
    assert latex(sp.HadamardProduct(nt.FP(1), nt.Delta(2) * nt.W(2))) == (
        r"F_{1}' \odot \left(\Delta^{(2)} W^{(2)}\right)"
    )
    assert latex(sp.Sum(nt.C_x, (nt.sample, 1, nt.N)) / nt.N) == r"\frac{1}{N} \sum_{x} C_x"
    assert latex(sp.Derivative(nt.C, nt.w(1)[j, i])) == (
        r"\frac{\partial C}{\partial {w^{(1)}_{ji}}}"
    )
    assert latex(sp.Derivative(nt.f(2)(nt.z(2)[j]), nt.z(2)[j])) == (
        r"f_{2}'\left({z^{(2)}_{j}}\right)"
    )
    assert latex(nt.Rdelta(1)[i]) == r"\mathcal{R}\{\delta^{(1)}\}_{i}"
    assert latex(nt.HvW_(1)[j, i]) == r"{(Hv)_{w^{(1)}}}_{ji}"
    assert latex(nt.lambda_2 / nt.N * nt.W(1)) == r"\frac{\lambda_2}{N} W^{(1)}"


def test_pretty_of_the_notation() -> None:
    j, i = nt.j, nt.i
    assert pretty(nt.w(2)[j, i]) == "w⁽²⁾ⱼᵢ"
    assert pretty(nt.delta(1)[i]) == "δ⁽¹⁾ᵢ"
    assert pretty(nt.W(2).T) == "W⁽²⁾ᵀ"
    assert pretty(sp.HadamardProduct(nt.FP(1), nt.RZ(1))) == "F₁′ ⊙ R{Z⁽¹⁾}"
    assert pretty(sp.Derivative(nt.f(2)(nt.z(2)[j]), nt.z(2)[j])) == "f₂′(z⁽²⁾ⱼ)"
    assert pretty(sp.Derivative(nt.C, nt.b(1)[j])) == "  ∂C  \n──────\n∂b⁽¹⁾ⱼ"
    assert pretty(nt.w(1)[nt.j, nt.q]) == "w⁽¹⁾[j,q]"  # no unicode subscript q


def test_a_product_written_in_order_keeps_its_order_and_parentheses() -> None:
    a_j, y_j = nt.a(1)[nt.j], nt.y[nt.j]
    product = sp.Mul(a_j - y_j, 1 - a_j**2, evaluate=False)
    assert (
        latex(product) == r"\left({a^{(1)}_{j}} - y_{j}\right) \left(1 - {a^{(1)}_{j}}^{2}\right)"
    )
    assert pretty(product) == "             ⎛         2⎞\n(a⁽¹⁾ⱼ - yⱼ)⋅⎝1 - a⁽¹⁾ⱼ ⎠"


# ---------------------------------------------------------------------------------------------
# Whole documents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_equations_are_tagged_in_order(name: str) -> None:
    d = derivation(name)
    keys = [eq.key for eq in d.equations]
    assert len(set(keys)) == len(keys), "equation keys must be unique"
    for number, eq in enumerate(d.equations, 1):
        assert d.eq(eq.key) == number
        assert d.equation(eq.key) is eq
    numbers = list(range(1, len(keys) + 1))
    for standalone in (False, True):
        tex = render(d, "latex", standalone=standalone)
        assert [int(k) for k in re.findall(r"\\tag\{(\d+)\}", tex)] == numbers
        assert tex.count(r"\begin{equation}") == tex.count(r"\end{equation}") == len(numbers)
        assert tex.count(r"\begin{split}") == len(numbers)


@pytest.mark.parametrize("name", NAMES)
def test_standalone_document(name: str) -> None:
    d = derivation(name)
    tex = d.to_latex(standalone=True)
    assert tex.startswith(r"\documentclass")
    assert tex.count(r"\documentclass") == 1
    assert tex.rstrip().endswith(r"\end{document}")
    body = d.to_latex(standalone=False)
    assert r"\documentclass" not in body and r"\end{document}" not in body
    assert body in tex
    assert render(d, "latex") == body
    assert render(d, "latex", standalone=True) == tex
    assert r"\subsection*{Notation}" in body and r"\begin{tabular}{llll}" in body


def _compile(tex: str, folder: Path) -> tuple[int, list[str], list[float]]:
    (folder / "derivation.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        [shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", "derivation.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (folder / "derivation.log").read_text(encoding="utf-8", errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    boxes = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    return proc.returncode, errors, boxes


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_standalone_document_compiles_without_overfull_boxes(name: str, tmp_path: Path) -> None:
    rc, errors, boxes = _compile(derivation(name).to_latex(standalone=True), tmp_path)
    assert (rc, errors) == (0, []), errors
    assert (tmp_path / "derivation.pdf").stat().st_size > 0
    assert max(boxes, default=0.0) <= 10.0, f"overfull boxes: {boxes}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_compile_check_catches_an_error_and_a_wide_box(tmp_path: Path) -> None:
    wide = r"\[" + " + ".join(f"x_{{{n}}}" for n in range(80)) + r"\]"
    doc = "\\documentclass{article}\n\\begin{document}\n%s\n\\end{document}\n"
    rc, errors, boxes = _compile(doc % wide, tmp_path)
    assert rc == 0 and max(boxes) > 10.0
    rc, errors, boxes = _compile(doc % r"\(a^b^c\)", tmp_path)
    assert rc != 0 and errors[0] == "! Double superscript."


@pytest.mark.parametrize("name", NAMES)
def test_prose_is_latex_text(name: str) -> None:
    """Prose sits between equations as text: no comments, no bare math outside \\( \\)."""
    tex = render(derivation(name), "latex")
    assert not [ln for ln in tex.splitlines() if ln.lstrip().startswith("%")]
    outside = re.sub(r"\\\(.*?\\\)", "", tex, flags=re.S)
    outside = re.sub(r"\\begin\{equation\}.*?\\end\{equation\}", "", outside, flags=re.S)
    outside = re.sub(r"\\begin\{tabular\}\{llll\}|\\end\{tabular\}|\\hline", "", outside)
    bad = re.findall(r"(?<!\\)[_^]|\\(?:frac|sum|partial|left|right|delta|mathcal)\b", outside)
    assert not bad, bad


@pytest.mark.parametrize("name", NAMES)
def test_markdown_has_one_display_block_per_equation(name: str) -> None:
    d = derivation(name)
    md = render(d, "markdown")
    assert md == d._repr_latex_()
    blocks = re.findall(r"^\$\$\n(.*?)\n^\$\$$", md, flags=re.S | re.M)
    assert len(blocks) == len(d.equations)
    for number, block in enumerate(blocks, 1):
        assert block.startswith(r"\begin{aligned}")
        assert block.endswith(r"\end{aligned} \tag{%d}" % number)
        assert f"**({number})**" in md
    assert r"\(" not in md and r"\)" not in md
    outside = re.sub(r"^\$\$\n.*?\n^\$\$$", "", md, flags=re.S | re.M)
    assert outside.replace(r"\$", "").count("$") % 2 == 0  # inline maths is balanced


@pytest.mark.parametrize("name", NAMES)
def test_text_is_pretty_printed(name: str) -> None:
    d = derivation(name)
    text = render(d, "text")
    assert "\\" not in text  # not a single LaTeX command: nothing was converted
    for number in range(1, len(d.equations) + 1):
        assert f"\n({number})\n" in text


def test_text_of_a_square_root_keeps_its_radicand() -> None:
    d = derivation("custom_inline")
    rhs = d.equation("cost.sample").rhs
    shown = pretty(rhs)
    assert "╲╱" in shown or "√" in shown
    assert "(a⁽²⁾ⱼ - yⱼ)" in shown


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'html'; expected latex, markdown or text"):
        render(derivation("xor"), "html")
