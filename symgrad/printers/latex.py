"""Printers of a Derivation as LaTeX, Markdown (``$$`` blocks) and plain text. No calculus here."""

from __future__ import annotations

import re

from ..derivation import Derivation

_PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage{amsmath,amssymb}
\usepackage[margin=2cm]{geometry}
\allowdisplaybreaks
\begin{document}
"""


def _title(d: Derivation) -> str:
    spec = d.spec
    sizes = " - ".join(str(s) for s in spec.sizes)
    acts = ", ".join(layer.activation for layer in spec.layers)
    return (
        f"Derivation for {spec.name}: layers {sizes}, activations {acts}, loss {spec.loss}, "
        f"optimiser {spec.optimizer.name}"
    )


def _sections(d: Derivation):
    section = None
    for eq in d.equations:
        if eq.section != section:
            section = eq.section
            yield section, None
        yield section, eq


def _latex_text(text: str) -> str:
    """Prose for a LaTeX document: keep inline math, escape the rest."""
    out = []
    for i, part in enumerate(re.split(r"(\\\(.*?\\\))", text)):
        if i % 2:
            out.append(part)
        else:
            out.append(part.replace("_", r"\_").replace("^", r"\^{}").replace("~", r"\~{}"))
    return "".join(out)


def render_latex(d: Derivation, standalone: bool = False) -> str:
    """The derivation as LaTeX: one ``equation`` per step, tagged with its number."""
    lines = []
    if standalone:
        lines.append(_PREAMBLE)
        lines.append(r"\section*{%s}" % _latex_text(_title(d)))
    else:
        lines.append("%% " + _title(d))
    for section, eq in _sections(d):
        if eq is None:
            lines.append("")
            lines.append(r"\subsection*{%s}" % section if standalone else f"% --- {section}")
            continue
        if eq.text:
            lines.append(_latex_text(eq.text) if standalone else "% " + eq.text)
        lines.append(r"\begin{equation}")
        lines.append(eq.latex + r" \tag{%d}" % eq.number)
        lines.append(r"\end{equation}")
    if standalone:
        lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


def render_markdown(d: Derivation) -> str:
    """The derivation as Markdown with ``$$`` blocks (GitHub, Jupyter)."""
    lines = [f"### {_title(d)}"]
    for section, eq in _sections(d):
        if eq is None:
            lines += ["", f"#### {section}"]
            continue
        lines += [
            "",
            f"**({eq.number})** {_md_text(eq.text)}",
            "",
            "$$",
            eq.latex + r" \tag{%d}" % eq.number,
            "$$",
        ]
    return "\n".join(lines) + "\n"


def _md_text(text: str) -> str:
    return re.sub(r"\\\((.*?)\\\)", r"$\1$", text)


_TEXT_SUBS = [
    (r"\leftarrow", "←"),
    (r"\left", ""),
    (r"\right", ""),
    (r"\Big|", "|"), (r"\Big", ""), (r"\!", ""), (r"\:", " "),
    (r"\,", " "),
    (r"\;", " "),
    (r"\qquad", "    "),
    (r"\quad", "  "),
    (r"\partial", "∂"),
    (r"\delta", "δ"),
    (r"\sum", "Σ"),
    (r"\cdot", "·"),
    (r"\odot", "⊙"),
    (r"\to", "→"),
    (r"\lambda", "λ"),
    (r"\theta", "θ"),
    (r"\mu", "μ"),
    (r"\ne", "≠"),
    (r"\log", "log"),
    (r"\mathcal{R}", "R"),
    (r"\nabla", "∇"),
    (r"\operatorname", ""),
    (r"\mathrm", ""),
    (r"\textstyle", ""),
    (r"\tilde", "~"),
    (r"\texttt", ""),
    (r"\\", ";"),
    (r"\ell", "ℓ"),
    (r"\infty", "∞"),
    (r"\tanh", "tanh"),
    (r"\exp", "exp"),
    (r"\cosh", "cosh"),
    (r"\text", ""),
    (r"\begin{cases}", "{"),
    (r"\end{cases}", "}"),
    (r"\otherwise", "otherwise"),
]


def _group(text: str, start: int) -> tuple[str, int]:
    """The balanced ``{...}`` group starting at ``text[start]`` and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return text[start + 1 :], len(text)


def _frac(text: str) -> str:
    """Replace ``\\frac{a}{b}`` (nested too) by ``(a)/(b)``."""
    out = []
    i = 0
    while i < len(text):
        if text.startswith("\\frac", i) and text[i + 5 : i + 6] == "{":
            num, j = _group(text, i + 5)
            den, k = _group(text, j) if text[j : j + 1] == "{" else ("", j)
            num, den = _frac(num), _frac(den)
            wrap = [x if x.replace(" ", "").isalnum() else f"({x})" for x in (num, den)]
            out.append(f"{wrap[0]}/{wrap[1]}")
            i = k
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _groups(text: str) -> str:
    """``\\sqrt{x}`` -> ``sqrt(x)``; ``^{x y}`` -> ``^(x y)`` (a one-token group loses braces)."""
    out = []
    i = 0
    while i < len(text):
        if text.startswith("\\sqrt{", i):
            inner, i = _group(text, i + 5)
            out.append(f"sqrt({_groups(inner)})")
        elif text[i] in "^_" and text[i + 1 : i + 2] == "{":
            inner, j = _group(text, i + 1)
            inner = _groups(inner)
            simple = inner.replace("(", "").replace(")", "").isalnum() or (
                inner.startswith("(") and inner.endswith(")")
            )
            out.append(text[i] + (inner if simple else f"({inner})"))
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def latex_to_text(tex: str) -> str:
    """A readable plain-text rendering of one LaTeX equation body (for terminals)."""
    text = _groups(_frac(tex))
    for old, new in _TEXT_SUBS:
        text = text.replace(old, new)
    text = text.replace(r"\{", "{").replace(r"\}", "}")
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)
    text = re.sub(r"\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\{([^{}]*)\}", r"\1", text)
    text = text.replace("&", " ")
    return re.sub(r"\s+", " ", text).strip()


def render_text(d: Derivation) -> str:
    """The derivation as plain text for a terminal."""
    lines = [_title(d)]
    for section, eq in _sections(d):
        if eq is None:
            lines += ["", section, "-" * len(section)]
            continue
        lines.append(f"({eq.number}) {latex_to_text(eq.latex)}")
        if eq.text:
            lines.append("     " + latex_to_text(eq.text.replace(r"\(", "").replace(r"\)", "")))
    return "\n".join(lines) + "\n"


def render(d: Derivation, fmt: str = "latex", standalone: bool = False) -> str:
    """Render in ``fmt``: ``latex`` (default), ``markdown`` or ``text``."""
    if fmt == "latex":
        return render_latex(d, standalone=standalone)
    if fmt == "markdown":
        return render_markdown(d)
    if fmt == "text":
        return render_text(d)
    raise ValueError(f"unknown format {fmt!r}; expected latex, markdown or text")
