"""Code generation: the Derivation's kernels, printed, laid out by a backend's Jinja2 templates.

The context says *where* each printed kernel goes (:mod:`.layers` per layer, :mod:`.cost` for
the output end, :mod:`.regulariser`, :mod:`.step` for the optimiser); the templates lay out
structure only. Every formula is read through :func:`.kernels.kernel` and printed by the
backend's printer; every equation number in a comment comes from :class:`.cite.Citations`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

from .. import optimizers
from .._paths import template_root
from .._version import __version__
from ..derivation import Derivation, derive
from ..derivation import notation as nt
from ..printers.pylayout import layout
from ..printers.svg import network_svg
from ..spec import MAX_HESSIAN_PARAMS, NEWTON_EXACT_MAX, Spec, load_spec
from .backend import NUMPY, Backend
from .blocks import block_hessian
from .cite import Citations
from .cost import output_code, output_kernels
from .layers import dense_layer, init_scale
from .regulariser import regulariser_code
from .rop import rop_code
from .step import step_code

TEMPLATE = "trainer.py.jinja"


def template_dir() -> Path:
    """Where the templates are: inside the installed package, or ``templates/`` of a checkout."""
    return template_root(TEMPLATE)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - we generate Python, not HTML
    )


def _node_map(spec: Spec) -> list[str]:
    """For a node graph, which nodes each layer holds and reads (empty for a layer spec)."""
    groups = spec.node_groups
    if groups is None:
        return []
    lines = ["input: nodes " + ", ".join(map(str, groups[0]))]
    for l, (group, src) in enumerate(zip(groups[1:], spec.sources, strict=True), 1):
        read = [j for s in src for j in groups[s]]
        lines.append(
            f"layer {l} ({spec.layers[l - 1].activation}): nodes {', '.join(map(str, group))}; "
            f"reads nodes {', '.join(map(str, read))}"
        )
    return lines


def _docstring_safe(text: str) -> str:
    """Text that cannot end or escape a docstring: ASCII, with backslashes and quotes escaped."""
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _shown_path(spec_file: str) -> str:
    """The spec's path as the module names it: as given when relative, else relative to the
    current folder, else the file name alone (never an absolute path of this machine)."""
    spec_file = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in spec_file)
    if not os.path.isabs(spec_file):
        return spec_file
    try:
        rel = os.path.relpath(spec_file)
    except ValueError:  # another drive (Windows)
        rel = ".."
    return Path(rel).as_posix() if not rel.startswith("..") else Path(spec_file).name


class GeneratedCodeError(RuntimeError):
    """The generated module does not compile: a bug in symgrad, never the user's doing."""


