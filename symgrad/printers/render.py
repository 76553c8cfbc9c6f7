"""One entry point for the text formats: LaTeX, markdown and unicode text."""

from __future__ import annotations

from ..derivation import Derivation
from .latex import render_latex
from .markdown import render_markdown
from .text import render_text


def render(d: Derivation, fmt: str = "latex", standalone: bool = False) -> str:
    """Render in ``fmt``: ``latex`` (default), ``markdown`` or ``text``."""
    if fmt == "latex":
        return render_latex(d, standalone=standalone)
    if fmt == "markdown":
        return render_markdown(d)
    if fmt == "text":
        return render_text(d)
    raise ValueError(f"unknown format {fmt!r}; expected latex, markdown or text")
