"""Every example's HTML page, opened in headless Chromium as a reader would open it.

Checks per page: no console errors; one rendered MathML ``<math>`` per equation and no
``merror``; every in-page link (equation to code, code to equation, the contents) lands on an
element that exists; the network SVG is present and has a size; a screenshot is not blank.

Needs Playwright (``pip install playwright``) and a Chromium binary: Debian's ``chromium``
(``apt-get install chromium``; Playwright's own browser download is not used), or the one named
by ``SYMGRAD_CHROMIUM``. Marked ``browser``: the default suite skips it; ``.ci/run`` runs it with
``pytest -m browser tests/test_browser.py``.

``python tests/test_browser.py docs/`` writes the README's screenshots (xor, seed002).
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

pytestmark = pytest.mark.browser


def chromium_path() -> str | None:
    """The Chromium to drive: ``$SYMGRAD_CHROMIUM``, else the first on PATH."""
    env = os.environ.get("SYMGRAD_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes): width, height, channels, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    ch = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * ch
    out = bytearray()
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        kind = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
        out += line
        prev = line
    return width, height, ch, bytes(out)


def non_white_fraction(png: bytes) -> float:
    """The fraction of pixels that are not (near) white."""
    width, height, ch, pixels = png_pixels(png)
    dark = sum(
        1 for k in range(0, len(pixels), ch) if min(pixels[k], pixels[k + 1], pixels[k + 2]) < 240
    )
    return dark / (width * height)


# What the page says about itself once the browser has laid it out.
PROBE = """() => {
  const eqs = [...document.querySelectorAll('.sg-eq')];
  const maths = eqs.map(e => [...e.querySelectorAll(':scope > .sg-display math')]);
  const rendered = maths.map(ms => ms.length === 1 && ms[0] instanceof MathMLElement
      && ms[0].getAttribute('display') === 'block'
      && ms[0].getBoundingClientRect().width > 0 && ms[0].getBoundingClientRect().height > 0);
  const links = [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href'));
  const svg = document.querySelector('#network svg');
  const box = svg ? svg.getBoundingClientRect() : null;
  return {
    equations: eqs.length,
    rendered: rendered.filter(Boolean).length,
    notRendered: eqs.filter((e, i) => !rendered[i]).map(e => e.dataset.key),
    merror: document.querySelectorAll('merror').length,
    links: links.length,
    broken: links.filter(h => !document.getElementById(h.slice(1))),
    toCode: document.querySelectorAll('a.sg-to-code').length,
    toEq: document.querySelectorAll('a.sg-to-eq').length,
    svgSize: box ? [box.width, box.height] : null,
    svgShapes: svg ? svg.querySelectorAll('circle, rect, line').length : 0,
    scripts: [...document.scripts].map(s => s.type),
  };
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set SYMGRAD_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, path: Path, width: int = 1400, height: int = 1000):
    """Open ``path``; returns the page and the list its console errors go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri())
    return page, errors


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Every example's page, written once: {name: (path, number of equations)}."""
    from symgrad import derive, load_spec
    from symgrad.runtime.page import derivation_page

    folder = tmp_path_factory.mktemp("pages")
    out = {}
    for spec_path in EXAMPLES:
        d = derive(load_spec(spec_path))
        path = folder / f"{spec_path.stem}.html"
        path.write_text(derivation_page(d, spec_file=f"examples/{spec_path.name}"), "utf-8")
        out[spec_path.stem] = (path, len(d.equations))
    return out


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_page_renders(browser, pages, name):
    path, n_equations = pages[name]
    page, errors = open_page(browser, path)
    try:
        info = page.evaluate(PROBE)
        shot = page.screenshot()
    finally:
        page.close()
    assert errors == []
    assert info["equations"] == n_equations
    assert info["notRendered"] == [] and info["rendered"] == n_equations
    assert info["merror"] == 0
    assert info["broken"] == [] and info["links"] > 0
    assert info["svgSize"] is not None and min(info["svgSize"]) > 50
    assert info["svgShapes"] > 0
    assert info["scripts"] in ([], ["application/json"])
    assert non_white_fraction(shot) > 0.01


# Every equation-to-code and code-to-equation link, followed as the browser resolves it.
LINKS = """() => {
  const text = el => el ? el.textContent : null;
  // a code line's own text, without its gutter of links and its number
  const code = line => {
    const c = line.cloneNode(true);
    c.querySelectorAll('.sg-gutter, .sg-ln').forEach(e => e.remove());
    return c.textContent;
  };
  const toCode = [...document.querySelectorAll('a.sg-to-code')].map(a => {
    const eq = a.closest('.sg-eq');
    const line = document.getElementById(a.getAttribute('href').slice(1));
    return {key: eq.dataset.key, tag: text(eq.querySelector('.sg-tag')), line: a.textContent,
            code: line && line.classList.contains('sg-line') ? code(line) : null};
  });
  const toEq = [...document.querySelectorAll('a.sg-to-eq')].map(a => {
    const line = a.closest('.sg-line');
    const eq = document.getElementById(a.getAttribute('href').slice(1));
    return {key: a.title, cite: a.textContent, line: line.id, code: code(line),
            eqKey: eq && eq.classList.contains('sg-eq') ? eq.dataset.key : null,
            tag: eq ? text(eq.querySelector('.sg-tag')) : null};
  });
  return {toCode, toEq};
}"""


def test_code_links_both_ways(browser, pages):
    """Each equation links to the lines citing it, each "(N)" in the code back to equation N;
    both come from code generation's citation map (keys), and every one lands."""
    from symgrad import codegen, derive, load_spec

    path = pages["xor"][0]
    _, citations = codegen.generate_with_citations(
        ROOT / "examples" / "xor.yaml", spec_file="examples/xor.yaml"
    )
    d = derive(load_spec(ROOT / "examples" / "xor.yaml"))
    page, errors = open_page(browser, path)
    try:
        info = page.evaluate(PROBE)
        links = page.evaluate(LINKS)
        first = page.locator("a.sg-to-code").first
        target = first.get_attribute("href")
        first.click()
        landed = page.evaluate("() => location.hash")
        back = page.locator(f"{target} a.sg-to-eq").first
        back_target = back.get_attribute("href")
        back.click()
        landed_back = page.evaluate("() => location.hash")
    finally:
        page.close()
    assert errors == [] and info["broken"] == []
    assert landed == target and landed_back == back_target
    expected = sorted(set(citations))
    # code -> equation: one link per (line, key) of the map, to that key's equation
    to_eq = links["toEq"]
    assert sorted((int(x["line"][1:]), x["key"]) for x in to_eq) == expected
    for x in to_eq:
        n = d.eq(x["key"])
        assert x["eqKey"] == x["key"] and x["tag"] == f"({n})" and x["cite"] == f"({n})"
        assert f"({n})" in x["code"], x  # the line really prints that number
    # equation -> code: each equation cited links to exactly its lines
    to_code = links["toCode"]
    assert len(to_code) == len(expected) and len({x["key"] for x in to_code}) >= 8
    assert sorted((int(x["line"].split()[1]), x["key"]) for x in to_code) == expected
    for x in to_code:
        assert x["code"] is not None and x["tag"] in x["code"], x


def test_probe_sees_a_broken_page(browser, tmp_path):
    """The checks can fail: a console error, an merror, a dead link, no picture, are all seen."""
    path = tmp_path / "broken.html"
    path.write_text(
        '<!DOCTYPE html><html><body><div class="sg-eq" data-key="k"><div class="sg-display">'
        '<math display="block"><merror><mtext>bad</mtext></merror></math></div></div>'
        '<div class="sg-eq" data-key="none"><div class="sg-display"></div></div>'
        '<a href="#nowhere">x</a><script>console.error("boom")</script></body></html>',
        "utf-8",
    )
    page, errors = open_page(browser, path)
    try:
        info = page.evaluate(PROBE)
    finally:
        page.close()
    assert errors == ["boom"]
    assert info["merror"] == 1 and info["notRendered"] == ["none"]
    assert info["broken"] == ["#nowhere"] and info["svgSize"] is None


def test_png_reader_sees_ink():
    """The blank-screenshot check can fail: a white image has no ink, a drawn one has."""

    def png(rows: list[bytes], width: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body) & 0xFFFFFFFF
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
        raw = b"".join(b"\x00" + r for r in rows)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b"")
        )

    white = png([b"\xff" * 12] * 4, 4)
    assert non_white_fraction(white) == 0.0
    inked = png([b"\xff" * 12] * 3 + [b"\x00\x00\x00" * 4], 4)
    assert non_white_fraction(inked) == 0.25


def write_screenshots(folder: Path) -> list[Path]:
    """The README's screenshots of the xor and seed002 pages (1400 x 1000, top of the page)."""
    from playwright.sync_api import sync_playwright

    from symgrad.runtime.page import derivation_page

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        for name in ("xor", "seed002"):
            html = folder / f".{name}.html"
            html.write_text(derivation_page(ROOT / "examples" / f"{name}.yaml"), "utf-8")
            page, errors = open_page(b, html)
            assert errors == [], errors
            target = folder / f"html_{name}.png"
            page.screenshot(path=str(target))
            page.close()
            html.unlink()
            written.append(target)
        b.close()
    return written


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written in write_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(f"wrote {written}")
