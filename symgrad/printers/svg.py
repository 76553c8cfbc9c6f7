"""Pictures as SVG text, from plain data: the network of a spec, a training curve.

No plotting library: every element is written here, every piece of text escaped. The output is
byte-stable (no timestamps, no random ids) so a page that embeds it is too.

- :func:`network_svg`: small networks as nodes (a node graph's own numbers; a layer spec's
  numbered like seed 002: input node 1, hidden nodes 2, 3, ..., the output last) with an edge
  per weight labelled ``W_ij`` (from node i to node j; the tooltip names it in the derivation's
  notation ``w^(l)_ji``), a skip edge curved over the columns it passes; large ones, and those
  whose layers add their sources (``merge: add``), as one box per layer with its width and
  activation, each skip an arc under the boxes.
- :func:`training_curve_svg`: loss (and validation loss) per epoch, accuracy on a second axis.
"""

from __future__ import annotations

import math
from html import escape

from ..spec import Spec

#: Drawn node by node when no layer is wider than this and the edges are few enough.
MAX_NODES_PER_LAYER = 8
MAX_EDGES = 64
#: Edge labels are written when there are at most this many edges (else tooltips only).
MAX_LABELLED_EDGES = 24

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUP = str.maketrans("0123456789()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁽⁾")

_STYLE = (
    "<style>"
    ".sg-node{fill:#fff;stroke:#334;stroke-width:1.5}"
    ".sg-in{fill:#eef4ff}.sg-out{fill:#fff4e8}"
    ".sg-edge{stroke:#8892a6;stroke-width:1}"
    ".sg-box{fill:#f6f7fb;stroke:#334;stroke-width:1.5}"
    ".sg-t{font:13px sans-serif;fill:#223;text-anchor:middle}"
    ".sg-s{font:11px sans-serif;fill:#445;text-anchor:middle}"
    ".sg-w{font:11px sans-serif;fill:#1f4e9c;text-anchor:middle;paint-order:stroke;"
    "stroke:#fff;stroke-width:3px}"
    "</style>"
)


def _e(text: object) -> str:
    """Escape text for SVG/XML content and attribute values."""
    return escape(str(text), quote=True)


