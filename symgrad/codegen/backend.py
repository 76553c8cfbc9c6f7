"""Backends: a code printer (module names as data) plus a template set under ``templates/``.

A new backend (CuPy, PyTorch) is a printer subclass and a folder of templates beside
``templates/numpy``; nothing here or in the layer objects names NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..printers.numpy import NumPyPrinter


@dataclass(frozen=True)
class Backend:
    """Where generated code comes from: ``printer`` writes expressions, ``templates`` (a folder
    of ``templates/``) lays them out."""

    name: str
    printer: type[NumPyPrinter]
    templates: str


NUMPY = Backend("numpy", NumPyPrinter, "numpy")
