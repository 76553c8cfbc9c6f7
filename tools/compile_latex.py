"""Compile each spec's standalone derivation with pdflatex; fail on an error or a wide box.

Usage: python tools/compile_latex.py examples/*.yaml
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

MAX_OVERFULL_PT = 10.0
_OVERFULL = re.compile(r"Overfull \\hbox \((\d+(?:\.\d+)?)pt too wide\)")


def compile_one(spec: Path, work: Path) -> tuple[int, float, str]:
    """(errors, widest overfull box in pt, first error line) for one spec."""
    tex = work / f"{spec.stem}.tex"
    subprocess.run(
        ["symgrad", "derive", str(spec), "--standalone", "-o", str(tex)], check=True
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (work / f"{spec.stem}.log").read_text(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    if run.returncode != 0 and not errors:
        errors = [f"pdflatex exited {run.returncode}"]
    widest = max((float(w) for w in _OVERFULL.findall(log)), default=0.0)
    return len(errors), widest, errors[0] if errors else ""


def main(paths: list[str]) -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            errors, widest, first = compile_one(Path(path), Path(tmp))
            ok = errors == 0 and widest <= MAX_OVERFULL_PT
            failed += not ok
            status = "ok" if ok else "FAILED"
            print(f"{status:6} {path}: {errors} errors, widest overfull box {widest:.1f}pt {first}")
    print(f"LaTeX: {len(paths) - failed} compiled, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
