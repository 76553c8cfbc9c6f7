"""symgrad.sklearn: the estimators in scikit-learn's model selection and pipeline tools."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from symgrad.sklearn import SymgradClassifier, SymgradRegressor  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IRIS_SPEC = str(EXAMPLES / "softmax_iris.yaml")
DIABETES_SPEC = str(EXAMPLES / "diabetes_linear.yaml")
LOGISTIC_2 = {
    "name": "logistic_two",
    "inputs": 2,
    "layers": [{"units": 1, "activation": "sigmoid"}],
    "loss": "log_loss",
    "optimizer": {"name": "gd", "learning_rate": 0.5, "epochs": 200},
}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, np.array(["setosa", "versicolor", "virginica"])[y]


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def test_constructor_only_stores_arguments():
    clf = SymgradClassifier("no/such/spec.yaml", epochs=3, learning_rate=0.1)
    assert clf.get_params() == {
        "spec": "no/such/spec.yaml",
        "epochs": 3,
        "batch_size": None,
        "learning_rate": 0.1,
        "seed": None,
        "dtype": None,
        "shuffle": True,
    }
    clf.set_params(epochs=5)
    assert clf.epochs == 5


def test_classifier_labels_proba_and_pickle(iris):
    X, y = iris
    clf = make_pipeline(StandardScaler(), SymgradClassifier(IRIS_SPEC, epochs=200, seed=1))
    clf.fit(X, y)
    est = clf[-1]
    assert list(est.classes_) == ["setosa", "versicolor", "virginica"]
    assert est.n_features_in_ == 4
    pred = clf.predict(X)
    assert pred.dtype.kind == "U" and set(pred) <= set(est.classes_)
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert clf.score(X, y) > 0.9
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(X), pred)


def test_cross_val_score_iris(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), SymgradClassifier(IRIS_SPEC, epochs=200))
    scores = cross_val_score(pipe, X, y, cv=5)
    assert scores.shape == (5,) and scores.mean() > 0.85


def test_grid_search_learning_rate_iris(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), SymgradClassifier(IRIS_SPEC, epochs=100))
    grid = GridSearchCV(pipe, {"symgradclassifier__learning_rate": [0.001, 0.5]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_ == {"symgradclassifier__learning_rate": 0.5}
    assert grid.best_estimator_[-1].model_.learning_rate == 0.5
    assert grid.score(X, y) > 0.9


def test_regressor_diabetes(diabetes):
    X, y = diabetes
    pipe = make_pipeline(StandardScaler(), SymgradRegressor(DIABETES_SPEC))
    scores = cross_val_score(pipe, X, y, cv=5)
    assert scores.mean() > 0.4  # ordinary least squares reaches ~0.48
    pipe.fit(X, y)
    assert pipe.predict(X).shape == (len(y),)
    assert pipe[-1].n_features_in_ == 10
    from sklearn.linear_model import LinearRegression

    ols = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    np.testing.assert_allclose(pipe.predict(X), ols.predict(X), rtol=1e-6, atol=1e-6)
    # 2-D targets give 2-D predictions
    reg = SymgradRegressor(DIABETES_SPEC).fit(X, y[:, None])
    assert reg.predict(X).shape == (len(y), 1)


def test_grid_search_regressor(diabetes):
    X, y = diabetes
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), SymgradRegressor(DIABETES_SPEC)),
        {"symgradregressor__learning_rate": [0.5, 1.0]},
        cv=3,
    ).fit(X, y)
    assert grid.best_params_ == {"symgradregressor__learning_rate": 1.0}


def test_binary_sigmoid_spec_uses_zero_one():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 2))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = SymgradClassifier(LOGISTIC_2, seed=0).fit(X, y)
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.score(X, y) > 0.9
    assert clf.predict_proba(X).shape == (80, 2)
    with pytest.raises(ValueError, match="single output"):
        SymgradClassifier(LOGISTIC_2).fit(X, np.arange(80) % 3)


def test_errors_are_clear(iris):
    X, y = iris
    with pytest.raises(ValueError, match="expects 4 inputs"):
        SymgradClassifier(IRIS_SPEC).fit(X[:, :3], y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        SymgradClassifier(IRIS_SPEC).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="3 outputs"):
        SymgradClassifier(IRIS_SPEC).fit(X, np.arange(len(X)) % 4)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SymgradClassifier(IRIS_SPEC).predict(X)
    fitted = clone(SymgradClassifier(IRIS_SPEC, epochs=1)).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :2])


# Checks of scikit-learn's suite that these estimators fail by design; see the README.
EXPECTED_FAILURES: dict[str, str] = {}


def _run_check_estimator(estimator):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    skipped = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "skipped"}
    return failed, skipped


AUTO_SOFTMAX = {
    "name": "auto_softmax",
    "inputs": "auto",
    "layers": [{"units": "auto", "activation": "softmax"}],
    "loss": "cross_entropy",
    "optimizer": {"name": "gd", "learning_rate": 0.5, "epochs": 50},
}
AUTO_LINEAR = {
    "name": "auto_linear",
    "inputs": "auto",
    "layers": [{"units": "auto", "activation": "identity"}],
    "loss": "mse",
    "optimizer": {"name": "newton", "learning_rate": 1.0, "damping": 1e-6, "epochs": 1},
}


def test_auto_sizes(iris, diabetes):
    X, y = iris
    clf = SymgradClassifier(AUTO_SOFTMAX).fit(X[:, :2], y)
    assert (clf.spec_.inputs, clf.spec_.outputs) == (2, 3)
    Xd, yd = diabetes
    reg = SymgradRegressor(AUTO_LINEAR).fit(Xd, np.column_stack([yd, -yd]))
    assert reg.predict(Xd).shape == (len(yd), 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "estimator",
    [SymgradClassifier(AUTO_SOFTMAX), SymgradRegressor(AUTO_LINEAR)],
    ids=["classifier", "regressor"],
)
def test_check_estimator(estimator):
    failed, skipped = _run_check_estimator(estimator)
    for name, exc in sorted(failed.items()):
        first = (str(exc).splitlines() or [""])[0][:200]
        print(f"FAILED {name}: {type(exc).__name__}: {first}")
    for name, reason in sorted(skipped.items()):
        print(f"SKIPPED {name}: {reason}")
    unexpected = set(failed) - set(EXPECTED_FAILURES)
    assert not unexpected, sorted(unexpected)


def test_clear_import_error_without_sklearn():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import symgrad.sklearn as m\n"
        "try:\n    m.SymgradRegressor\nexcept ImportError as e:\n    print(e)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert "pip install scikit-learn" in proc.stdout, proc.stderr
