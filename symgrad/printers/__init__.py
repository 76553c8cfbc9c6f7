"""Printers: the Derivation's SymPy objects as LaTeX, markdown, text and code. No calculus."""
