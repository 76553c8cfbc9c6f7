"""Equation citations: comments in generated code cite equations by key, numbered at print time."""

from __future__ import annotations


class Citations:
    """``cite(key, *fallbacks)`` -> ``"(N)"`` with N the number of the first key the Derivation
    holds; ``used`` maps every number cited to its key (tests check each against the code)."""

    def __init__(self, d) -> None:
        self._d = d
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

    def __call__(self, *keys: str) -> str:
        return f"({self.number(*keys)})"

    def maybe(self, *keys: str) -> str:
        """``"(N) "`` for the first key the Derivation holds, else ``""``."""
        try:
            return f"({self.number(*keys)}) "
        except KeyError:
            return ""