def check_compiles(source: str, name: str) -> None:
    """Compile ``source``; a failure becomes :class:`GeneratedCodeError` (nothing is written)."""
    try:
        compile(source, f"<generated {name}>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        msg = getattr(exc, "msg", None) or str(exc)
        raise GeneratedCodeError(
            f"the module generated for {name!r} does not compile ({msg}{where}), so it was "
            "not written: a bug in symgrad"
        ) from None


def _title(spec: Spec) -> str:
    sizes = "-".join(str(s) for s in spec.sizes)
    acts = "/".join(layer.activation for layer in spec.layers)
    return f"A {sizes} network ({acts}) trained on the {spec.loss} cost."


def _gradient_names(l: int) -> tuple[str, str]:
    """The names ``gradients()`` uses: the derivation's (``dC_dW_l``, ``dC_db_l``)."""
    return nt.GW(l).name, nt.Gb(l).name


def build_context(
    d: Derivation,
    spec_file: str = "net.yaml",
    backend: Backend = NUMPY,
    optimizer: optimizers.Optimizer | None = None,
    citations: Citations | None = None,
) -> dict:
    """Everything the templates need, printed from the Derivation (``optimizer`` defaults to the
    registered one the spec names; ``citations`` to plain ``(N)`` citations)."""
    spec = d.spec
    printer = backend.printer
    cite = citations if citations is not None else Citations(d)
    opt = optimizer or optimizers.get(spec.optimizer.name)
    L = d.depth
    all_bias = all(layer.bias for layer in d.layers)
    two_layer = d.depth == 2 and not d.graph
    # which of the output's kernels read z_L decides whether the pass keeps z_L
    layers = []
    public = internal = 0
    for layer in d.layers:
        reads = output_kernels(d) if layer.index == L else ()
        ctx = dense_layer(d, layer, (public, internal), printer, cite, reads)
        ctx.init_scale = init_scale(spec.init.scheme, ctx.units, ctx.fan_in, printer())
        ctx.grad_names = _gradient_names(ctx.l)
        public, internal = ctx.b1, ctx.i1
        layers.append(ctx)
    for ctx, lines in zip(layers, (rop := rop_code(d, cite, printer)).layers, strict=True):
        ctx.rop = lines
    out = output_code(d, printer, cite, layers[-1].z)
    layers[-1].scratch = max(layers[-1].scratch, out.delta_scratch)
    reg = regulariser_code(d, printer, cite)
    step = step_code(d, opt, printer, cite)
    # the spec for the module's docstring; innermost mappings in flow style: {units: 2, ...}
    spec_yaml = yaml.safe_dump(spec.canonical(), sort_keys=False, default_flow_style=None)
    return {
        "backend": backend.templates,
        "version": __version__,
        "spec_file": _docstring_safe(_shown_path(spec_file)),
        "spec_yaml": [_docstring_safe(line) for line in spec_yaml.rstrip().splitlines()],
        "node_map": _node_map(spec),
        "digest": spec.digest(),
        "model_digest": spec.model_digest(),
        "name": spec.name,
        "class_name": spec.class_name,
        "title": _title(spec),
        "sizes": spec.sizes,
        "n_params": spec.n_params,
        "max_width": max(spec.sizes),
        "max_hessian_params": MAX_HESSIAN_PARAMS,
        "newton_exact_max": NEWTON_EXACT_MAX,
        "is_classifier": spec.is_classifier,
        "dtype": spec.dtype,
        "init_scheme": spec.init.scheme,
        "init_seed": spec.init.seed,
        "opt": spec.optimizer,
        "optimizer": opt,
        "l2": spec.regularization.l2,
        "l1": spec.regularization.l1,
        "layers": layers,
        "out": out,
        "rop": rop,
        "reg": reg,
        "step": step,
        # (units, fan_in, w0, b0), and whether the layer has a bias where one has none
        "layout": tuple(
            (c.units, c.fan_in, c.w0, c.w1) + (() if all_bias else (c.bias,)) for c in layers
        ),
        "all_bias": all_bias,
        "closed_form": not d.has_hidden,
        "two_layer": two_layer,  # skip connections: the R-operator's
        # the one-hidden-layer Hessian, printed from the matrix forms of hess.blocks.*
        # (the numpy templates lay it out)
        "block_hessian": block_hessian(d, printer)
        if two_layer and backend.templates == NUMPY.templates
        else None,
        "graph": d.graph,
        # second-order methods take the regulariser's N where they add its Hessian
        "n_arg": ", n" if reg.hess else "",
        "cite": cite,
        "network_svg": _text_literal(network_svg(spec, id_prefix=f"{spec.name}-net")),
    }


def _text_literal(text: str) -> str:
    """``text`` as a triple-quoted Python literal that ``ruff format`` leaves alone: printable
    ASCII and newlines as they are; backslashes, every third quote in a row, a closing quote and
    every other character escaped."""
    out: list[str] = []
    run = 0  # unescaped quotes just written
    for ch in text:
        if ch == '"':
            run += 1
            if run == 3:
                out.append('\\"')
                run = 0
            else:
                out.append(ch)
            continue
        run = 0
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n" or " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    if run:  # a quote right before the closing three
        out[-1] = '\\"'
    return '"""' + "".join(out) + '"""'


def spec_and_file(spec: Spec | str | os.PathLike, spec_file: str | None) -> tuple[Spec, str]:
    """The Spec and the path a module's header names: ``spec_file``, else the path given, else
    ``<name>.yaml``."""
    if not isinstance(spec, Spec):
        spec_file = spec_file or Path(spec).as_posix()
        spec = load_spec(spec)
    return spec, spec_file or f"{spec.name}.yaml"


def generate_source(spec: Spec | str | os.PathLike, spec_file: str | None = None) -> str:
    """The trainer module's source for ``spec`` (a Spec, or a path to a YAML file)."""
    spec, spec_file = spec_and_file(spec, spec_file)
    return render_source(derive(spec), spec_file)


def generate_with_citations(
    spec: Spec | str | os.PathLike, spec_file: str | None = None
) -> tuple[str, list[tuple[int, str]]]:
    """The trainer module's source (byte for byte :func:`generate_source`'s) and its citation
    map: ``(line, equation key)`` for every "(N)" the module prints, lines counted from 1.

    The map is recorded while the module is rendered (each citation is printed as a marker
    that is resolved afterwards, see :class:`.cite.Citations`), not found in its text.
    """
    spec, spec_file = spec_and_file(spec, spec_file)
    d = derive(spec)
    cite = Citations(d, marked=True)
    source, _ = render(d, spec_file, citations=cite)
    return cite.resolve(source)


def render(
    d: Derivation,
    spec_file: str,
    backend: Backend = NUMPY,
    optimizer: optimizers.Optimizer | None = None,
    citations: Citations | None = None,
) -> tuple[str, dict]:
    """The module's source and the context it was rendered from (tests read its citations)."""
    context = build_context(d, spec_file, backend, optimizer, citations)
    source = _environment().get_template(TEMPLATE).render(**context)
    check_compiles(source, d.spec.name)  # as rendered, then as laid out
    source = layout(source)
    check_compiles(source, d.spec.name)
    return source, context


def render_source(d: Derivation, spec_file: str) -> str:
    return render(d, spec_file)[0]
