"""Jupyter: a Derivation renders itself as markdown maths and as the HTML page's fragment.

The IR imports no printer; this module attaches the display methods to
:class:`~symgrad.derivation.Derivation` when :mod:`symgrad` is imported.
"""

from __future__ import annotations

from ..derivation import Derivation
from .html import render_html
from .latex import render_latex
from .markdown import render_markdown
from .mathml import available
from .svg import network_svg


def to_latex(d: Derivation, standalone: bool = False) -> str:
    """The derivation as LaTeX (``Derivation.to_latex``)."""
    return render_latex(d, standalone=standalone)


def repr_latex(d: Derivation) -> str:
    """Jupyter's ``_repr_latex_``: the markdown rendering (``$$`` blocks)."""
    return render_markdown(d)


def repr_html(d: Derivation) -> str | None:
    """Jupyter's ``_repr_html_``: MathML with the network's picture; None without latex2mathml,
    so Jupyter falls back to ``_repr_latex_``."""
    if not available():
        return None
    return render_html(d, network_svg=network_svg(d.spec), fragment=True)


def install() -> None:
    """Attach the display methods to :class:`Derivation`."""
    Derivation.to_latex = to_latex
    Derivation._repr_latex_ = repr_latex
    Derivation._repr_html_ = repr_html
