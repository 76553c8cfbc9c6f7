"""The derivation as one self-contained HTML page: MathML equations, the code beside them.

The page needs nothing from the network: equations are MathML (rendered natively by current
browsers), the network picture is inline SVG, the code is highlighted by Pygments when it is
installed (plain, escaped text when not), and there is no script at all (a Content-Security-
Policy forbids any). Structure lives in ``templates/html/page.html.jinja`` (autoescaped); every
piece of markup made here is built from escaped text or from :mod:`.mathml`'s allowlist.

Links between equations and code come from a *citation map*: ``(line, equation key)`` pairs that
code generation records while it prints each "(N)" comment; nothing here searches the code's
text. Equation ``key`` gets the anchor ``eq-<N>`` (its printed number) and code line ``n`` the
anchor ``L<n>``.

The worked example and the results (training curve, confusion matrix) are plain data handed in
by the caller (:mod:`symgrad.runtime.page` computes them); this module only prints them.

Longer than 400 lines on purpose: the escaping rules and the page's parts are audited together.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from html import escape
from pathlib import Path

import jinja2
from markupsafe import Markup

from .._paths import template_root
from ..derivation import Derivation
from . import latex as L
from .mathml import latex_to_mathml

TEMPLATE = "html/page.html.jinja"
#: The id of the JSON block that carries the results, so a later command can add to the page.
DATA_ID = "symgrad-report"


@dataclass(frozen=True)
class CodeView:
    """The generated source and its citation map: ``(line, key)``, lines counted from 1."""

    source: str
    citations: tuple[tuple[int, str], ...] = ()
    filename: str = "trainer.py"


@dataclass(frozen=True)
class Results:
    """What training and evaluation add to the page (every field optional)."""

    history: dict | None = None  # per-epoch lists: loss, val_loss, accuracy, val_accuracy
    confusion: Sequence[Sequence[int]] | None = None  # rows: true class, columns: predicted
    labels: Sequence[str] = ()  # class labels (user data: escaped)
    metrics: dict = field(default_factory=dict)  # name -> number, e.g. {"loss": 0.12}
    data: str = ""  # where the numbers come from (user text: escaped)

    def to_json(self) -> dict:
        return {
            "history": self.history,
            "confusion": None if self.confusion is None else [list(r) for r in self.confusion],
            "labels": list(self.labels),
            "metrics": dict(self.metrics),
            "data": self.data,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Results:
        return cls(
            history=obj.get("history"),
            confusion=obj.get("confusion"),
            labels=tuple(str(x) for x in obj.get("labels") or ()),
            metrics=dict(obj.get("metrics") or {}),
            data=str(obj.get("data") or ""),
        )


# ---------------------------------------------------------------------------------------------
# The IR, printed by the LaTeX printer (the page and the PDF show the same formulas)


def equation_latex(d: Derivation, eq) -> str:
    """The display LaTeX of ``eq`` (no number, no environment), as the LaTeX printer prints it.

    A matrix form given as a bare right side (not a ``(lhs, rhs)`` pair) is shown on a row of
    its own after the equation.
    """
    matrix = eq.matrix
    if matrix is None or isinstance(matrix, tuple):
        return L.equation_latex(d, eq)
    body = L.equation_latex(d, replace(eq, matrix=None))
    end = "\n" + r"\end{split}"
    assert body.endswith(end), body  # the LaTeX printer's display body is one split block
    return body[: -len(end)] + r"\\[1ex]" + "\n" + r"&\quad " + L.inline_latex(matrix) + end


def inline_latex(expr) -> str:
    """Inline LaTeX of one SymPy part of the prose, as the LaTeX printer prints it."""
    return L.inline_latex(expr)


def parts_html(parts) -> Markup:
    """Prose parts: ``str`` escaped, SymPy as inline MathML."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(escape(part))
        else:
            out.append(latex_to_mathml(inline_latex(part), "inline"))
    return Markup("".join(out))


def prose_html(d: Derivation, eq) -> Markup:
    """The explanation of ``eq``: text escaped, inline maths as MathML."""
    return parts_html(eq.prose)


# ---------------------------------------------------------------------------------------------
# Numbers


