"""Benchmarks of symgrad's generated trainers against hand-written code and autodiff peers.

Run ``python -m benchmarks.peers --quick`` for a smoke run, ``python -m benchmarks.peers`` for
the full one; see ``benchmarks/README.md``.
"""

from pathlib import Path


def publish(lines: list[str], path: Path) -> int:
    """Print a Markdown report and write it to ``path`` (its folder made); returns 0."""
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 0
