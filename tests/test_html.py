"""The HTML page, its MathML, the SVG pictures and the worked example (no browser needed).

The browser test (tests/test_browser.py, ``-m browser``) renders every example's page in
headless Chromium; these check what can be checked on the text: structure, links, escaping.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("latex2mathml", reason="the HTML printer needs latex2mathml")

from symgrad import derive, load_spec, load_trainer  # noqa: E402
from symgrad.cli import main  # noqa: E402
from symgrad.printers import html as H  # noqa: E402
from symgrad.printers import latex as L  # noqa: E402
from symgrad.printers.mathml import (  # noqa: E402
    UnsafeMathML,
    latex_to_mathml,
    sanitize,
)
from symgrad.printers.svg import network_svg, training_curve_svg  # noqa: E402
from symgrad.runtime.page import derivation_page, write_report  # noqa: E402
from symgrad.runtime.worked import param_labels, worked_data, worked_example  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class _Tags(HTMLParser):
    """Every start tag with its attributes, as the browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def _tags(page: str) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(page)
    return p.tags


def _assert_inert(page: str) -> None:
    """No executable script, no element or attribute an injected string could have made."""
    for tag, attrs in _tags(page):
        if tag == "script":
            assert attrs == {"type": "application/json", "id": H.DATA_ID}, attrs
        assert tag != "img", attrs
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)


# -- MathML ------------------------------------------------------------------------------------
def test_latex_to_mathml_exact():
    assert latex_to_mathml(r"\frac{a}{b}") == (
        '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"><mrow><mfrac>'
        "<mrow><mi>a</mi></mrow><mrow><mi>b</mi></mrow></mfrac></mrow></math>"
    )


def test_text_markup_comes_out_as_text():
    # latex2mathml's own string output would contain a live <script> element here
    out = latex_to_mathml(r"\text{" + HOSTILE + "}", "inline")
    assert "<script" not in out and "<img" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "merror" not in out


def test_sanitize_refuses_foreign_elements_and_attributes():
    root = ET.Element("math")
    ET.SubElement(root, "script").text = "alert(1)"
    with pytest.raises(UnsafeMathML, match=r"^element <script> is not MathML$"):
        sanitize(root)
    root = ET.Element("math")
    ET.SubElement(root, "mi", {"onclick": "alert(1)"}).text = "x"
    with pytest.raises(UnsafeMathML, match=r"^attribute 'onclick' on <mi> is not allowed$"):
        sanitize(root)


def test_aligned_chains_become_tables():
    out = latex_to_mathml(r"\begin{aligned} a &= b \\ &= c \end{aligned}")
    assert "<mtable" in out and "merror" not in out


def test_a_row_gap_is_a_plain_row_break():
    """The LaTeX printer's ``\\\\[1ex]`` before a matrix form: latex2mathml would print "[1ex]"."""
    out = latex_to_mathml(r"\begin{split}a &= b\\[1ex]" + "\n" + r"C &= d\end{split}")
    assert out == latex_to_mathml(r"\begin{split}a &= b\\" + "\n" + r"C &= d\end{split}")
    assert "1ex" not in out and out.count("<mtr>") == 2


def test_unsupported_layout_is_an_merror_not_silent():
    # latex2mathml writes a line break MathML Core does not render: refused, visibly
    out = latex_to_mathml(r"\begin{gathered} a = b \\ c \end{gathered}")
    assert out == (
        '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"><merror><mtext>'
        "unsafe MathML (attribute &#x27;linebreak&#x27; on &lt;mspace&gt; is not allowed): "
        "\\begin{gathered} a = b \\\\ c \\end{gathered}</mtext></merror></math>"
    )
    out = latex_to_mathml(r"\begin{matrix} a & b \end{matrix} \quad c & d")
    assert "a stray alignment" in out


