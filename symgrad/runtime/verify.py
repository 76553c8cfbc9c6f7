"""Every displayed equation of the derivation, checked by numbers (``symgrad verify``).

:func:`verify` draws random parameters (the trainer's initialisation with ``seed``; biases the
scheme leaves at zero are drawn from N(0, 0.5^2)), a random batch of ``batch`` samples (which is
also the training set: ``N = m``; at least P + 1 samples for Newton's method by the exact solve)
and a random direction ``v``, binds every name of the IR to numbers and evaluates each side of
each equation -- the left side, every step of a chain, the right side and the kernel the code
prints, in index form and in matrix form -- and compares them with

- the generated trainer: ``_forward`` (z, a), ``loss``, ``gradient_flat``, ``hessian`` (entries,
  or ``hvp`` columns for a large model), ``gauss_newton`` (or G v by its R-operator), ``hvp``,
  and the parameters and optimiser state after one epoch of ``fit`` from a copy (mini-batches
  of the spec's size, at most half the set, so that m < N);
- central finite differences (order 8, see :mod:`.reference`) of the definitions: every side
  holding a first derivative is also evaluated by differences at a few points, ``delta_l[j]``
  against differences of the per-sample cost by ``z_l[j]``, ``dC/dW`` against differences of C;
- the reference network of :mod:`.reference` (forward pass and chain rule from the calculus
  registry), which gives the values the names are bound to (``delta_l``, ``s_L``, ``R{z_l}``...).

The matrix forms of the gradients and Hessian-vector products (those of the batch cost C_B) are
also evaluated on half of the samples, m < N (rows of form ``batch``). Newton's step is checked by
the backward error of ``(H + mu I) p = g`` up to NEWTON_EXACT_MAX parameters, and matrix-free
above, by the printed conjugate gradients on Hessian-vector products (see
:mod:`.verification.newton`).

Error measure (one number per row): ``max |value - reference| / max(max |reference|, FLOOR)``
over every compared value, i.e. relative to the largest reference value of the row, and absolute
(scaled by ``FLOOR``) when all reference values are below ``FLOOR``. A row passes when that is at
most the tolerance: 1e-10 in float64 (1e-4 for a float32 trainer).

Rows: one per equation key and form (``index``, ``matrix``, ``batch``, ``update``). Equations of
the Notation section, and those that only define a name used elsewhere (``hd[k]``, ``p_v``,
``alpha``), are ``definition`` rows. An equation the verifier cannot evaluate is a failing row
whose note starts with ``not evaluable:`` -- never skipped. The parts live in
:mod:`symgrad.runtime.verification`.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..derivation import derive
from ..spec import NEWTON_EXACT_MAX, Spec, load_spec
from .verification.common import FLOOR, HESSIAN_COLUMNS, HESSIAN_MAX, TOLERANCE, random_batch
from .verification.context import Context
from .verification.report import Report, Row
from .verification.rows import rows_of
from .verification.updates import step_rows

__all__ = [
    "FLOOR",
    "HESSIAN_COLUMNS",
    "HESSIAN_MAX",
    "TOLERANCE",
    "Report",
    "Row",
    "random_batch",
    "verify",
]


def _one_blas_thread():
    """Single-threaded BLAS while verifying, where threadpoolctl is installed: the verifier
    multiplies thousands of small matrices, for which threads only add contention (on a busy
    machine a 5 x 784 by 784 x 256 product took 45 ms with threads, 0.3 ms without)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the same numbers, only slower
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def verify(
    spec_or_derivation,
    seed: int = 0,
    batch: int = 5,
    dtype="float64",
    trainer=None,
    notation: str = "auto",
) -> Report:
    """Evaluate every displayed equation of the derivation of a spec; see the module doc.

    Args:
        spec_or_derivation: a :class:`~symgrad.derivation.Derivation`, a :class:`Spec`, a path
            to a YAML spec or a dict.
        seed: seeds the parameters (the trainer's initialisation), the batch and the direction v.
        batch: samples of the random batch (also the training set: N = m).
        dtype: the trainer's dtype (the reference is always float64).
        trainer: a trainer instance to check instead of ``load_trainer(spec, seed, dtype)``;
            its parameters are set to the random parameters.
        notation: ``"seed002"`` adds the node-by-node equations (``derive --notation
            seed002``), checked against the unrolled network, the trainer and the reference;
            ``"auto"`` (the default) adds them for a node graph (``graph:``) that can be traced.

    Returns:
        A :class:`Report`: ``report.ok``, ``report.max_error``, ``report.table()``.
    """
    if hasattr(spec_or_derivation, "equations") and hasattr(spec_or_derivation, "spec"):
        derivation = spec_or_derivation
        spec = derivation.spec
    else:
        spec = spec_or_derivation
        if not isinstance(spec, Spec):
            spec = load_spec(spec if isinstance(spec, dict) else os.fspath(spec))
        derivation = derive(spec)
    from ..derivation.nodes import apply_notation

    apply_notation(derivation, notation)
    dtype = np.dtype(dtype).name
    tol = TOLERANCE[dtype]
    if spec.optimizer.name == "newton" and spec.n_params <= NEWTON_EXACT_MAX:
        batch = max(batch, spec.n_params + 1)  # so that the Hessian of the batch can be invertible
    rows: list[Row] = []
    # overflow in a saturated unit (cosh(z)^2 for z = 800) is a value, not an error, here
    with np.errstate(all="ignore"), _one_blas_thread():
        ctx = Context(spec, derivation, seed, batch, dtype, tol, trainer)
        ctx.find_definitions(derivation.equations)
        ctx.update_rows = step_rows(ctx, derivation.equations)
        for eq in derivation.equations:
            rows.extend(rows_of(ctx, eq))
    return Report(spec.name, rows, tol, FLOOR, seed, batch, dtype, sorted(ctx.notes))
