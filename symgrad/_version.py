"""The package version (one place, imported by the package and by code generation)."""

__version__ = "0.1.0"
