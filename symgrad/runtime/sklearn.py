"""scikit-learn-compatible estimators around symgrad's generated trainers.

``SymgradClassifier`` and ``SymgradRegressor`` take a spec (a YAML path, a YAML string or a
dict) and train the generated NumPy trainer in ``fit``, so they work in ``cross_val_score``,
``GridSearchCV`` and ``Pipeline``::

    from symgrad.sklearn import SymgradClassifier
    clf = SymgradClassifier("examples/softmax_iris.yaml", epochs=300).fit(X, y)

A spec given as a dict or YAML string may say ``inputs: auto`` and, on its output layer,
``units: auto``: ``fit`` then takes the number of features from ``X`` and the number of outputs
from ``y`` (the number of classes for a classifier), as scikit-learn's own estimators do.

scikit-learn is optional: importing :mod:`symgrad.sklearn` needs only NumPy, and scikit-learn is
imported the first time one of the estimator classes is used (an :class:`ImportError` saying
``pip install scikit-learn`` is raised if it is missing).
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np

__all__ = ["SymgradClassifier", "SymgradRegressor"]  # noqa: F822 - built on first use

_MISSING = "symgrad.sklearn needs scikit-learn, which is not installed: pip install scikit-learn"
_CLASSES: dict[str, type] = {}


def _sklearn() -> Any:
    try:
        import sklearn.base  # noqa: F401
        import sklearn.utils.multiclass  # noqa: F401
        import sklearn.utils.validation  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
        raise ImportError(_MISSING) from exc
    import sklearn

    return sklearn


def _validate(
    estimator: Any, X: Any, y: Any = "no_validation", reset: bool = True, **kw: Any
) -> Any:
    """``validate_data`` (scikit-learn >= 1.6) or the older ``_validate_data`` method."""
    from sklearn.utils import validation

    if hasattr(validation, "validate_data"):
        return validation.validate_data(estimator, X, y, reset=reset, **kw)
    return estimator._validate_data(X, y, reset=reset, **kw)  # pragma: no cover - sklearn < 1.6


def _fill_auto(raw: dict, n_features: int | None, n_outputs: int | None) -> dict:
    """Copy of a spec dict with ``inputs: auto`` and the output layer's ``units: auto`` set."""
    raw = copy.deepcopy(raw)
    if raw.get("inputs", "auto") == "auto":
        if n_features is None:
            raise ValueError("the spec says inputs: auto, so the estimator must be fitted first")
        raw["inputs"] = n_features
    layers = raw.get("layers")
    if isinstance(layers, list) and layers and isinstance(layers[-1], dict):
        if layers[-1].get("units") == "auto":
            if n_outputs is None:
                raise ValueError("the spec's output layer has units: auto; fit the estimator first")
            layers[-1]["units"] = n_outputs
    return raw