def _num(v: float) -> str:
    """A coordinate with at most one decimal (stable text)."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _sub(n: int) -> str:
    return str(n).translate(_SUB)


def is_small(spec: Spec) -> bool:
    """Whether :func:`network_svg` draws ``spec`` node by node."""
    sizes = spec.sizes
    edges = sum(n * f for n, f in zip(sizes[1:], spec.fan_ins, strict=True))
    return max(sizes) <= MAX_NODES_PER_LAYER and edges <= MAX_EDGES


def _by_edges(spec: Spec) -> bool:
    """Whether every layer reads its sources edge by edge (``add`` sums them: no edges)."""
    return not any(layer.merge == "add" and layer.sources for layer in spec.layers)


def network_svg(spec: Spec, id_prefix: str = "net") -> str:
    """The network of ``spec`` as an SVG document (a string); see the module docstring. A
    network with skip connections is drawn as layer boxes, each skip an arc under them."""
    if is_small(spec) and _by_edges(spec):
        return _nodes_svg(spec, id_prefix)
    return _boxes_svg(spec, id_prefix)


def _layer_caption(spec: Spec, l: int) -> tuple[str, str]:
    if l == 0:
        return "input", "x"
    layer = spec.layers[l - 1]
    role = "output" if l == len(spec.layers) else f"layer {l}"
    return role, layer.activation


def _svg_open(width: float, height: float, id_prefix: str, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{_e(id_prefix)}" class="sg-network" '
        f'width="{_num(width)}" height="{_num(height)}" viewBox="0 0 {_num(width)} '
        f'{_num(height)}" role="img" aria-labelledby="{_e(id_prefix)}-title">',
        f'<title id="{_e(id_prefix)}-title">{_e(title)}</title>',
        _STYLE,
    ]


def _title(spec: Spec) -> str:
    acts = ", ".join(layer.activation for layer in spec.layers)
    sizes = "-".join(str(s) for s in spec.sizes)
    return f"The {spec.name} network: {sizes} ({acts})"


def _nodes_svg(spec: Spec, id_prefix: str) -> str:
    """Nodes and edges: a node graph with its own node numbers, a layer spec numbered like seed
    002; an edge that skips layers is drawn as a curve above the columns it passes."""
    sizes = spec.sizes
    numbers = spec.node_numbers
    r, col, row, top, left = 17.0, 170.0, 70.0, 46.0, 60.0
    if spec.is_graph:
        top += 22.0  # room for the skip curves under the captions
    tall = max(sizes)
    width = left * 2 + col * (len(sizes) - 1)
    height = top + row * tall + 40.0

    def pos(l: int, j: int) -> tuple[float, float]:
        y0 = top + (tall - sizes[l]) * row / 2
        return left + col * l, y0 + row * j + row / 2

    edges = sum(n * f for n, f in zip(sizes[1:], spec.fan_ins, strict=True))
    labelled = edges <= MAX_LABELLED_EDGES
    out = _svg_open(width, height, id_prefix, _title(spec))
    # edges first (under the nodes), labels after them (over the edges)
    lines, labels = [], []
    for l in range(1, len(sizes)):
        reads = [(s, i) for s in spec.sources[l - 1] for i in range(sizes[s])]
        for j in range(sizes[l]):
            for c, (s, i) in enumerate(reads):
                (x1, y1), (x2, y2) = pos(s, i), pos(l, j)
                src, dst = numbers[s][i], numbers[l][j]
                tip = (
                    f"W{_sub(src)}{_sub(dst)} = w{f'({l})'.translate(_SUP)}{_sub(j + 1)}"
                    f"{_sub(c + 1)}: node {src} to node {dst}"
                )
                if s < l - 1:  # a skip: a curve over the columns between
                    lift = top - 10 - (l - s - 1) * 4
                    lines.append(
                        f'<path class="sg-edge" fill="none" d="M {_num(x1 + r)} {_num(y1)} Q '
                        f"{_num((x1 + x2) / 2)} {_num(2 * lift - (y1 + y2) / 2)} "
                        f'{_num(x2 - r)} {_num(y2)}"><title>{_e(tip)}</title></path>'
                    )
                    continue
                lines.append(
                    f'<line class="sg-edge" x1="{_num(x1 + r)}" y1="{_num(y1)}" '
                    f'x2="{_num(x2 - r)}" y2="{_num(y2)}"><title>{_e(tip)}</title></line>'
                )
                if labelled:
                    # near the source, where its edges fan out (they cross further on)
                    t = 0.26
                    lx, ly = x1 + r + (x2 - x1 - 2 * r) * t, y1 + (y2 - y1) * t
                    labels.append(
                        f'<text class="sg-w" x="{_num(lx)}" y="{_num(ly - 3)}">'
                        f"W{_sub(src)}{_sub(dst)}<title>{_e(tip)}</title></text>"
                    )
    out += lines + labels
    for l, n in enumerate(sizes):
        role, act = _layer_caption(spec, l)
        kind = " sg-in" if l == 0 else (" sg-out" if l == len(sizes) - 1 else "")
        for j in range(n):
            x, y = pos(l, j)
            sym = f"x{_sub(j + 1)}" if l == 0 else f"a{f'({l})'.translate(_SUP)}{_sub(j + 1)}"
            out.append(
                f'<g class="sg-unit"><title>{_e(f"node {numbers[l][j]}: {sym}")}</title>'
                f'<circle class="sg-node{kind}" cx="{_num(x)}" cy="{_num(y)}" r="{_num(r)}"/>'
                f'<text class="sg-t" x="{_num(x)}" y="{_num(y + 4.5)}">{numbers[l][j]}</text></g>'
            )
        x = left + col * l
        out.append(f'<text class="sg-t" x="{_num(x)}" y="20">{_e(role)}</text>')
        out.append(f'<text class="sg-s" x="{_num(x)}" y="35">{_e(act)}</text>')
    out.append(
        f'<text class="sg-s" x="{_num(width / 2)}" y="{_num(height - 10)}">'
        f"{_e('Wᵢⱼ: the weight from node i to node j (seed 002); biases not drawn')}</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _boxes_svg(spec: Spec, id_prefix: str) -> str:
    sizes = spec.sizes
    box_w, gap, top, left = 110.0, 104.0, 40.0, 20.0
    biggest = max(sizes)
    max_h, min_h = 200.0, 36.0

    def box_h(n: int) -> float:
        # height grows with log(width), so 784 and 10 are both readable
        frac = math.log1p(n) / math.log1p(biggest) if biggest > 1 else 1.0
        return min_h + (max_h - min_h) * frac

    # skip connections: (source, layer) pairs other than the layer below, one arc each
    skips = [
        (src, l)
        for l, sources in enumerate(spec.sources, start=1)
        for src in sources
        if src != l - 1
    ]
    width = left * 2 + box_w * len(sizes) + gap * (len(sizes) - 1)
    height = top + max_h + 50.0 + (28.0 + 22.0 * len(skips) if skips else 0.0)
    mid = top + max_h / 2
    out = _svg_open(width, height, id_prefix, _title(spec))
    out.append(
        '<defs><marker id="%s-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#556"/></marker></defs>'
        % _e(id_prefix)
    )
    for l, n in enumerate(sizes):
        x = left + l * (box_w + gap)
        h = box_h(n)
        role, act = _layer_caption(spec, l)
        kind = " sg-in" if l == 0 else (" sg-out" if l == len(sizes) - 1 else "")
        out.append(
            f'<rect class="sg-box{kind}" x="{_num(x)}" y="{_num(mid - h / 2)}" '
            f'width="{_num(box_w)}" height="{_num(h)}" rx="6"/>'
        )
        out.append(f'<text class="sg-t" x="{_num(x + box_w / 2)}" y="{_num(mid - 2)}">{n}</text>')
        out.append(
            f'<text class="sg-s" x="{_num(x + box_w / 2)}" y="{_num(mid + 14)}">{_e(act)}</text>'
        )
        out.append(
            f'<text class="sg-t" x="{_num(x + box_w / 2)}" y="{_num(top - 14)}">{_e(role)}</text>'
        )
        if l and l - 1 in spec.sources[l - 1]:
            x0 = x - gap
            out.append(
                f'<line class="sg-edge" x1="{_num(x0 + 4)}" y1="{_num(mid)}" x2="{_num(x - 4)}" '
                f'y2="{_num(mid)}" marker-end="url(#{_e(id_prefix)}-arrow)"/>'
            )
        if l:
            x0 = x - gap
            label = f"W{f'({l})'.translate(_SUP)} {sizes[l]}×{spec.fan_ins[l - 1]}"
            out.append(
                f'<text class="sg-w" x="{_num(x0 + gap / 2)}" y="{_num(mid - 8)}">'
                f"{_e(label)}</text>"
            )
    for k, (src, l) in enumerate(skips):  # under the boxes, deeper for each further arc
        merge = spec.layers[l - 1].merge
        x1 = left + src * (box_w + gap) + box_w / 2
        x2 = left + l * (box_w + gap) + box_w / 2
        y1, y2 = mid + box_h(sizes[src]) / 2, mid + box_h(sizes[l]) / 2
        low = top + max_h + 24.0 + 22.0 * k
        name = "input" if src == 0 else f"layer {src}"
        tip = f"skip connection: layer {l} reads {name} (merge: {merge})"
        out.append(
            f'<path class="sg-edge sg-skip" d="M{_num(x1)},{_num(y1 + 4)} '
            f'C{_num(x1)},{_num(low)} {_num(x2)},{_num(low)} {_num(x2)},{_num(y2 + 4)}" '
            f'fill="none" marker-end="url(#{_e(id_prefix)}-arrow)"><title>{_e(tip)}</title></path>'
        )
        out.append(
            f'<text class="sg-w" x="{_num((x1 + x2) / 2)}" y="{_num(low - 4)}">{_e(merge)}</text>'
        )
    out.append(
        f'<text class="sg-s" x="{_num(width / 2)}" y="{_num(height - 12)}">'
        f"{_e(f'{spec.n_params:,} parameters')}</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Training curve


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    t = start
    while t <= hi + 1e-9 * step:
        out.append(round(t, 12))
        t += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def training_curve_svg(history: dict, id_prefix: str = "curve") -> str:
    """Loss per epoch (``loss``, ``val_loss``) and accuracy (``accuracy``, ``val_accuracy``).

    Args:
        history: lists of floats per epoch, as returned by a trainer's ``fit``.
    Returns:
        an SVG document; the loss axis is logarithmic when the loss spans more than 100x.
    """
    losses = {k: [float(v) for v in history.get(k, [])] for k in ("loss", "val_loss")}
    accs = {k: [float(v) for v in history.get(k, [])] for k in ("accuracy", "val_accuracy")}
    losses = {k: v for k, v in losses.items() if v}
    accs = {k: v for k, v in accs.items() if v}
    width, height = 640.0, 320.0
    pl, pr, pt, pb = 64.0, 64.0 if accs else 20.0, 24.0, 44.0
    out = _svg_open(width, height, id_prefix, "Training curve")
    epochs = max((len(v) for v in (*losses.values(), *accs.values())), default=0)
    finite = [v for vals in losses.values() for v in vals if math.isfinite(v)]
    if epochs == 0 or not finite:
        out.append(f'<text class="sg-t" x="{_num(width / 2)}" y="{_num(height / 2)}">')
        out.append("no training history</text></svg>")
        return "\n".join(out) + "\n"
    lo, hi = min(finite), max(finite)
    log = lo > 0 and hi / lo > 100
    f = math.log10 if log else (lambda v: v)
    flo, fhi = f(lo), f(hi)
    if fhi - flo < 1e-12:
        flo, fhi = flo - 0.5, fhi + 0.5
    x0, x1, y0, y1 = pl, width - pr, height - pb, pt

    def X(i: int) -> float:
        return x0 + (x1 - x0) * (i / max(epochs - 1, 1))

    def YL(v: float) -> float:
        return y0 + (y1 - y0) * (f(v) - flo) / (fhi - flo)

    def YA(v: float) -> float:
        return y0 + (y1 - y0) * v

    out.append(
        f'<rect x="{_num(x0)}" y="{_num(y1)}" width="{_num(x1 - x0)}" height="{_num(y0 - y1)}" '
        'fill="#fff" stroke="#99a"/>'
    )
    ticks = [10**t for t in _ticks(math.floor(flo), math.ceil(fhi))] if log else _ticks(lo, hi)
    for t in ticks:
        if not (lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)) and not log:
            continue
        if log and not (flo - 1e-9 <= math.log10(t) <= fhi + 1e-9):
            continue
        y = YL(t)
        out.append(
            f'<line x1="{_num(x0 - 4)}" y1="{_num(y)}" x2="{_num(x1)}" y2="{_num(y)}" '
            'stroke="#e3e5ee"/>'
        )
        out.append(
            f'<text class="sg-s" x="{_num(x0 - 8)}" y="{_num(y + 4)}" '
            f'style="text-anchor:end">{_e(_fmt(t))}</text>'
        )
    for t in _ticks(1, epochs):
        if t != int(t):
            continue
        x = X(int(t) - 1)
        out.append(
            f'<text class="sg-s" x="{_num(x)}" y="{_num(y0 + 16)}">{_e(_fmt(int(t)))}</text>'
        )
    out.append(f'<text class="sg-s" x="{_num((x0 + x1) / 2)}" y="{_num(height - 8)}">epoch</text>')
    out.append(
        f'<text class="sg-s" x="14" y="{_num((y0 + y1) / 2)}" '
        f'transform="rotate(-90 14 {_num((y0 + y1) / 2)})">'
        f"{'cost (log scale)' if log else 'cost'}</text>"
    )
    colours = {
        "loss": "#1f4e9c",
        "val_loss": "#c2410c",
        "accuracy": "#15803d",
        "val_accuracy": "#9333ea",
    }
    if accs:
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            out.append(
                f'<text class="sg-s" x="{_num(x1 + 8)}" y="{_num(YA(t) + 4)}" '
                f'style="text-anchor:start">{_fmt(t)}</text>'
            )
        xr = width - 12
        out.append(
            f'<text class="sg-s" x="{_num(xr)}" y="{_num((y0 + y1) / 2)}" '
            f'transform="rotate(90 {_num(xr)} {_num((y0 + y1) / 2)})">accuracy</text>'
        )
    series = [(k, v, YL) for k, v in losses.items()] + [(k, v, YA) for k, v in accs.items()]
    legend_x = x0 + 10
    for name, vals, ymap in series:
        step = max(1, len(vals) // 1000)  # at most ~1000 points per line
        pts = [
            f"{_num(X(i))},{_num(ymap(v))}"
            for i, v in enumerate(vals)
            if (i % step == 0 or i == len(vals) - 1) and math.isfinite(v) and (v > 0 or not log)
        ]
        dash = ' stroke-dasharray="5 3"' if name.endswith("accuracy") else ""
        out.append(
            f'<polyline class="sg-series" data-series="{name}" fill="none" '
            f'stroke="{colours[name]}" stroke-width="1.8"{dash} points="{" ".join(pts)}"/>'
        )
        out.append(
            f'<line x1="{_num(legend_x)}" y1="{_num(y1 + 12)}" x2="{_num(legend_x + 18)}" '
            f'y2="{_num(y1 + 12)}" stroke="{colours[name]}" stroke-width="2"{dash}/>'
            f'<text class="sg-s" x="{_num(legend_x + 22)}" y="{_num(y1 + 16)}" '
            f'style="text-anchor:start">{name}</text>'
        )
        legend_x += 34 + 7 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"
