"""The metrics of ``fit()`` (issue 14): the history equals the cost computed separately.

``fit`` (tracked) keeps each batch's outputs before its update and computes the epoch's loss and
accuracy from them once per epoch. Here a second trainer replays the same epochs one batch at a
time, and the loss of each batch is computed from ``forward`` and the loss written out in the test
(not the generated ``_loss_sum``), before the batch's update; the regulariser is added at the
epoch's end with N = the training set's size.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import make, make_data, make_spec, weight_mask


def batch_loss(loss: str, a: np.ndarray, y: np.ndarray) -> float:
    """sum over samples and units of the per-unit loss, written out."""
    if loss == "mse":
        return float(np.sum(0.5 * (a - y) ** 2))
    if loss == "cross_entropy":
        return float(-np.sum(y * np.log(a)))
    assert loss == "log_loss"
    return float(-np.sum(y * np.log(a) + (1 - y) * np.log(1 - a)))


def penalty(model, n: int, l2: float, l1: float) -> float:
    w = model.get_flat()[weight_mask(model)]
    return l2 / (2 * n) * float(w @ w) + l1 / n * float(np.abs(w).sum())


def replay(model, X, Y, loss, epochs, m, l2, l1, shuffle=True):
    """Train ``model`` batch by batch as ``fit`` does; the history computed beside it."""
    n = X.shape[0]
    model._init_optimizer()
    full, rest = divmod(n, m)
    starts = [(lo, m) for lo in range(0, full * m, m)] + ([(full * m, rest)] if rest else [])
    history = {"loss": [], "accuracy": []}
    for _ in range(epochs):
        order = np.random.default_rng((model.seed, model.epochs_done)).permutation(n)
        if not shuffle:
            order = np.arange(n)
        total, correct = 0.0, 0
        for lo, size in starts:
            idx = order[lo : lo + size]
            a = model.forward(X[idx])
            total += batch_loss(loss, a, Y[idx])
            correct += int(np.sum(np.argmax(a, axis=1) == np.argmax(Y[idx], axis=1)))
            run = model._runner(size, n, False)
            run(X, Y, None, None if not shuffle else order, lo, 1)
        model.epochs_done += 1
        history["loss"].append(total / n + penalty(model, n, l2, l1))
        history["accuracy"].append(correct / n)
    return history


CASES = {
    # hidden layers, output, loss, optimiser, l2, l1, n, batch
    "sigmoid-mse-sgd-rest": (((5, "sigmoid"),), "sigmoid", "mse", "sgd", 1e-3, 0.0, 23, 4),
    "softmax-ce-adam-l1": (((4, "tanh"),), "softmax", "cross_entropy", "adam", 1e-2, 1e-3, 30, 8),
    "sigmoid-logloss-momentum": (
        ((3, "relu"), (4, "tanh")),
        "sigmoid",
        "log_loss",
        "momentum",
        0.0,
        0.0,
        17,
        5,
    ),
    "identity-mse-gd": ((), "identity", "mse", "gd", 1e-2, 0.0, 12, None),
}


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_history_equals_the_cost_computed_separately(case, shuffle):
    hidden, out, loss, opt, l2, l1, n, m = CASES[case]
    spec = make_spec(
        hidden,
        out,
        loss,
        inputs=3,
        outputs=3,
        l2=l2,
        l1=l1,
        optimizer={"name": opt, "learning_rate": 0.05, "batch_size": m, "epochs": 3},
    )
    X, Y = make_data(out, loss, n=n, inputs=3, outputs=3, seed=7)
    tracked, replayed = make(spec, seed=3), make(spec, seed=3)
    history = tracked.fit(X, Y, shuffle=shuffle)
    expected = replay(replayed, X, Y, loss, 3, m or n, l2, l1, shuffle)
    assert len(history["loss"]) == 3
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12, atol=0)
    if tracked.is_classifier:
        assert history["accuracy"] == expected["accuracy"]
    # tracking changes nothing in the training itself
    np.testing.assert_array_equal(tracked.get_flat(), replayed.get_flat())
    untracked = make(spec, seed=3)
    assert untracked.fit(X, Y, shuffle=shuffle, track=False)["loss"] == []
    np.testing.assert_array_equal(untracked.get_flat(), tracked.get_flat())


def test_tracked_history_of_a_second_fit_with_another_n_uses_fresh_rows():
    spec = make_spec(((4, "tanh"),), "softmax", "cross_entropy", inputs=3, outputs=3)
    X, Y = make_data("softmax", "cross_entropy", n=20, inputs=3, outputs=3, seed=1)
    model = make(spec, seed=0)
    model.fit(X, Y, epochs=1, batch_size=6)
    before = model.get_flat()
    h = model.fit(X[:9], Y[:9], epochs=1, batch_size=6, shuffle=False)
    check = make(spec, seed=0)
    check.set_flat(before)
    a = check.forward(X[:6])
    total = batch_loss("cross_entropy", a, Y[:6])
    check._init_optimizer()
    check._runner(6, 9, False)(X[:9], Y[:9], None, None, 0, 1)
    total += batch_loss("cross_entropy", check.forward(X[6:9]), Y[6:9])
    assert h["loss"] == pytest.approx([total / 9], rel=1e-12)


def _diverging(track: bool):
    spec = make_spec(
        ((6, "identity"),),
        "identity",
        "mse",
        inputs=3,
        outputs=2,
        optimizer={"name": "sgd", "learning_rate": 40.0, "batch_size": 3, "epochs": 1},
    )
    X, Y = make_data("identity", "mse", n=60, inputs=3, outputs=2, seed=2)
    return make(spec, seed=0), X, Y


def test_divergence_names_the_first_batch_and_restores_the_epochs_start():
    model, X, Y = _diverging(True)
    start = model.get_flat()
    # the replay: the first batch whose loss (before its update) is NaN or inf
    replayed, _, _ = _diverging(True)
    replayed.set_flat(start)
    replayed._init_optimizer()
    first = None
    with np.errstate(all="ignore"):
        for k in range(20):
            loss = batch_loss("mse", replayed.forward(X[3 * k : 3 * k + 3]), Y[3 * k : 3 * k + 3])
            if not np.isfinite(loss):
                first = (k + 1, loss)
                break
            replayed._runner(3, 60, False)(X, Y, None, None, 3 * k, 1)
    assert first is not None, "the learning rate no longer makes this spec diverge"
    with pytest.raises(FloatingPointError) as exc:
        model.fit(X, Y, epochs=1, shuffle=False)
    assert type(exc.value).__name__ == "DivergenceError"
    assert str(exc.value) == (
        f"training diverged in epoch 1, batch {first[0]}: the loss became {first[1]}; the "
        "learning rate (40.0) is probably too large. The parameters from the start of the "
        "epoch were kept."
    )
    np.testing.assert_array_equal(model.get_flat(), start)
    assert model.epochs_done == 0


def test_divergence_without_tracking_is_caught_once_per_epoch():
    model, X, Y = _diverging(False)
    start = model.get_flat()
    with pytest.raises(FloatingPointError) as exc:
        model.fit(X, Y, epochs=3, shuffle=False, track=False)
    assert re.fullmatch(
        r"training diverged in epoch 1, one of its 20 batches: a parameter became NaN or inf; "
        r"the learning rate \(40\.0\) is probably too large\. The parameters from the start of "
        r"the epoch were kept\.",
        str(exc.value),
    )
    np.testing.assert_array_equal(model.get_flat(), start)