def number_latex(v: float, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits as LaTeX (``1.2 \\times 10^{-5}``)."""
    v = float(v)
    if math.isnan(v):
        return r"\mathrm{NaN}"
    if math.isinf(v):
        return r"\infty" if v > 0 else r"-\infty"
    if v == 0:
        return "0"
    text = f"{v:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        return rf"{mant} \times 10^{{{int(exp)}}}"
    return text


def value_latex(value) -> str:
    """LaTeX for one worked value: ``label = number``, a row vector ``(...)^T`` or a matrix."""
    shown = value.shown
    cut = shown.shape != value.array.shape
    if shown.ndim == 0:
        body = number_latex(shown)
    elif shown.ndim == 1:
        items = [number_latex(v) for v in shown]
        if cut:
            items.append(r"\ldots")
        if len(items) == 1:
            return rf"{value.label} = {items[0]}"
        body = r"\left(" + ",\\ ".join(items) + r"\right)^{T}"
    else:
        cut_rows = shown.shape[0] < value.array.shape[0]
        cut_cols = shown.shape[1] < value.array.shape[1]
        rows = [" & ".join(number_latex(v) for v in row) for row in shown]
        if cut_cols:
            rows = [r + r" & \cdots" for r in rows]
        if cut_rows:
            rows.append(r"\vdots")
        body = r"\begin{bmatrix}" + r" \\ ".join(rows) + r"\end{bmatrix}"
    return rf"{value.label} = {body}"


def _worked_html(step) -> Markup:
    parts = []
    for value in step.values:
        if value.rows:
            head = "<th></th>" + "".join(
                f"<th>{latex_to_mathml(c, 'inline')}</th>" for c in value.cols
            )
            body = "".join(
                f"<tr><th>{latex_to_mathml(label, 'inline')}</th>"
                + "".join(f"<td>{latex_to_mathml(number_latex(v), 'inline')}</td>" for v in row)
                + "</tr>"
                for label, row in zip(value.rows, value.shown)
            )
            parts.append(f'<table class="sg-step"><tr>{head}</tr>{body}</table>')
        else:
            parts.append(
                f'<div class="sg-value">{latex_to_mathml(value_latex(value), "inline")}</div>'
            )
        if value.excerpt:
            parts.append(f'<div class="sg-excerpt">({escape(value.excerpt)})</div>')
    return Markup("".join(parts))


def _worked_ctx(step) -> dict:
    return {"title": step.title, "note": step.note, "html": _worked_html(step)}


# ---------------------------------------------------------------------------------------------
# Code


def _highlight_lines(source: str) -> list[str]:
    """One HTML string per source line: Pygments when installed and line-safe, else escaped."""
    lines = source.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:
        return [escape(line) for line in lines]
    out = highlight(
        source, PythonLexer(stripnl=False, ensurenl=True), HtmlFormatter(nowrap=True)
    ).split("\n")
    if out and out[-1] == "":
        out.pop()
    # each line must close what it opens (Pygments does so); otherwise fall back to plain text
    if len(out) != len(lines) or any(x.count("<span") != x.count("</span>") for x in out):
        return [escape(line) for line in lines]
    return out


def _pygments_css() -> str:
    try:
        from pygments.formatters import HtmlFormatter
    except ImportError:
        return ""
    return HtmlFormatter(style="default").get_style_defs(".sg-code")


# ---------------------------------------------------------------------------------------------
# The page


def _template_dir() -> Path:
    """Where the templates are: inside the installed package, or ``templates/`` of a checkout."""
    return template_root(TEMPLATE)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_template_dir())),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _title(d: Derivation) -> str:
    spec = d.spec
    sizes = "-".join(str(s) for s in spec.sizes)
    acts = ", ".join(layer.activation for layer in spec.layers)
    return (
        f"layers {sizes} ({acts}), loss {spec.loss}, optimiser {spec.optimizer.name}, "
        f"{spec.n_params:,} parameters"
    )


def _attach_worked(keys: list[str], steps: Iterable) -> tuple[dict[str, list], list, list]:
    """Each step goes under the first of its keys that the derivation has; ``data`` (the batch)
    at the top, the rest at the end."""
    have = set(keys)
    by_key: dict[str, list] = {}
    rest, intro = [], []
    for step in steps:
        if tuple(step.keys) == ("data",):
            intro.append(step)
            continue
        key = next((k for k in step.keys if k in have), None)
        if key is None and step.keys and step.keys[-1] == "opt":
            key = next((k for k in keys if k.startswith("opt.")), None)
        if key is None:
            rest.append(step)
        else:
            by_key.setdefault(key, []).append(step)
    return by_key, rest, intro


def _confusion_rows(results: Results) -> list[dict]:
    cm = [[int(v) for v in row] for row in results.confusion or ()]
    if not cm:
        return []
    total = max(1, max(max(row) for row in cm))
    labels = list(results.labels) or [str(i) for i in range(len(cm))]
    return [
        {
            "label": labels[i] if i < len(labels) else str(i),
            "cells": [
                {"n": v, "alpha": f"{0.08 + 0.72 * v / total:.2f}", "diag": i == j}
                for j, v in enumerate(row)
            ],
        }
        for i, row in enumerate(cm)
    ]


def _metric(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def report_json(results: Results, spec_digest: str) -> Markup:
    """The results as JSON for a ``<script type="application/json">`` block (``<`` escaped)."""
    text = json.dumps({"spec_sha256": spec_digest, **results.to_json()}, sort_keys=True)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def read_report(html_text: str, spec_digest: str) -> Results | None:
    """The results a page written by :func:`render_html` carries, if it is for the same spec."""
    m = re.search(
        r'<script type="application/json" id="%s">(.*?)</script>' % DATA_ID, html_text, re.S
    )
    if not m:
        return None
    try:
        obj = json.loads(m.group(1))
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("spec_sha256") != spec_digest:
        return None
    return Results.from_json(obj)


def render_html(
    d: Derivation,
    *,
    code: CodeView | None = None,
    worked=None,
    network_svg: str | None = None,
    results: Results | None = None,
    curve_svg: str | None = None,
    fragment: bool = False,
) -> str:
    """The page (or, with ``fragment``, a ``<div>`` for Jupyter) for the derivation ``d``.

    Args:
        d: the derivation.
        code: the generated trainer and its citation map; no code panel when None.
        worked: a worked example (``.steps``, each with ``keys``, ``title``, ``values``,
            ``note``), as made by :func:`symgrad.runtime.worked.worked_example`.
        network_svg: the picture (trusted SVG from :mod:`.svg`).
        results: training/evaluation results; ``curve_svg`` its training curve (from
            :func:`.svg.training_curve_svg`).
        fragment: a ``<div>`` without ``<html>`` (for ``_repr_html_``).
    """
    spec = d.spec
    keys = [eq.key for eq in d.equations]
    number = {eq.key: d.eq(eq.key) for eq in d.equations}
    lines_of: dict[str, list[int]] = {}
    cites_at: dict[int, list[tuple[int, str]]] = {}
    if code is not None:
        for line, key in sorted(set(code.citations)):
            if key not in number:
                raise ValueError(
                    f"the code cites equation {key!r} at line {line}, which the derivation "
                    "does not have"
                )
            lines_of.setdefault(key, []).append(line)
            cites_at.setdefault(line, []).append((number[key], key))
    by_key, rest, intro = _attach_worked(keys, worked.steps if worked is not None else ())
    sections = []
    for eq in d.equations:
        if not sections or sections[-1]["title"] != eq.section:
            sections.append(
                {"title": eq.section, "id": f"sec-{len(sections) + 1}", "equations": []}
            )
        sections[-1]["equations"].append(
            {
                "key": eq.key,
                "number": number[eq.key],
                "math": Markup(latex_to_mathml(equation_latex(d, eq), "block")),
                "prose": prose_html(d, eq),
                "lines": lines_of.get(eq.key, []),
                "worked": [_worked_ctx(s) for s in by_key.get(eq.key, [])],
            }
        )
    code_lines = []
    if code is not None:
        for n, html_line in enumerate(_highlight_lines(code.source), start=1):
            code_lines.append(
                {"n": n, "html": Markup(html_line), "cites": sorted(cites_at.get(n, []))}
            )
    notation = [parts_html(p) for p in getattr(d, "conventions", ())]
    seeds = [[parts_html((x,)) for x in row] for row in getattr(d, "seed_symbols", ())]
    ctx = {
        "notation": notation,
        "seed_symbols": seeds,
        "fragment": fragment,
        "name": spec.name,
        "description": [p for p in spec.description.split("\n\n") if p.strip()],
        "summary": _title(d),
        "sections": sections,
        "worked_rest": [_worked_ctx(s) for s in rest],
        "worked_intro": [_worked_ctx(s) for s in intro],
        "worked_data": worked is not None,
        "network_svg": Markup(network_svg) if network_svg else None,
        "code": code,
        "code_lines": code_lines,
        "pygments_css": Markup(_pygments_css()) if code is not None else "",
        "results": results,
        "curve_svg": Markup(curve_svg) if curve_svg else None,
        "confusion": _confusion_rows(results) if results is not None else [],
        "metrics": [(k, _metric(v)) for k, v in sorted((results.metrics or {}).items())]
        if results is not None
        else [],
        "report_json": report_json(results, spec.digest()) if results is not None else None,
        "data_id": DATA_ID,
    }
    return _environment().get_template(TEMPLATE).render(**ctx)
