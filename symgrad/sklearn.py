"""scikit-learn estimators over generated trainers (the adapter: :mod:`symgrad.runtime.sklearn`).

scikit-learn is imported on first use of ``SymgradClassifier`` / ``SymgradRegressor``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SymgradClassifier", "SymgradRegressor"]  # noqa: F822 - built on first use


def __getattr__(name: str) -> Any:
    from .runtime import sklearn as _adapter

    return getattr(_adapter, name)


def __dir__() -> list[str]:
    return list(__all__)
