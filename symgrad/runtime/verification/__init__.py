"""The parts of the verifier (:mod:`symgrad.runtime.verify` is its entry point).

- :mod:`.common`: tolerances, sampling limits and small helpers;
- :mod:`.report`: the result (a row per equation and form) and its table;
- :mod:`.context`: one verification run: the random draw, the trainer, Hessians, definitions;
- :mod:`.bindings` and :mod:`.exact`: the IR's names bound to the reference network;
- :mod:`.rows`: index-form and matrix-form rows, compared with the trainer and differences;
- :mod:`.batch`: the matrix forms of the gradients and Hessian-vector products on a batch of
  m < N samples;
- :mod:`.steps`: the optimiser's step (``opt.*``, ``reg.prox``) against one epoch of ``fit``;
- :mod:`.newton`: Newton's method, by the exact solve or by its conjugate-gradient path.
"""
