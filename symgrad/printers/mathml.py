"""MathML from the LaTeX printer's output (latex2mathml), checked against an allowlist.

Why LaTeX -> MathML and not SymPy's MathML printer: the LaTeX printer already owns every display
decision (layer superscripts, parentheses, the steps of a chain, line breaks); converting its
output keeps the page and the PDF identical, with one place to fix a rendering.

latex2mathml's string output un-escapes its text (``\\text{<b>}`` would come out as markup), so
its element tree is used instead and written out here: only MathML elements and presentation
attributes are allowed (anything else turns the formula into an ``merror`` holding the escaped
source), and every text node is escaped by the serializer.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from html import escape, unescape

NS = "http://www.w3.org/1998/Math/MathML"

#: MathML Core elements (and the few latex2mathml writes that browsers render).
ELEMENTS = frozenset(
    """math mrow mi mn mo ms mtext mspace msub msup msubsup munder mover munderover mfrac msqrt
    mroot mstyle mpadded mphantom mtable mtr mtd mlabeledtr semantics annotation merror
    mmultiscripts mprescripts none menclose""".split()
)
#: Presentation attributes; no event handlers, no href, no style.
ATTRIBUTES = frozenset(
    """display mathvariant stretchy fence form separator width height depth lspace rspace
    columnalign rowalign rowspacing columnspacing columnlines rowlines frame displaystyle
    scriptlevel accent accentunder movablelimits largeop symmetric minsize maxsize
    linethickness notation mathsize mathcolor class encoding""".split()
)


class UnsafeMathML(ValueError):
    """latex2mathml produced something outside the allowlist (or not well-formed XML)."""


def available() -> bool:
    """Whether latex2mathml is installed."""
    try:
        import latex2mathml.converter  # noqa: F401
    except ImportError:
        return False
    return True


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _clean(elem: ET.Element) -> None:
    name = _local(elem.tag)
    if name not in ELEMENTS:
        raise UnsafeMathML(f"element <{name}> is not MathML")
    for attr in list(elem.attrib):
        if _local(attr) not in ATTRIBUTES and not (name == "math" and attr == "xmlns"):
            raise UnsafeMathML(f"attribute {attr!r} on <{name}> is not allowed")
    if name in ("mi", "mo") and (elem.text or "").strip() == "&":
        raise UnsafeMathML("a stray alignment '&' (an environment latex2mathml does not know)")
    elem.tag = name
    # latex2mathml keeps character references (``&#x02211;``) as text: resolve them, so the
    # serializer escapes the result once (``<`` typed in \\text{} stays text)
    if elem.text:
        elem.text = unescape(elem.text)
    if elem.tail:
        elem.tail = unescape(elem.tail)
    for child in elem:
        _clean(child)


def sanitize(root: ET.Element) -> str:
    """Check the tree ``root`` against the allowlist and write it out (text escaped).

    Raises:
        UnsafeMathML: for an element or attribute outside the allowlist.
    """
    if _local(root.tag) != "math":
        raise UnsafeMathML("the root element is not <math>")
    _clean(root)
    root.set("xmlns", NS)
    return ET.tostring(root, encoding="unicode", short_empty_elements=True)


def error_math(tex: str, why: str, display: str = "block") -> str:
    """An ``merror`` showing the escaped LaTeX source (never its markup)."""
    return (
        f'<math xmlns="{NS}" display="{display}"><merror><mtext>'
        f"{escape(why)}: {escape(tex)}</mtext></merror></math>"
    )


#: a row break with extra space, ``\\[1ex]`` (the LaTeX printer's gap before a matrix form)
_ROW_GAP = re.compile(r"\\\\\[\s*-?[0-9.]+\s*(?:ex|em|pt|mm|cm|in|mu)\s*\]")


@lru_cache(maxsize=4096)
def latex_to_mathml(tex: str, display: str = "block") -> str:
    """MathML (``<math>...</math>``) for one LaTeX formula; ``display`` is block or inline.

    Never raises on bad input: a formula latex2mathml cannot convert, or whose tree fails
    :func:`sanitize`, becomes an ``merror`` (which the browser test counts as a failure).
    """
    if display not in ("block", "inline"):
        raise ValueError(f"display must be 'block' or 'inline', got {display!r}")
    from latex2mathml.converter import convert_to_element

    # latex2mathml lays out split (and align*) as a table but not aligned, which means the same
    tex = tex.replace(r"\begin{aligned}", r"\begin{split}").replace(
        r"\end{aligned}", r"\end{split}"
    )
    # nor a row break's extra space (``\\[1ex]``, which it would print as text): a plain break
    tex = _ROW_GAP.sub(r"\\\\", tex)
    try:
        tree = convert_to_element(tex, display=display)
    except Exception as exc:  # latex2mathml raises many types on unknown commands
        return error_math(tex, f"cannot convert ({type(exc).__name__})", display)
    try:
        return sanitize(tree)
    except UnsafeMathML as exc:
        return error_math(tex, f"unsafe MathML ({exc})", display)