def test_number_and_value_latex():
    assert H.number_latex(1.5e-05) == r"1.5 \times 10^{-5}"
    assert H.number_latex(-0.0921797) == "-0.09218"
    assert H.number_latex(0.0) == "0"

    class V:
        def __init__(self, label, array, shown):
            self.label, self.array, self.shown = label, np.asarray(array), np.asarray(shown)

    assert H.value_latex(V("C", 0.5, 0.5)) == "C = 0.5"
    assert H.value_latex(V("z", [1, 2], [1, 2])) == r"z = \left(1,\ 2\right)^{T}"
    assert H.value_latex(V("x", [1, 2, 3], [1, 2])) == r"x = \left(1,\ 2,\ \ldots\right)^{T}"
    assert H.value_latex(V("A", [[1, 2, 3]], [[1, 2]])) == (
        r"A = \begin{bmatrix}1 & 2 & \cdots\end{bmatrix}"
    )


# -- SVG ---------------------------------------------------------------------------------------
def _texts(svg: str, cls: str) -> list[str]:
    root = ET.fromstring(svg)
    return [
        "".join(t.itertext()).strip()
        for t in root.iter(f"{SVG}text")
        if t.get("class") == cls and t.text is not None
    ]


def test_seed002_is_drawn_with_its_node_numbers_and_weights():
    svg = network_svg(load_spec(EXAMPLES / "seed002.yaml"))
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}circle"))) == 6
    assert len(list(root.iter(f"{SVG}line"))) == 8
    nodes = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "sg-t" and t.text]
    assert [n for n in nodes if n.isdigit()] == ["1", "2", "3", "4", "5", "6"]
    weights = sorted(t.text for t in root.iter(f"{SVG}text") if t.get("class") == "sg-w")
    # seed 002's W_ij: the weight from node i to node j
    assert weights == ["W₁₂", "W₁₃", "W₂₄", "W₂₅", "W₃₄", "W₃₅", "W₄₆", "W₅₆"]
    tips = [t.text for t in root.iter(f"{SVG}title")]
    assert "W₂₅ = w⁽²⁾₂₁: node 2 to node 5" in tips


def test_large_networks_are_layer_boxes():
    spec = load_spec(EXAMPLES / "fashion_mlp.yaml")
    root = ET.fromstring(network_svg(spec))
    assert list(root.iter(f"{SVG}circle")) == []
    assert len(list(root.iter(f"{SVG}rect"))) == 4
    texts = [t.text for t in root.iter(f"{SVG}text")]
    for width in ("784", "256", "128", "10"):
        assert width in texts
    assert "W⁽¹⁾ 256×784" in texts and "235,146 parameters" in texts


def test_svg_escapes_what_it_is_given():
    spec = load_spec(EXAMPLES / "xor.yaml")
    layers = [layer.model_copy(update={"activation": HOSTILE}) for layer in spec.layers]
    bad = spec.model_copy(update={"name": HOSTILE, "layers": layers})
    for svg in (network_svg(bad), network_svg(bad, id_prefix=HOSTILE)):
        root = ET.fromstring(svg)  # well-formed: nothing broke out of its text node
        assert {e.tag for e in root.iter()} <= {
            f"{SVG}{t}" for t in ("svg", "title", "style", "line", "text", "g", "circle")
        }
        assert "<script" not in svg and "<img" not in svg


def test_training_curve():
    history = {
        "loss": [1.0, 0.5, 0.25, 0.2],
        "val_loss": [1.1, 0.6, 0.3, 0.3],
        "accuracy": [0.5, 0.6, 0.8, 0.9],
    }
    root = ET.fromstring(training_curve_svg(history))
    series = [p.get("data-series") for p in root.iter(f"{SVG}polyline")]
    assert series == ["loss", "val_loss", "accuracy"]
    first = next(root.iter(f"{SVG}polyline")).get("points").split()
    assert len(first) == 4
    # the loss falls: y (downwards on screen) grows along the line
    ys = [float(p.split(",")[1]) for p in first]
    assert ys == sorted(ys)
    log = training_curve_svg({"loss": [100.0, 1.0, 0.01]})
    assert "cost (log scale)" in log
    assert "no training history" in training_curve_svg({})


def test_a_generated_model_shows_its_network_in_jupyter():
    spec = load_spec(EXAMPLES / "seed002.yaml")
    svg = load_trainer(spec)._repr_svg_()
    assert svg == network_svg(spec, id_prefix="seed002-net")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("id") == "seed002-net"
    assert len(list(root.iter(f"{SVG}circle"))) == 6


