"""The printed derivation: LaTeX that parses (and compiles), Markdown, plain text, numbering."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import symgrad
from symgrad.printers.latex import render

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"



SPECS = {
    "xor": EXAMPLES / "xor.yaml",
    "softmax_regression": EXAMPLES / "softmax_iris.yaml",
    "logistic_regression_l2": EXAMPLES / "logistic_regression.yaml",
    "linear_newton": EXAMPLES / "linear_regression_newton.yaml",
    "relu_tanh_mlp": EXAMPLES / "mlp_digits.yaml",
    "seed002": EXAMPLES / "seed002.yaml",
    "custom_swish": EXAMPLES / "custom_swish.yaml",
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
    },
    "softmax_l2_l1": {
        "name": "softmax_l2_l1",
        "inputs": 3,
        "layers": [{"units": 4, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
        "loss": "cross_entropy",
        "regularization": {"l2": 0.01, "l1": 0.001},
    },
    "custom_inline": {
        "name": "custom_inline",
        "inputs": 2,
        "activations": {"cube": "z**3 / 3 + z", "expo": "exp(z)"},
        "losses": {"pseudo_huber": "sqrt(1 + (a - y)**2) - 1"},
        "layers": [{"units": 2, "activation": "cube"}, {"units": 1, "activation": "expo"}],
        "loss": "pseudo_huber",
    },
}
CUSTOM = {"custom_swish", "custom_inline"}


def _param(name: str):
    return pytest.param(name, id=name)


NAMES = [_param(name) for name in SPECS]


_CACHE: dict = {}


def derivation(name: str):
    if name not in _CACHE:
        _CACHE[name] = symgrad.derive(symgrad.load_spec(SPECS[name]))
    return _CACHE[name]


def _inline_math(text: str) -> list[str]:
    return re.findall(r"\\\((.*?)\\\)", text)


def _balanced(tex: str) -> bool:
    depth = 0
    for ch in tex.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


# ---------------------------------------------------------------------------------------------
# Equations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_equation_parses_as_latex(name: str) -> None:
    converter = pytest.importorskip(
        "latex2mathml.converter", reason="latex2mathml is not installed (pip install latex2mathml)"
    )
    d = derivation(name)
    for eq in d.equations:
        assert eq.latex.strip(), eq.key
        assert _balanced(eq.latex), f"({eq.number}) {eq.key}: unbalanced braces: {eq.latex}"
        lefts = len(re.findall(r"\\left(?![a-zA-Z])", eq.latex))
        rights = len(re.findall(r"\\right(?![a-zA-Z])", eq.latex))
        assert lefts == rights, f"({eq.number}) {eq.key}: \\left/\\right unmatched: {eq.latex}"
        try:
            converter.convert(eq.latex)
        except Exception as exc:  # pragma: no cover - reported with the equation
            pytest.fail(f"({eq.number}) {eq.key} does not parse ({exc!r}): {eq.latex}")
        for math in _inline_math(eq.text):
            try:
                converter.convert(math)
            except Exception as exc:  # pragma: no cover
                pytest.fail(f"({eq.number}) {eq.key}: inline math {math!r} does not parse: {exc!r}")


@pytest.mark.parametrize("name", NAMES)
def test_equations_are_numbered_consecutively(name: str) -> None:
    d = derivation(name)
    numbers = [eq.number for eq in d.equations]
    assert numbers == list(range(1, len(numbers) + 1))
    keys = [eq.key for eq in d.equations]
    assert len(set(keys)) == len(keys), "equation keys must be unique"
    for eq in d.equations:
        assert d.eq(eq.key) == eq.number
        assert d.equation(eq.key) is eq
    # the LaTeX tags them in the same order
    for standalone in (False, True):
        tex = d.to_latex(standalone=standalone)
        assert [int(k) for k in re.findall(r"\\tag\{(\d+)\}", tex)] == numbers
        assert tex.count(r"\begin{equation}") == tex.count(r"\end{equation}") == len(numbers)
    # the keys every spec has
    for key in ("cost", "forward", "delta.out", "hess.out", "newton"):
        assert key in keys
    for layer in d.layers:
        assert f"grad.{layer.index}" in keys
        if layer.index < d.depth:
            assert f"backprop.{layer.index}" in keys and f"backprop.sum.{layer.index}" in keys


@pytest.mark.parametrize("name", NAMES)
def test_standalone_document(name: str) -> None:
    d = derivation(name)
    tex = d.to_latex(standalone=True)
    assert tex.lstrip().startswith(r"\documentclass")
    assert r"\begin{document}" in tex
    assert tex.rstrip().endswith(r"\end{document}")
    assert tex.count(r"\documentclass") == 1
    body = d.to_latex(standalone=False)
    assert r"\documentclass" not in body and r"\end{document}" not in body
    assert render(d, "latex") == body
    assert render(d, "latex", standalone=True) == tex


@pytest.mark.parametrize("name", NAMES)
def test_standalone_prose_has_math_only_inside_inline_delimiters(name: str) -> None:
    """In the document's prose, math must sit inside \\( \\): a bare \\log or \\left is an error."""
    d = derivation(name)
    math_only = re.compile(r"\\(left|right|log|frac|sum|operatorname|partial|delta|mathcal)\b")
    for eq in d.equations:
        prose = re.sub(r"\\\(.*?\\\)", "", eq.text)
        bad = math_only.findall(prose)
        assert not bad, f"({eq.number}) {eq.key}: math commands {bad} outside \\( \\): {eq.text}"


