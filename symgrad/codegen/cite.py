"""Equation citations: comments in generated code cite equations by key, numbered at print time.

With ``marked=True`` each citation is printed as a marker, ``\\ue000N\\ue001`` (two private-use
characters around the number: as long as ``(N)``, so the layout of the module is the same),
and :meth:`Citations.resolve` turns the rendered module back into plain ``(N)`` while recording
the line of every marker with the key it was printed from. That is where the HTML page's links
between equations and code come from: the keys, never a search of the code's text.
"""

from __future__ import annotations

import re

#: the characters a marked citation wears in place of its parentheses (Unicode private use)
OPEN, CLOSE = "\ue000", "\ue001"
_MARKER = re.compile(f"{OPEN}(\\d+){CLOSE}")


class Citations:
    """``cite(key, *fallbacks)`` -> ``"(N)"`` with N the number of the first key the Derivation
    holds; ``used`` maps every number cited to its key (tests check each against the code)."""

    def __init__(self, d, marked: bool = False) -> None:
        self._d = d
        self.marked = marked
        self.used: dict[int, str] = {}

    def number(self, *keys: str) -> int:
        for key in keys:
            try:
                n = self._d.eq(key)
            except KeyError:
                continue
            self.used[n] = key
            return n
        raise KeyError(f"the derivation has none of the equations {', '.join(keys)}")

    def _show(self, n: int) -> str:
        return f"{OPEN}{n}{CLOSE}" if self.marked else f"({n})"

    def __call__(self, *keys: str) -> str:
        return self._show(self.number(*keys))

    def maybe(self, *keys: str) -> str:
        """``"(N) "`` for the first key the Derivation holds, else ``""``."""
        try:
            return f"{self._show(self.number(*keys))} "
        except KeyError:
            return ""

    def resolve(self, source: str) -> tuple[str, list[tuple[int, str]]]:
        """``source`` rendered with marked citations -> the plain source and its citation map:
        ``(line, key)`` for every citation, lines counted from 1, in order; ``key`` is the
        equation's own key (a citation by an alias, ``grad.2``, names ``grad.W.2``).

        Raises:
            ValueError: a marker that no citation printed, or a stray marker character (a
                citation that did not survive rendering intact): a bug in symgrad.
        """
        found: list[tuple[int, str]] = []
        lines = source.split("\n")
        for i, line in enumerate(lines):
            if OPEN not in line and CLOSE not in line:
                continue
            for match in _MARKER.finditer(line):
                n = int(match.group(1))
                if n not in self.used:
                    raise ValueError(f"line {i + 1} holds a citation ({n}) that nothing printed")
                found.append((i + 1, self._d.equation(self.used[n]).key))
            plain = _MARKER.sub(r"(\1)", line)
            if OPEN in plain or CLOSE in plain:
                raise ValueError(f"line {i + 1} holds a broken citation marker: {line!r}")
            lines[i] = plain
        return "\n".join(lines), found
