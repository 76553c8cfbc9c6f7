"""Layer types: each owns its code context and the macros that lay out its code.

A layer type is one module here and one macro file in each backend's template set
(``templates/<backend>/layers/<kind>.jinja``); the network composes them.
"""

from .dense import Dense, dense_layer, init_scale

__all__ = ["Dense", "dense_layer", "init_scale"]
