"""Where the Jinja2 templates are: inside the installed package, or ``templates/`` of a checkout."""

from __future__ import annotations

from pathlib import Path


def template_root(marker: str) -> Path:
    """The templates folder that holds ``marker`` (a path relative to it)."""
    here = Path(__file__).resolve().parent  # the symgrad package
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(f"{marker} not found next to {here}")
