"""Runtime: module loader and cache, finite-difference checks, limits, atomic writes, adapters."""
