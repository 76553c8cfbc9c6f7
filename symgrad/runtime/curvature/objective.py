"""The cost of a trainer as a SciPy objective: ``fun``, ``jac``, ``hess``, ``hessp``.

The flat vector is the trainer's public parameter vector (``get_flat`` order). Evaluating at a
point sets the model's parameters to it (``set_flat``); the value, gradient and Hessian of the
last point are cached, so SciPy's separate calls for ``fun`` and ``jac`` at one point cost one
evaluation each. After :meth:`ScipyObjective.minimize` the model holds the result.
"""

from __future__ import annotations

import numpy as np

#: Which derivatives each ``scipy.optimize.minimize`` method takes (others: ``jac`` only).
_USES = {
    "newton-cg": ("jac", "hessp"),
    "trust-ncg": ("jac", "hessp"),
    "trust-krylov": ("jac", "hessp"),
    "trust-constr": ("jac", "hessp"),
    "trust-exact": ("jac", "hess"),
    "dogleg": ("jac", "hess"),
    "nelder-mead": (),
    "powell": (),
    "cobyla": (),
    "cobyqa": (),
}


class ScipyObjective:
    """``fun``, ``jac``, ``hess``, ``hessp`` of ``model.loss(X, Y)`` over the flat parameters.

    Attributes:
        x0: the parameters the model had when the objective was made (P,).
        counts: how many values, gradients, Hessians and Hessian-vector products were computed.
    """

    def __init__(self, model, X, Y) -> None:
        self.model = model
        self.X = X
        self.Y = Y
        self.x0 = np.asarray(model.get_flat(), dtype=np.float64)
        self._x: np.ndarray | None = None
        self._cache: dict = {}
        self.counts = {"fun": 0, "jac": 0, "hess": 0, "hessp": 0}

    def _at(self, x) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.x0.shape:
            raise ValueError(f"expected a vector of {self.x0.size} parameters, got {x.shape}")
        if self._x is None or not np.array_equal(x, self._x):
            self.model.set_flat(x)
            self._x = x.copy()
            self._cache = {}

    def fun(self, x) -> float:
        """The cost ``C`` at ``x``."""
        self._at(x)
        if "fun" not in self._cache:
            self.counts["fun"] += 1
            self._cache["fun"] = float(self.model.loss(self.X, self.Y))
        return self._cache["fun"]

    def jac(self, x) -> np.ndarray:
        """The gradient (P,) at ``x``."""
        self._at(x)
        if "jac" not in self._cache:
            self.counts["jac"] += 1
            g = np.asarray(self.model.gradient_flat(self.X, self.Y), dtype=np.float64)
            self._cache["jac"] = g
        return self._cache["jac"].copy()

    def hess(self, x) -> np.ndarray:
        """The exact Hessian (P, P) at ``x`` (the trainer's limit on P applies)."""
        self._at(x)
        if "hess" not in self._cache:
            self.counts["hess"] += 1
            self._cache["hess"] = np.asarray(self.model.hessian(self.X, self.Y), np.float64)
        return self._cache["hess"].copy()

    def hessp(self, x, p) -> np.ndarray:
        """The exact Hessian-vector product ``H(x) p`` (P,), by the R-operator."""
        self._at(x)
        self.counts["hessp"] += 1
        return np.asarray(self.model.hvp(self.X, self.Y, np.asarray(p)), dtype=np.float64)

    def minimize(self, method: str = "trust-ncg", x0=None, **kwargs):
        """``scipy.optimize.minimize`` with the derivatives ``method`` uses; the model is left
        at the result. ``kwargs`` go to ``minimize`` (``tol``, ``options``, ...)."""
        from scipy.optimize import minimize

        uses = _USES.get(method.lower(), ("jac",))
        derivs = {name: getattr(self, name) for name in uses}
        start = self.x0 if x0 is None else np.asarray(x0, dtype=np.float64)
        result = minimize(self.fun, start, method=method, **derivs, **kwargs)
        self._at(result.x)
        return result


def scipy_objective(model, X, Y) -> ScipyObjective:
    """The trainer's cost on ``(X, Y)`` as a SciPy objective over its flat parameters.

    ``scipy.optimize.minimize(obj.fun, obj.x0, jac=obj.jac, hess=obj.hess, method=...)``, or
    ``hessp=obj.hessp`` for the matrix-free methods; or ``obj.minimize(method)``.
    """
    return ScipyObjective(model, X, Y)
