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


def _model(spec_dict: dict, backend: str = "numpy"):
    key = json.dumps(spec_dict, sort_keys=True) + backend
    model = _MODELS.get(key)
    if model is None:
        said = []
        model = symgrad.load_trainer(spec_dict, backend=backend, notice=said.append)
        if said:  # the NumPy trainer it fell back to is benchmarked as "generated" already
            from .baselines import UnavailableError

            raise UnavailableError(said[0])
        _MODELS[key] = model
    return model


def _epoch(spec_dict, params, X, Y, batch_size, track, backend="numpy"):
    model = _model(spec_dict, backend)
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


def numba_epoch(spec_dict, params, X, Y, batch_size):
    """One epoch of the Numba backend's trainer (``load_trainer(..., backend="numba")``; the
    batch loop compiled, compiled once per process or loaded from Numba's disk cache);
    ``fit(track=False)``."""
    return _epoch(spec_dict, params, X, Y, batch_size, False, "numba")


def numba_epoch_tracked(spec_dict, params, X, Y, batch_size):
    """The Numba backend's default ``fit()``: loss and accuracy tracked."""
    return _epoch(spec_dict, params, X, Y, batch_size, True, "numba")


numba_epoch.variants = {"fit()": numba_epoch_tracked}

#: what :func:`compile_times` runs in a fresh interpreter: derive and generate, then time the
#: first fit (compiling, or loading Numba's cache) and a second one on the same data
_CHILD = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import symgrad
spec = symgrad.load_spec(sys.argv[1])
model = symgrad.load_trainer(spec, backend="numba")
t1 = time.perf_counter()
rng = np.random.default_rng(0)
X = rng.standard_normal((256, model.n_inputs))
Y = np.eye(model.n_outputs)[rng.integers(0, model.n_outputs, 256)]
t2, c2 = time.perf_counter(), time.process_time()
model.fit(X, Y, epochs=1)
t3, c3 = time.perf_counter(), time.process_time()
model.fit(X, Y, epochs=1)
t4 = time.perf_counter()
print(json.dumps({
    "load_trainer_s": t1 - t0, "first_fit_s": t3 - t2, "first_fit_cpu_s": c3 - c2,
    "second_fit_s": t4 - t3,
}))
"""


def compile_times(spec_path: str = "examples/mlp_digits.yaml") -> dict:
    """The Numba backend's first-call cost for ``spec_path``, in two fresh processes sharing a
    new, empty ``NUMBA_CACHE_DIR``: the first compiles (cold cache), the second loads what the
    first cached. ``compile_s`` is the first fit less the second fit of the same process (wall
    clock); ``first_fit_cpu_s`` the first fit's CPU time, which other processes on a shared
    machine barely disturb."""
    import os
    import subprocess
    import sys
    import tempfile

    out = {"spec": spec_path}
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for run in ("cold", "cached"):
            text = subprocess.run(
                [sys.executable, "-c", _CHILD, spec_path],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(text.strip().splitlines()[-1])
            r["compile_s"] = r["first_fit_s"] - r["second_fit_s"]
            out[run] = r
    return out
