"""The citation map of generated code: (line, equation key) recorded while rendering.

``symgrad.codegen.generate_with_citations`` renders the module with each "(N)" printed as a
marker and resolves the markers afterwards; the HTML page links equations and code lines with
this map. The source must be byte for byte :func:`generate_source`'s, and the map must name
exactly the "(N)" the module prints, each with the key it was printed from.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_spec

import symgrad
from symgrad.codegen import generate_source, generate_with_citations
from symgrad.codegen.cite import CLOSE, OPEN, Citations
from symgrad.codegen.generate import _text_literal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

EXTRA = {
    "l2_l1_momentum": make_spec(
        ((3, "tanh"),), "sigmoid", "log_loss", l2=0.1, l1=0.01, optimizer={"name": "momentum"}
    ),
    "l1_newton_softmax": make_spec(
        (), "softmax", "cross_entropy", outputs=3, l1=0.1, optimizer={"name": "newton"}
    ),
}


def _cases():
    for path in EXAMPLES:
        yield pytest.param(path, f"examples/{path.name}", id=path.stem)
    for name, spec in EXTRA.items():
        yield pytest.param(symgrad.load_spec(spec), f"{name}.yaml", id=name)


def _printed_citations(source: str) -> Counter:
    """(line, N) for every "(N)" in a comment or a string of ``source`` (counted)."""
    found: Counter = Counter()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            for k, text in enumerate(tok.string.split("\n")):
                for match in re.finditer(r"\((\d+)\)", text):
                    found[(tok.start[0] + k, int(match.group(1)))] += 1
    return found


@pytest.mark.parametrize(("spec", "spec_file"), list(_cases()))
def test_the_map_names_every_citation_with_its_key(spec, spec_file):
    source, citations = generate_with_citations(spec, spec_file=spec_file)
    assert source == generate_source(spec, spec_file)  # byte for byte
    d = symgrad.derive(spec if isinstance(spec, symgrad.Spec) else symgrad.load_spec(spec))
    assert len(citations) >= 10 and len({k for _, k in citations}) >= 8  # not vacuous
    mapped = Counter((line, d.eq(key)) for line, key in citations)
    assert mapped == _printed_citations(source)
    lines = source.split("\n")
    for line, key in citations:
        assert f"({d.eq(key)})" in lines[line - 1], (line, key)
        assert key in d.keys  # the equation's own key, not an alias
    assert citations == sorted(citations, key=lambda c: c[0])
    assert OPEN not in source and CLOSE not in source


def test_a_citation_keeps_its_key_when_numbers_repeat_on_a_line():
    """Two cites of different equations on one line are two entries, each with its own key."""
    source, citations = generate_with_citations(ROOT / "examples" / "xor.yaml")
    d = symgrad.derive(symgrad.load_spec(ROOT / "examples" / "xor.yaml"))
    line = next(i for i, text in enumerate(source.split("\n"), 1) if "Z_1 = X*W_1.T" in text)
    assert [k for n, k in citations if n == line] == ["forward.1", "act.1.f"]
    assert f"# ({d.eq('forward.1')}), ({d.eq('act.1.f')}) Z_1 = X*W_1.T + ones_m*b_1" in source


def test_markers_are_as_long_as_the_numbers_they_stand_for():
    """So the layout (line wrapping at 100 columns) of a marked render is the plain one."""
    d = symgrad.derive(symgrad.load_spec(ROOT / "examples" / "xor.yaml"))
    plain, marked = Citations(d), Citations(d, marked=True)
    for key in ("cost", "forward.1", "delta.out"):
        assert len(marked(key)) == len(plain(key)) == len(f"({d.eq(key)})")
        assert marked(key) == f"{OPEN}{d.eq(key)}{CLOSE}"
        assert marked.maybe(key) == marked(key) + " "
    assert marked.maybe("no.such.key") == ""


def test_resolve_refuses_what_no_citation_printed():
    d = symgrad.derive(symgrad.load_spec(ROOT / "examples" / "xor.yaml"))
    cite = Citations(d, marked=True)
    n = d.eq("cost")
    text = f"a\n# {cite('cost')} the cost\n"
    assert cite.resolve(text) == (f"a\n# ({n}) the cost\n", [(2, "cost")])
    with pytest.raises(ValueError, match=r"^line 1 holds a citation \(99\) that nothing printed$"):
        cite.resolve(f"# {OPEN}99{CLOSE}")
    with pytest.raises(ValueError, match=r"^line 2 holds a broken citation marker: "):
        cite.resolve(f"x\n# {OPEN}{n})")


@pytest.mark.parametrize(
    "text",
    [
        "<svg>\n<title>W\u2081\u2083 = w\u207d\u00b9\u207e</title>\n</svg>\n",
        'a """ b """',
        'ends with a quote"',
        '""""',
        "back\\slash \\n \\u1234 \\",
        "tab\tcr\r nul\x00 astral \U0001d465 bidi \u202e",
    ],
)
def test_text_literal_is_ascii_and_reads_back(text):
    literal = _text_literal(text)
    assert literal.isascii() and literal.startswith('"""') and literal.endswith('"""')
    assert ast.literal_eval(literal) == text
    tree = ast.parse(f"X = {literal}\n")
    assert isinstance(tree.body[0].value, ast.Constant)
