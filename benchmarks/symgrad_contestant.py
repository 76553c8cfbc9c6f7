"""symgrad's generated trainer as a benchmark contestant (the hook of ``peers.py``).

``generated_epoch`` runs one epoch of the spec's optimiser through the generated module's own
``fit`` (``shuffle=False``: batches in the order given; ``track=False``: no per-batch metrics, as
the other contestants compute none). ``generated_epoch.variants`` names the other rows
``peers.py`` reports beside it: ``fit()`` with its default metrics (the loss and accuracy of
every batch, which the CLI's progress bar shows), so that their cost is measured too. The
trainer is generated and instantiated once per spec; each call copies the contestant's
parameters in and out (two vectors of P floats).
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


def _epoch(spec_dict, params, X, Y, batch_size, track):
    model = _model(spec_dict)
    for l, (W, b) in enumerate(params, start=1):
        getattr(model, f"W_{l}")[...] = W
        getattr(model, f"b_{l}")[...] = b
    model.fit(X, Y, epochs=1, batch_size=batch_size, shuffle=False, track=track)
    for l, (W, b) in enumerate(params, start=1):
        np.copyto(W, getattr(model, f"W_{l}"))
        np.copyto(b, getattr(model, f"b_{l}"))
    return params


def generated_epoch(spec_dict, params, X, Y, batch_size):
    """One epoch of the generated trainer on ``params`` [(W, b), ...], updated in place;
    ``fit(track=False)``."""
    return _epoch(spec_dict, params, X, Y, batch_size, False)


def generated_epoch_tracked(spec_dict, params, X, Y, batch_size):
    """The same epoch through the default ``fit()``: loss and accuracy tracked."""
    return _epoch(spec_dict, params, X, Y, batch_size, True)


#: the rows ``peers.py`` adds beside "generated" (``fit(track=False)``): name suffix -> function
generated_epoch.variants = {"fit()": generated_epoch_tracked}