def _build(cls_name: str) -> type:
    """Create the estimator classes on first use (they subclass scikit-learn's mixins)."""
    if cls_name in _CLASSES:
        return _CLASSES[cls_name]
    _sklearn()
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted

    class _Base(BaseEstimator):
        def __init__(
            self,
            spec: Any = None,
            epochs: int | None = None,
            batch_size: int | None = None,
            learning_rate: float | None = None,
            seed: int | None = None,
            dtype: Any = None,
            shuffle: bool = True,
        ) -> None:
            self.spec = spec
            self.epochs = epochs
            self.batch_size = batch_size
            self.learning_rate = learning_rate
            self.seed = seed
            self.dtype = dtype
            self.shuffle = shuffle

        # -- helpers ---------------------------------------------------------------------------
        def _load_spec(self, n_features: int | None = None, n_outputs: int | None = None) -> Any:
            """The spec, with ``inputs: auto`` / output ``units: auto`` filled in from the data."""
            from ..spec import Spec, load_spec, parse_yaml

            spec = self.spec
            if spec is None:
                raise ValueError(
                    f"{type(self).__name__} needs a spec (a YAML path, YAML string or dict)"
                )
            if isinstance(spec, Spec):
                return spec
            if isinstance(spec, os.PathLike) or (
                isinstance(spec, str) and "\n" not in spec and spec.endswith((".yaml", ".yml"))
            ):
                return load_spec(spec)
            raw = parse_yaml(spec) if isinstance(spec, str) else spec
            if isinstance(raw, dict):
                raw = _fill_auto(raw, n_features, n_outputs)
            return load_spec(raw)

        def _new_model(self, spec: Any) -> Any:
            from .loader import load_trainer

            model = load_trainer(spec, seed=self.seed, dtype=self.dtype)
            if self.learning_rate is not None:
                model.learning_rate = float(self.learning_rate)
            return model

        def _fit_arrays(self, spec: Any, X: np.ndarray, Y: np.ndarray) -> None:
            if X.shape[1] != spec.inputs:
                raise ValueError(
                    f"X has {X.shape[1]} features, but the spec {spec.name!r} expects "
                    f"{spec.inputs} inputs"
                )
            model = self._new_model(spec)
            self.history_ = model.fit(
                X, Y, epochs=self.epochs, batch_size=self.batch_size, shuffle=self.shuffle
            )
            self.model_ = model
            self.spec_ = spec

        def _check_X(self, X: Any) -> np.ndarray:
            check_is_fitted(self, "model_")
            return _validate(self, X, reset=False, dtype=[np.float64, np.float32])

        # -- pickling: the trainer class is generated at run time, so store its parameters ----
        def __getstate__(self) -> dict:
            state = self.__dict__.copy()
            model = state.pop("model_", None)
            if model is not None:
                state["_model_state"] = {
                    "theta": model.get_flat().copy(),
                    "epochs_done": model.epochs_done,
                    "learning_rate": model.learning_rate,
                }
            return state

        def __setstate__(self, state: dict) -> None:
            saved = state.pop("_model_state", None)
            self.__dict__.update(state)
            if saved is not None:
                model = self._new_model(self.spec_)
                model.set_flat(saved["theta"])
                model.epochs_done = saved["epochs_done"]
                model.learning_rate = saved["learning_rate"]
                self.model_ = model

    class SymgradClassifier(ClassifierMixin, _Base):
        """A classifier trained by the generated trainer of a classification spec.

        ``fit(X, y)`` takes 1-D class labels of any kind (stored in ``classes_``) and one-hot
        encodes them (0/1 for a spec with a single sigmoid output); ``predict`` returns the
        original labels and ``predict_proba`` one column per class of ``classes_``.
        """

        def fit(self, X: Any, y: Any) -> SymgradClassifier:
            X, y = _validate(self, X, y, dtype=[np.float64, np.float32])
            check_classification_targets(y)
            self.classes_, idx = np.unique(y, return_inverse=True)
            k = len(self.classes_)
            if k < 2:
                raise ValueError(
                    f"the classifier needs samples of at least 2 classes; got 1 class "
                    f"({self.classes_[0]!r})"
                )
            spec = self._load_spec(X.shape[1], k)
            if spec.outputs == 1:
                if k > 2:
                    raise ValueError(
                        f"the spec {spec.name!r} has a single output (binary classification) "
                        f"but y has {k} classes"
                    )
                Y = idx.reshape(-1, 1).astype(np.float64)
            else:
                if k > spec.outputs:
                    raise ValueError(
                        f"the spec {spec.name!r} has {spec.outputs} outputs but y has {k} classes"
                    )
                Y = np.zeros((len(idx), spec.outputs))
                Y[np.arange(len(idx)), idx] = 1.0
            self._fit_arrays(spec, X, Y)
            return self

        def predict_proba(self, X: Any) -> np.ndarray:
            X = self._check_X(X)
            a = np.asarray(self.model_.forward(X), dtype=np.float64)
            k = len(self.classes_)
            if a.shape[1] == 1:
                p = a[:, 0]
                return np.column_stack([1.0 - p, p])
            a = a[:, :k]
            total = a.sum(axis=1, keepdims=True)
            return a / np.where(total > 0, total, 1.0)

        def predict(self, X: Any) -> np.ndarray:
            proba = self.predict_proba(X)
            return self.classes_[np.argmax(proba, axis=1)]

    class SymgradRegressor(RegressorMixin, _Base):
        """A regressor trained by the generated trainer of a spec (targets taken as they are).

        ``y`` is ``(samples, outputs)``, or 1-D when the spec has one output; ``predict``
        returns the same shape as the ``y`` given to ``fit``.
        """

        def fit(self, X: Any, y: Any) -> SymgradRegressor:
            X, y = _validate(
                self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True
            )
            y = np.asarray(y, dtype=np.float64)
            self._y_1d = y.ndim == 1
            Y = y.reshape(-1, 1) if y.ndim == 1 else y
            spec = self._load_spec(X.shape[1], Y.shape[1])
            if Y.shape[1] != spec.outputs:
                raise ValueError(
                    f"y has {Y.shape[1]} target column(s), but the spec {spec.name!r} has "
                    f"{spec.outputs} outputs"
                )
            self._fit_arrays(spec, X, Y)
            return self

        def __sklearn_tags__(self) -> Any:
            tags = super().__sklearn_tags__()
            tags.target_tags.multi_output = True  # 2-D targets: one column per output
            return tags

        def _more_tags(self) -> dict:  # scikit-learn < 1.6
            return {"multioutput": True}

        def predict(self, X: Any) -> np.ndarray:
            X = self._check_X(X)
            a = np.asarray(self.model_.forward(X), dtype=np.float64)
            return a[:, 0] if self._y_1d and a.shape[1] == 1 else a

    for cls in (SymgradClassifier, SymgradRegressor):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    _Base.__module__ = __name__
    _Base.__qualname__ = "_Base"
    _CLASSES.update(
        SymgradClassifier=SymgradClassifier, SymgradRegressor=SymgradRegressor, _Base=_Base
    )
    globals().update(_CLASSES)
    return _CLASSES[cls_name]


def __getattr__(name: str) -> Any:
    if name in ("SymgradClassifier", "SymgradRegressor", "_Base"):
        return _build(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "SymgradClassifier", "SymgradRegressor"])
