"""Code generation: where each equation's printed code goes (Jinja2 templates lay out structure)."""

from .generate import (
    build_context,
    generate_source,
    generate_with_citations,
    render_source,
    template_dir,
)

__all__ = [
    "build_context",
    "generate_source",
    "generate_with_citations",
    "render_source",
    "template_dir",
]
