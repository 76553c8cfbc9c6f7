"""Assemble the HTML page of a spec: derivation, generated code, worked example, picture, results.

The printers (:mod:`symgrad.printers.html`, :mod:`symgrad.printers.svg`) print; this module
fetches what they print: the derivation, the trainer's source with the citation map that code
generation records, the worked example (:mod:`.worked`, which runs the trainer), and, for
``train``/``evaluate --report``, the results, merged with those already in the page.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..derivation import Derivation, derive
from ..derivation.nodes import apply_notation
from ..printers.html import CodeView, Results, read_report, render_html
from ..printers.svg import network_svg, training_curve_svg
from ..spec import Spec, load_spec


def code_view(d: Derivation, spec_file: str | None = None) -> CodeView:
    """The generated trainer of ``d.spec`` and its citation map (line, equation key), recorded
    by code generation while it prints each "(N)" (never found by searching the code)."""
    from ..codegen import generate_with_citations

    spec = d.spec
    source, citations = generate_with_citations(spec, spec_file=spec_file or f"{spec.name}.yaml")
    return CodeView(source, tuple(citations), f"{spec.name}.py")


def derivation_page(
    spec: Spec | Derivation | str | os.PathLike,
    *,
    code: bool = True,
    worked: bool = True,
    results: Results | None = None,
    fragment: bool = False,
    spec_file: str | None = None,
) -> str:
    """The HTML page for ``spec`` (a Spec, a Derivation or a YAML path).

    Args:
        code: show the generated trainer beside the maths, linked both ways.
        worked: run the trainer on a small batch and show the numbers under the equations.
        results: training/evaluation results (curve, confusion matrix, metrics).
        fragment: a ``<div>`` for Jupyter instead of a document.
    """
    if isinstance(spec, Derivation):
        d = spec
    else:
        if not isinstance(spec, Spec):
            spec_file = spec_file or Path(spec).as_posix()
            spec = load_spec(spec)
        d = apply_notation(derive(spec), "auto")  # a node graph: traced node by node first
    example = None
    if worked:
        from .worked import worked_example

        example = worked_example(d.spec)
    curve = None
    if results is not None and results.history:
        curve = training_curve_svg(results.history)
    return render_html(
        d,
        code=code_view(d, spec_file) if code else None,
        worked=example,
        network_svg=network_svg(d.spec),
        results=results,
        curve_svg=curve,
        fragment=fragment,
    )


def merge_results(old: Results | None, new: Results) -> Results:
    """``new``, plus what ``old`` has and ``new`` lacks (train's curve, evaluate's matrix)."""
    if old is None:
        return new
    return Results(
        history=new.history if new.history else old.history,
        confusion=new.confusion if new.confusion is not None else old.confusion,
        labels=tuple(new.labels) if new.confusion is not None else tuple(old.labels),
        metrics={**old.metrics, **new.metrics},
        data=new.data or old.data,
    )


def write_report(
    path: str | os.PathLike, spec: Spec, results: Results, spec_file: str | None = None
) -> Path:
    """Write (atomically) the page of ``spec`` with ``results`` added to the page at ``path``.

    A page already at ``path`` for the same spec keeps its results where ``results`` has none
    (``train --report`` then ``evaluate --report`` gives one page with both); a page for
    another spec, or any other file, is replaced.
    """
    from .atomic import atomic_write_text

    path = Path(path)
    old = None
    if path.is_file():
        try:
            old = read_report(path.read_text(encoding="utf-8"), spec.digest())
        except (OSError, UnicodeDecodeError):
            old = None
    merged = merge_results(old, results)
    atomic_write_text(path, derivation_page(spec, results=merged, spec_file=spec_file))
    return path


def bounded_page(spec, spec_file: str | None = None, *, budget: float | None = None) -> str:
    """:func:`derivation_page` within the total time budget and the size cap, from any thread
    (see :mod:`symgrad.runtime.bounded`)."""
    from .bounded import derivation_text

    return derivation_text(
        spec, "html", spec_file=spec_file, budget=budget, producer=f"{__name__}:derivation_page"
    )
