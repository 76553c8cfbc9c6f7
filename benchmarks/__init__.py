"""Benchmarks of symgrad's generated trainers against hand-written code and autodiff peers.

Run ``python -m benchmarks.peers --quick`` for a smoke run, ``python -m benchmarks.peers`` for
the full one; see ``benchmarks/README.md``.
"""
