"""The verifier's result: one row per equation and form, and the table ``symgrad verify`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import FLOOR


@dataclass(frozen=True)
class Row:
    """One line of the verification table.

    Attributes:
        key: the equation's key.
        form: ``index``, ``matrix``, ``batch`` (the matrix form on m < N samples), ``update``
            or ``definition``.
        status: ``ok``, ``FAIL`` or ``definition``.
        error: the largest relative error (see :mod:`symgrad.runtime.verify`); None when
            nothing was compared.
        against: what the sides were compared with.
        values: how many values of each side were compared.
        note: why a row failed (``not evaluable: ...``) or how it was sampled.
    """

    key: str
    form: str
    status: str
    error: float | None = None
    against: str = ""
    values: int = 0
    note: str = ""


@dataclass
class Report:
    """The verification of one spec: a row per equation and form."""

    spec: str
    rows: list[Row]
    tolerance: float
    floor: float = FLOOR
    seed: int = 0
    batch: int = 5
    dtype: str = "float64"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "FAIL" for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]

    @property
    def max_error(self) -> float:
        """The largest error of any compared row (inf when a row was not evaluable)."""
        errs = [r.error for r in self.rows if r.error is not None]
        if any(r.status == "FAIL" and r.error is None for r in self.rows):
            return float("inf")
        return max(errs, default=0.0)

    def summary(self) -> str:
        """The last line of the table: counts, the largest error and the tolerance."""
        n_fail = len(self.failures)
        n_def = sum(r.status == "definition" for r in self.rows)
        n_ok = sum(r.status == "ok" for r in self.rows)
        return (
            f"{n_ok} rows ok, {n_fail} failed, {n_def} definitions; max rel error "
            f"{self.max_error:.1e}; tolerance {self.tolerance:g} relative to the largest "
            f"reference value of each row, absolute below {self.floor:g} (against finite "
            "differences: beyond their own error estimate)"
        )

    def table(self) -> str:
        """The report as a plain-text table (what ``symgrad verify`` prints)."""
        head = ("equation", "form", "max rel err", "compared against", "values", "result")
        lines = []
        for r in self.rows:
            err = "-" if r.error is None else f"{r.error:.1e}"
            result = r.status if not r.note else f"{r.status}: {r.note}"
            count = str(r.values) if r.values else "-"
            lines.append((r.key, r.form, err, r.against, count, result))
        widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
        widths[3] = min(widths[3], 48)
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        out = [
            f"verify {self.spec}: seed {self.seed}, {self.batch} samples (N = m = {self.batch}), "
            f"{self.dtype} trainer",
            fmt.format(*head),
            fmt.format(*("-" * w for w in widths[:-1]), "-" * 6),
        ]
        out += [fmt.format(*x) for x in lines]
        out.append(self.summary())
        out += self.notes
        return "\n".join(out)