def test_draw_command(tmp_path, capsys):
    out = tmp_path / "net.svg"
    assert main(["draw", str(EXAMPLES / "xor.yaml"), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == network_svg(load_spec(EXAMPLES / "xor.yaml"))
    assert capsys.readouterr().err == f"wrote {out}\n"


# -- the worked example --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xor_worked():
    spec = load_spec(EXAMPLES / "xor.yaml")
    return spec, worked_example(spec)


def test_worked_forward_values_are_the_network_s(xor_worked):
    spec, w = xor_worked
    model = load_trainer(spec, dtype="float64")
    p = model.params()
    x = w.X[0]
    z1 = p["W_1"] @ x + p["b_1"]
    a1 = 1 / (1 + np.exp(-z1))
    z2 = p["W_2"] @ a1 + p["b_2"]
    step1, step2 = w.step("forward, layer 1"), w.step("forward, layer 2")
    np.testing.assert_allclose(step1.values[0].array, z1, rtol=1e-12)
    np.testing.assert_allclose(step1.values[1].array, a1, rtol=1e-12)
    np.testing.assert_allclose(step2.values[0].array, z2, rtol=1e-12)
    assert step1.keys == ("forward.1", "forward")


def test_worked_step_is_minus_eta_times_the_gradient(xor_worked):
    spec, w = xor_worked
    model = load_trainer(spec, dtype="float64")
    g = model.gradient_flat(w.X, w.Y)
    table = w.step("one gd step").values[0].array
    np.testing.assert_allclose(table[:, 2], -spec.optimizer.learning_rate * g, rtol=1e-10)
    np.testing.assert_allclose(table[:, 0], model.get_flat(), rtol=0)


def test_worked_hessian_entries_are_the_hessian_s(xor_worked):
    spec, w = xor_worked
    H_ = load_trainer(spec, dtype="float64").hessian(w.X, w.Y)
    values = w.step("a Hessian entry").values
    np.testing.assert_allclose(values[0].array, H_[0, 0], rtol=1e-10)
    np.testing.assert_allclose(values[1].array, H_[6, 0], rtol=1e-10)
    assert param_labels(spec)[6] == "w^{(2)}_{1,1}"


def test_worked_data_is_fixed_and_valid():
    spec = load_spec(EXAMPLES / "softmax_iris.yaml")
    X, Y = worked_data(spec)
    X2, Y2 = worked_data(spec)
    assert np.array_equal(X, X2) and np.array_equal(Y, Y2)
    assert X.shape == (3, 4) and (np.abs(X) <= 1).all()
    assert np.array_equal(Y, np.eye(3))
    _, Y = worked_data(load_spec(EXAMPLES / "xor.yaml"))
    assert Y.tolist() == [[0.0], [1.0], [0.0]]


def test_large_networks_show_a_labelled_excerpt():
    w = worked_example(load_spec(EXAMPLES / "mnist_textbook.yaml"))
    x = w.step("the worked batch").values[0]
    assert x.array.shape == (784,) and x.shown.shape == (6,)
    assert x.excerpt == "entries 1-6 of 784"
    X = w.step("the worked batch").values[2]
    assert X.excerpt == "rows 1-3, columns 1-6 of 3 x 784"


# -- the page ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xor_page():
    d = derive(load_spec(EXAMPLES / "xor.yaml"))
    return d, derivation_page(d)


def test_one_display_math_per_equation(xor_page):
    d, page = xor_page
    ids = re.findall(r'<div class="sg-eq" id="eq-(\d+)" data-key="([^"]+)">', page)
    assert [(int(n), k) for n, k in ids] == [(d.eq(e.key), e.key) for e in d.equations]
    assert page.count('display="block"') == len(d.equations)
    assert "merror" not in page
    headings = re.findall(r'<section id="sec-\d+">\n<h2>([^<]+)</h2>', page)
    assert [unescape(h) for h in headings] == list(dict.fromkeys(e.section for e in d.equations))


def test_page_is_self_contained(xor_page):
    _, page = xor_page
    assert page.startswith("<!DOCTYPE html>\n")
    assert "default-src 'none'" in page
    for tag, attrs in _tags(page):
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, attrs)
    _assert_inert(page)


def test_worked_values_sit_under_their_equations(xor_page):
    d, page = xor_page
    n = d.eq("delta.out")
    block = page[page.index(f'id="eq-{n}"') : page.index(f'id="eq-{n + 1}"')]
    assert "Worked example: output delta" in block


def test_equations_are_the_latex_printer_s(xor_page):
    """The page shows what the LaTeX document shows: the same split block, less its tag."""
    d, page = xor_page
    document = L.render_latex(d)
    for eq in d.equations:
        body = L.equation_latex(d, eq)
        tagged = "\\begin{equation}\n%s\n\\tag{%d}\n\\end{equation}" % (body, d.eq(eq.key))
        assert tagged in document
        assert H.equation_latex(d, eq) == body
        assert latex_to_mathml(body) in page
    parts = [p for eq in d.equations for p in eq.prose if not isinstance(p, str)]
    assert len(parts) > 5
    for part in parts:
        assert H.inline_latex(part) == L.inline_latex(part) == L.latex(part)
    assert not hasattr(H, "_InterimLatex")


def test_a_bare_matrix_right_side_gets_a_row_of_its_own():
    """A matrix form given as its right side alone (not a pair) is still shown, after a gap."""
    d = derive(load_spec(EXAMPLES / "xor.yaml"))
    eq = d.equation("forward.2")
    lhs, rhs = eq.matrix
    tex = H.equation_latex(d, replace(eq, matrix=rhs))
    assert tex == H.equation_latex(d, eq).replace(L.latex(lhs) + " &= ", r"&\quad ")
    assert tex.endswith(
        "\\\\[1ex]\n" + r"&\quad A^{(1)} W^{(2)\top} + \mathbf{1} b^{(2)}" + "\n" + r"\end{split}"
    )
    assert "merror" not in latex_to_mathml(tex)


def test_links_come_from_the_citation_map():
    d = derive(load_spec(EXAMPLES / "xor.yaml"))
    source = "\n".join(f"line_{i} = {i}" for i in range(1, 11)) + "\n"
    code = H.CodeView(source, ((3, "delta.out"), (3, "grad.W.2"), (7, "forward.1")), "x.py")
    page = H.render_html(d, code=code)
    ids = set(re.findall(r'id="([^"]+)"', page))
    hrefs = re.findall(r'href="#([^"]+)"', page)
    assert hrefs and all(h in ids for h in hrefs)
    to_eq = re.findall(r'<a class="sg-to-eq" href="#eq-(\d+)" title="([^"]+)">', page)
    line_3 = sorted([(d.eq("delta.out"), "delta.out"), (d.eq("grad.W.2"), "grad.W.2")])
    expected = [*line_3, (d.eq("forward.1"), "forward.1")]
    assert [(int(n), k) for n, k in to_eq] == expected
    n = d.eq("delta.out")
    block = page[page.index(f'id="eq-{n}"') : page.index(f'id="eq-{n + 1}"')]
    assert '<a class="sg-to-code" href="#L3">line 3</a>' in block
    assert page.count('class="sg-line"') == 10


def test_a_citation_of_a_missing_equation_is_refused():
    d = derive(load_spec(EXAMPLES / "xor.yaml"))
    code = H.CodeView("x = 1\n", ((1, "no.such.key"),))
    with pytest.raises(ValueError, match=r"^the code cites equation 'no.such.key' at line 1, "):
        H.render_html(d, code=code)


def test_hostile_user_strings_are_escaped():
    text = (EXAMPLES / "xor.yaml").read_text(encoding="utf-8")
    spec = load_spec(text + f"description: {json.dumps(HOSTILE)}\n")
    # names are validated identifiers; the printer escapes them all the same
    spec = spec.model_copy(update={"name": "xor"})
    page = derivation_page(spec, worked=False)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in (
        page
    )
    _assert_inert(page)
    d = derive(spec)
    object.__setattr__(d, "spec", spec.model_copy(update={"name": HOSTILE}))
    page = H.render_html(d, network_svg=network_svg(d.spec))
    assert "<title>symgrad: &lt;script&gt;" in page
    _assert_inert(page)


def test_code_panel_without_pygments(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygments", None)
    assert H._highlight_lines("x = '<b>'\n\ny = 1\n") == ["x = &#x27;&lt;b&gt;&#x27;", "", "y = 1"]


def test_code_panel_with_pygments_keeps_lines():
    pytest.importorskip("pygments")
    source = 'def f():\n    """Doc\n    string."""\n    return 1\n'
    lines = H._highlight_lines(source)
    assert len(lines) == 4
    assert all(x.count("<span") == x.count("</span>") for x in lines)
    # Pygments versions differ in whether they escape quotes in text (both are safe HTML)
    text = re.sub(r"<[^>]+>", "", lines[1])
    assert "<" not in text and unescape(text) == '    """Doc'


# -- reports -------------------------------------------------------------------------------------
def test_report_keeps_the_curve_and_adds_the_confusion_matrix(tmp_path):
    spec = load_spec(EXAMPLES / "xor.yaml")
    path = tmp_path / "report.html"
    write_report(path, spec, H.Results(history={"loss": [0.3, 0.2]}, data="train.csv"))
    first = path.read_text(encoding="utf-8")
    assert 'id="training-curve"' in first and 'id="confusion"' not in first
    labels = ("zero", HOSTILE)
    write_report(
        path,
        spec,
        H.Results(confusion=[[3, 1], [0, 4]], labels=labels, metrics={"accuracy": 0.875}),
    )
    page = path.read_text(encoding="utf-8")
    assert 'id="training-curve"' in page and 'id="confusion"' in page
    assert "<tr><th>accuracy</th><td>0.875</td></tr>" in page
    _assert_inert(page)
    kept = H.read_report(page, spec.digest())
    assert kept.history == {"loss": [0.3, 0.2]} and kept.labels == labels
    assert kept.data == "train.csv" and kept.confusion == [[3, 1], [0, 4]]
    # a page of another spec keeps nothing
    other = load_spec(EXAMPLES / "seed002.yaml")
    write_report(path, other, H.Results(metrics={"loss": 0.5}))
    assert 'id="training-curve"' not in path.read_text(encoding="utf-8")


def test_report_json_cannot_close_its_script():
    out = H.report_json(H.Results(labels=("</script><script>alert(1)</script>",)), "x")
    assert "</" not in out and "\\u003c/script\\u003e" in out


def test_derive_html_command(tmp_path, capsys):
    out = tmp_path / "xor.html"
    code = main(["derive", str(EXAMPLES / "xor.yaml"), "--format", "html", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'class="sg-network"' in page
    assert 'class="sg-code-panel"' in page and "Worked example: output delta" in page


def test_evaluate_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = EXAMPLES / "xor.yaml"
    rows = ["x1,x2,y", "0,0,0", "0,1,1", "1,0,1", "1,1,0"]
    Path("xor.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["train", str(spec), "--data", "xor.csv", "--epochs", "3", "--quiet"]
    assert main([*args, "--out", "m.npz", "--report", "r.html"]) == 0, capsys.readouterr()
    assert (
        main(["evaluate", str(spec), "--model", "m.npz", "--data", "xor.csv", "--report", "r.html"])
        == 0
    )
    page = Path("r.html").read_text(encoding="utf-8")
    assert 'id="training-curve"' in page and 'id="confusion"' in page
    assert "<p>Data: <code>xor.csv</code></p>" in page


def test_bad_spec_is_still_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ninputs: 2\nlayers: []\nloss: mse\n", encoding="utf-8")
    assert main(["derive", str(bad), "--format", "html"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and err.count("\n") == 1
    assert main(["draw", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and err.count("\n") == 1


def test_jupyter_shows_the_page_as_a_fragment(xor_page):
    d, _ = xor_page
    fragment = d._repr_html_()
    assert fragment.startswith("<style>") and "<html" not in fragment
    assert fragment.count('display="block"') == len(d.equations)
    assert 'class="sg-network"' in fragment
    assert callable(d._repr_latex_)
