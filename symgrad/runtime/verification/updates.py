"""Rows for the training step: the optimiser's update (:mod:`.steps`) or Newton's method
(:mod:`.newton`), chosen by the spec's optimiser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .curvature_steps import curvature_rows
from .newton import newton_opt_rows, newton_rows
from .report import Row
from .steps import is_step, optimizer_of, optimizer_rows

if TYPE_CHECKING:
    from .context import Context


def step_rows(ctx: Context, equations) -> dict[str, Row]:
    """Rows for the optimiser's step (``opt.*``, ``reg.prox``) and Newton's method."""
    steps = [eq for eq in equations if is_step(eq)]
    rows: dict[str, Row] = {}
    # L-BFGS and the trust region: every row but the definitions (see .curvature_steps)
    own = ("lbfgs", "trust")
    curvature = [e for e in equations if e.key.startswith(own) and e.key not in ctx.update_defined]
    if curvature:
        rows.update(curvature_rows(ctx, curvature))
    steps = [eq for eq in steps if not eq.key.startswith(own)]
    newton = [eq for eq in steps if eq.key.startswith("newton")]
    first = [eq for eq in steps if not eq.key.startswith("newton") and eq.key not in rows]
    if newton:
        rows.update(newton_rows(ctx, newton))
    if first:
        opt = optimizer_of(ctx)
        if ctx.spec.optimizer.name == "newton" or (opt is not None and not opt.first_order):
            rows.update(newton_opt_rows(ctx, first))
        else:
            rows.update(optimizer_rows(ctx, first, opt))
    return rows
