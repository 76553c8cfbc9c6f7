"""symgrad's generated trainer as a benchmark contestant (the hook of ``peers.py``).

``generated_epoch`` runs one epoch of the spec's optimiser through the generated module's own
``fit`` (``shuffle=False``: batches in the order given; ``track=False``: no per-batch metrics, as
the other contestants compute none). The trainer is generated and instantiated once per spec;
each call copies the contestant's parameters in and out (two vectors of P floats).
"""

from __future__ import annotations

import json

import numpy as np

import symgrad

_MODELS: dict[str, object] = {}


def _model(spec_dict: dict):
    key = json.dumps(spec_dict, sort_keys=True)
    model = _MODELS.get(key)
    if model is None:
        model = _MODELS[key] = symgrad.load_trainer(spec_dict)
    return model


def generated_epoch(spec_dict, params, X, Y, batch_size):
    """One epoch of the generated trainer on ``params`` [(W, b), ...], updated in place."""
    model = _model(spec_dict)
    for l, (W, b) in enumerate(params, start=1):
        getattr(model, f"W_{l}")[...] = W
        getattr(model, f"b_{l}")[...] = b
    model.fit(X, Y, epochs=1, batch_size=batch_size, shuffle=False, track=False)
    for l, (W, b) in enumerate(params, start=1):
        np.copyto(W, getattr(model, f"W_{l}"))
        np.copyto(b, getattr(model, f"b_{l}"))
    return params
