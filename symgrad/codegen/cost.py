"""The code of the cost's end of the network: the loss, the output delta, the output curvature.

Each is a kernel of the Derivation (:mod:`.kernels`) printed once per place it is used: in place
for the training pass, as one expression for the readable methods (``loss``, ``_rop``, the
Hessians). Which of z_L and a_L a piece reads is decided on the kernel's free symbols.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .. import calculus as C
from ..printers.inplace import InplaceEmitter
from ..printers.numpy import NumPyPrinter
from . import kernels
from .cite import Citations
from .closed import ClosedHessian, closed_hessian


@dataclass
class Output:
    """Printed kernels of the output layer L."""

    L: int
    softmax: bool
    loss_args: list[str] = field(default_factory=list)  # the loss's array arguments (z_L, a_L)
    loss_expr: str = ""
    delta_lines: list[str] = field(default_factory=list)
    delta_scratch: int = 0
    delta_expr: str = ""
    loss_cache: str = ""  # the loss's arguments read from a pass's cache
    track_names: str = ""  # what the training loop reads after the forward pass ...
    track_cache: str = ""  # ... from the pass's cache
    closed_reads_z: bool = False
    closed_reads_a: bool = False
    rop_reads_z: bool = False
    rop_reads_a: bool = False
    kernels: tuple = ()
    #: the same kernels printed for the closed form (layer 1) and the two-layer Hessian (chunk y)
    closed: dict = field(default_factory=dict)
    #: a model without hidden layers: one unit's block of the Hessian (softmax regression: the
    #: blocks of every pair of units), printed from the matrix form of hess.closed
    closed_hessian: ClosedHessian | None = None
    eq_cost: str = ""
    eq_loss: str = ""
    eq_delta: str = ""
    eq_hess_out: str = ""
    eq_gn: str = ""


def _names(z: str, a: str, y: str) -> dict[str, str]:
    return {"z": z, "a": a, "y": y, "logsumexp": "lse"}


def output_kernels(d) -> tuple:
    """(stable loss, delta, s and Gauss-Newton S) or, for softmax, (..., diag, u, v)."""
    keys = [("cost.stable", "cost.sample"), ("delta.out",)]
    if d.output.vector:
        keys += [("hess.out.diag",), ("hess.out.u",), ("hess.out.v",)]
    else:
        keys += [("hess.out",), ("gauss_newton.s",)]
    return tuple(kernels.kernel(d, *k) for k in keys)


def output_code(d, printer: type[NumPyPrinter], cite: Citations, z_buffer: str) -> Output:
    """The output layer's printed kernels; ``z_buffer`` is where the training pass keeps z_L."""
    L = d.depth
    out = Output(L, d.output.vector)
    out.kernels = output_kernels(d)
    stable, delta, *second = out.kernels
    free = stable.free_symbols
    out.loss_args = [n for s, n in ((C.z, f"z_{L}"), (C.a, f"a_{L}")) if s in free]
    index = {f"z_{L}": "cache[-2]", f"a_{L}": "cache[-1]"}
    out.loss_cache = ", ".join(index[name] for name in out.loss_args)
    track = list(out.loss_args)
    if d.spec.is_classifier and f"a_{L}" not in track:
        track.append(f"a_{L}")
    out.track_names = ", ".join(track)
    out.track_cache = ", ".join(index[name] for name in track)
    readable = printer(_names(f"z_{L}", f"a_{L}", "Y"))
    out.loss_expr = readable.expression(stable)
    em = InplaceEmitter(
        {**_names(z_buffer, f"a_{L}", "Y"), "delta": f"delta_{L}"},
        ("z", "a", "y", "delta"),
        lambda k: f"t_{L}_{k}",
        printer=printer,
    )
    em.assign(sp.Symbol("delta", real=True), delta)
    out.delta_lines, out.delta_scratch = em.lines, em.scratch_used
    out.delta_expr = readable.expression(delta)
    # what the R-operator reads of the output (it recomputes delta_L when there are hidden
    # layers) and what the closed form of a model without hidden layers reads
    closed = set().union(*(k.free_symbols for k in second))
    rop = closed | (delta.free_symbols if L > 1 else set())
    out.rop_reads_z, out.rop_reads_a = C.z in rop, C.a in rop
    out.closed_reads_z, out.closed_reads_a = C.z in closed, C.a in closed
    # the same kernels for the closed form (a model without hidden layers, layer 1) and the
    # two-layer Hessian (a chunk of targets y)
    for key, names in (("closed", _names("z_1", "a_1", "Y")), ("chunk", _names("z_2", "a_2", "y"))):
        p = printer(names)
        out.closed[key] = {
            "delta": p.expression(delta),
            "second": [p.expression(k) for k in second],
        }
    out.closed_hessian = closed_hessian(d, printer)
    out.eq_cost = cite("cost")
    out.eq_loss = cite("cost.stable", "cost.sample", "cost")
    out.eq_delta = cite("delta.out")
    out.eq_hess_out = cite("hess.out")
    out.eq_gn = cite("gauss_newton.s", "gauss_newton")
    return out