@pytest.mark.parametrize("name", NAMES)
def test_standalone_document_compiles(name: str, tmp_path: Path) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed")
    d = derivation(name)
    (tmp_path / "derivation.tex").write_text(d.to_latex(standalone=True), encoding="utf-8")
    proc = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "derivation.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    context = proc.stdout[proc.stdout.find("!") :][:600] if errors else ""
    assert proc.returncode == 0, f"pdflatex failed: {errors}\n{context}"
    assert (tmp_path / "derivation.pdf").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# Markdown and text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_markdown_has_one_display_block_per_equation(name: str) -> None:
    d = derivation(name)
    md = render(d, "markdown")
    assert md == d._repr_latex_()
    blocks = re.findall(r"^\$\$\n(.*?)\n^\$\$$", md, flags=re.S | re.M)
    assert len(blocks) == len(d.equations)
    for eq, block in zip(d.equations, blocks):
        assert block == eq.latex + rf" \tag{{{eq.number}}}"
        assert f"**({eq.number})**" in md
    assert r"\(" not in md and r"\)" not in md  # inline math became $...$


@pytest.mark.parametrize("name", NAMES)
def test_text_has_no_latex_commands(name: str) -> None:
    d = derivation(name)
    text = render(d, "text")
    assert r"\frac" not in text
    assert r"\left" not in text and r"\right" not in text
    problems = []
    leftovers = sorted(set(re.findall(r"\\[A-Za-z]+|\\[^A-Za-z\s]", text)))
    if leftovers:
        problems.append(f"LaTeX commands left: {leftovers}")
    sizing = sorted(set(re.findall(r"\b(?:Big|big|Bigg|bigg)[lr]?(?=[\[\]|()])", text)))
    if sizing:
        problems.append(f"LaTeX sizing commands left as words: {sizing}")
    offending = [
        line.strip()
        for line in text.splitlines()
        if re.search(r"\\|\b(?:Big|big|Bigg|bigg)[lr]?(?=[\[\]|()])", line)
    ]
    assert not problems, "text rendering: " + "; ".join(problems) + "\n" + "\n".join(offending)
    for eq in d.equations:
        assert f"({eq.number}) " in text


def _group_after(text: str, start: int) -> str:
    """The balanced ``(...)`` group that opens at ``text[start]`` (empty when none opens)."""
    if text[start : start + 1] != "(":
        return ""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return text[start + 1 :]


def test_text_keeps_the_radicand_of_a_square_root_together() -> None:
    """sqrt{(a - y)^2 + 1} must not read as sqrt(a - y)^2 + 1 in the terminal."""
    d = derivation("custom_inline")
    line = next(ln for ln in render(d, "text").splitlines() if ln.startswith("(1) "))
    groups = [_group_after(line, m.end()) for m in re.finditer(r"sqrt", line)]
    assert groups, line
    for group in groups:
        assert "+ 1" in group, f"the square root lost its radicand's grouping: {line}"


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(derivation("xor"), "html")
