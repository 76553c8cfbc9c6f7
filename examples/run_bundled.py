"""Train the example specs on data that scikit-learn ships: nothing to download.

    python examples/run_bundled.py

* iris (150 x 4, 3 classes) with ``softmax_iris.yaml``;
* digits (1797 x 64, 10 classes) with ``mlp_digits.yaml``;
* breast cancer (569 x 30, 2 classes, features standardised) with ``logistic_regression.yaml``;
* diabetes (442 x 10, regression) with ``diabetes_linear.yaml``.

Each model is trained on 75% of the samples (stratified for the classifiers, ``random_state=0``)
and scored on the other 25%: accuracy for the classifiers, R^2 for the regression.  Needs
scikit-learn (``pip install scikit-learn``) for the data sets and the split.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import symgrad  # noqa: E402


def _split(X, y, classify):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y if classify else None)


def _standardise(X_train, X_test):
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _one_hot(y, k):
    return np.eye(k)[y] if k > 1 else y.reshape(-1, 1).astype(float)


def run(name, spec_file, X, y, standardise=False):
    spec = symgrad.load_spec(HERE / spec_file)
    classify = spec.is_classifier
    X_train, X_test, y_train, y_test = _split(X, y, classify)
    if standardise:
        X_train, X_test = _standardise(X_train, X_test)
    started = time.perf_counter()
    model = symgrad.load_trainer(spec)  # generate (or reuse) the trainer: counted in the time
    if classify:
        model.fit(X_train, _one_hot(y_train, spec.outputs))
        metric = "accuracy"
        value = model.score(X_test, _one_hot(y_test, spec.outputs))
    else:
        model.fit(X_train, y_train.reshape(-1, 1))
        metric = "R^2"
        value = model.score(X_test, y_test.reshape(-1, 1))
    elapsed = time.perf_counter() - started
    print(
        f"{name:<14} {spec_file:<26} {len(X_train):>5} train {len(X_test):>4} test  "
        f"test {metric} {value:.4f}  time {elapsed:.2f}s",
        flush=True,
    )
    return value


def main() -> int:
    try:
        from sklearn import datasets
    except ImportError:
        print("examples/run_bundled.py needs scikit-learn: pip install scikit-learn")
        return 0
    run("iris", "softmax_iris.yaml", *datasets.load_iris(return_X_y=True))
    X, y = datasets.load_digits(return_X_y=True)
    run("digits", "mlp_digits.yaml", X / 16.0, y)
    run("breast cancer", "logistic_regression.yaml",
        *datasets.load_breast_cancer(return_X_y=True), standardise=True)
    run("diabetes", "diabetes_linear.yaml", *datasets.load_diabetes(return_X_y=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
