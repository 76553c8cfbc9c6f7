"""The Derivation as Markdown for GitHub and Jupyter (MathJax): ``$$`` blocks and ``$`` inline.

The maths is the LaTeX printer's; each equation is an ``aligned`` block with ``\\tag{n}``.
"""

from __future__ import annotations

from ..derivation import Derivation
from . import notation as pn
from .latex import equation_block, latex

_MD_ESCAPES = {c: "\\" + c for c in "\\`*_{}[]<>#|$"}


def text(s: str) -> str:
    """Plain text made safe for Markdown (no accidental emphasis, code or maths)."""
    return "".join(_MD_ESCAPES.get(c, c) for c in s)


def prose(parts) -> str:
    return "".join(text(p) if isinstance(p, str) else "$%s$" % latex(p) for p in parts)


def render_markdown(d: Derivation) -> str:
    """The derivation as Markdown with ``$$`` blocks (GitHub, Jupyter)."""
    lines = [f"### {text(pn.title(d))}", "", f"#### {pn.NOTATION}", ""]
    for para in d.conventions:
        lines += [prose(para), ""]
    lines += [text(pn.SEED_INTRO), ""]
    lines.append("| " + " | ".join(pn.SEED_HEADER) + " |")
    lines.append("|" + " --- |" * len(pn.SEED_HEADER))
    for src, sym, meaning, ours in d.seed_symbols:
        lines.append(f"| {text(src)} | ${latex(sym)}$ | {text(meaning)} | ${latex(ours)}$ |")
    for section, group in pn.sections(d):
        lines += ["", f"#### {text(section)}"]
        for number, eq in group:
            lines += ["", f"**({number})** {prose(eq.prose)}".rstrip(), ""]
            lines += ["$$", equation_block(eq, "aligned") + r" \tag{%s}" % number, "$$"]
    return "\n".join(lines) + "\n"
