"""Fashion-MNIST: symgrad's generated trainers against scikit-learn's MLPClassifier.

    python benchmarks/fashion_mnist.py                  # full size: 60000 train, 10000 test
    python benchmarks/fashion_mnist.py --epochs 2 --limit 5000   # a quick run
    python benchmarks/fashion_mnist.py --epochs-textbook 2 --epochs-strong 6

Two networks, each trained by symgrad and by ``sklearn.neural_network.MLPClassifier`` with the
same hidden layers for the same number of epochs:

* textbook: ``examples/mnist_textbook.yaml``, [784, 30, 10] sigmoid, quadratic cost, plain SGD
  (eta 3.0, mini-batch 10); scikit-learn: ``hidden_layer_sizes=(30,)``, logistic, sgd with
  ``learning_rate_init=0.1`` (no momentum), mini-batch 10 (its output layer is softmax with the
  log loss: its only choice for classification);
* strong: ``examples/fashion_mlp.yaml``, [784, 256, 128, 10] relu/softmax, cross-entropy, Adam
  (lr 1e-3, mini-batch 128, float32); scikit-learn: ``(256, 128)``, relu, adam, lr 1e-3,
  mini-batch 128.
* residual (symgrad only, compared with scikit-learn's best row of the same run, the strong one):
  ``examples/fashion_residual.yaml``, a 256-unit stem, one residual block added back to it, the
  softmax output; xavier initialisation, L2 lambda = 6, Adam lr 7e-4, mini-batch 256, float32, the
  spec's epochs. The run ends with a line comparing it with that row (accuracy and time).

No L2 penalty on either side of textbook and strong (the residual spec has its own), no early
stopping; the data are the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), pixels scaled to [0, 1] for
every model (no standardisation on either side: ``preprocess.standardize`` is a CLI setting, and
``load_trainer``/``fit`` here see the same arrays as scikit-learn).
Times are wall-clock seconds of training only (symgrad's trainer generation is listed apart).
Prints a Markdown table and writes it to ``benchmarks/results/fashion_mnist.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import symgrad  # noqa: E402
from symgrad.data import load_data  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
RESULTS = ROOT / "benchmarks" / "results" / "fashion_mnist.md"
NETWORKS = {
    "textbook": {
        "spec": ROOT / "examples" / "mnist_textbook.yaml",
        "sklearn": {
            "hidden_layer_sizes": (30,),
            "activation": "logistic",
            "solver": "sgd",
            "learning_rate_init": 0.1,
            "momentum": 0.0,
            "batch_size": 10,
        },
        "sklearn_note": "(30,) logistic, sgd lr 0.1, batch 10",
    },
    "strong": {
        "spec": ROOT / "examples" / "fashion_mlp.yaml",
        "sklearn": {
            "hidden_layer_sizes": (256, 128),
            "activation": "relu",
            "solver": "adam",
            "learning_rate_init": 1e-3,
            "batch_size": 128,
        },
        "sklearn_note": "(256, 128) relu, adam lr 1e-3, batch 128",
    },
    # issue 12: a residual MLP against scikit-learn's best configuration above (the "strong"
    # row of the same run; run with --networks strong residual)
    "residual": {
        "spec": ROOT / "examples" / "fashion_residual.yaml",
        "sklearn": None,
    },
}


def _present() -> bool:
    return all(
        any((DATA / f"{p}-{k}-idx{d}-ubyte{z}").exists() for z in ("", ".gz"))
        for p in ("train", "t10k")
        for k, d in (("images", 3), ("labels", 1))
    )


def _load(spec, limit):
    kw = {"n_inputs": spec.inputs, "n_outputs": spec.outputs, "dtype": np.dtype(spec.dtype)}
    train = load_data(f"idx:{DATA / 'train'}", limit=limit, **kw)
    test = load_data(f"idx:{DATA / 't10k'}", limit=min(limit, 10000) if limit else None, **kw)
    return train, test


def run_symgrad(spec, train, test, epochs):
    started = time.perf_counter()
    model = symgrad.load_trainer(spec)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    model.fit(train.X, train.Y, epochs=epochs)
    elapsed = time.perf_counter() - started
    return model.score(test.X, test.Y), elapsed, generated


def run_sklearn(params, train, test, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        **params,
        alpha=0.0,
        max_iter=epochs,
        shuffle=True,
        random_state=0,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        early_stopping=False,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train.X, train.labels)
    elapsed = time.perf_counter() - started
    return float(np.mean(clf.predict(test.X) == test.labels)), elapsed


def _verdict(results) -> str | None:
    """The residual row against scikit-learn's most accurate row of the run (issue 12's target:
    at least its accuracy in less time), or None without both."""
    ours = results.get("symgrad residual")
    theirs = {k: v for k, v in results.items() if k.startswith("sklearn")}
    if ours is None or not theirs:
        return None
    best = max(theirs, key=lambda k: theirs[k][0])
    (acc, secs), (ref_acc, ref_secs) = ours, theirs[best]
    met = acc >= ref_acc and secs < ref_secs
    return (
        f"symgrad residual against {best} (the run's most accurate scikit-learn row): accuracy "
        f"{acc:.4f} vs {ref_acc:.4f} ({acc - ref_acc:+.4f}), time {secs:.1f}s vs {ref_secs:.1f}s "
        f"({secs / ref_secs:.2f}x): target {'met' if met else 'missed'}."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs for every model (default: each spec's, 30, 15 and 16)",
    )
    parser.add_argument("--epochs-textbook", type=int, default=None, help="override for textbook")
    parser.add_argument("--epochs-strong", type=int, default=None, help="override for strong")
    parser.add_argument("--epochs-residual", type=int, default=None, help="override for residual")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use the first N training (and at most N test) samples",
    )
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown file to write")
    args = parser.parse_args(argv)
    if not _present():
        print(
            f"Fashion-MNIST is not installed in {DATA}; on Debian/Ubuntu: "
            "sudo apt-get install dataset-fashion-mnist"
        )
        return 0
    with_sklearn = not args.no_sklearn
    if with_sklearn:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            print("scikit-learn is not installed (pip install scikit-learn): symgrad only")
            with_sklearn = False
    rows = []
    results = {}  # row label -> (accuracy, seconds)
    n_train = n_test = 0
    for name in args.networks:
        net = NETWORKS[name]
        spec = symgrad.load_spec(net["spec"])
        epochs = getattr(args, f"epochs_{name}", None) or args.epochs or spec.optimizer.epochs
        train, test = _load(spec, args.limit)
        n_train, n_test = len(train.X), len(test.X)
        acc, secs, gen = run_symgrad(spec, train, test, epochs)
        rows.append(
            (
                f"symgrad {name}",
                f"{spec.sizes}, {spec.dtype}",
                epochs,
                acc,
                secs,
                f"trainer generated in {gen:.2f}s",
            )
        )
        results[f"symgrad {name}"] = (acc, secs)
        print(f"symgrad {name}: accuracy {acc:.4f}, {secs:.1f}s", flush=True)
        if with_sklearn and net["sklearn"] is not None:
            acc, secs = run_sklearn(net["sklearn"], train, test, epochs)
            rows.append(
                (
                    f"sklearn MLPClassifier {name}",
                    net["sklearn_note"],
                    epochs,
                    acc,
                    secs,
                    f"{np.dtype(spec.dtype)} input",
                )
            )
            results[f"sklearn MLPClassifier {name}"] = (acc, secs)
            print(f"sklearn {name}: accuracy {acc:.4f}, {secs:.1f}s", flush=True)
    lines = [
        f"Fashion-MNIST, {n_train} training and {n_test} test samples; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, NumPy {np.__version__}.",
        "",
        "| model | network | epochs | test accuracy | training time (s) | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [f"| {m} | {n} | {e} | {a:.4f} | {s:.1f} | {note} |" for m, n, e, a, s, note in rows]
    verdict = _verdict(results)
    if verdict:
        lines += ["", verdict]
    table = "\n".join(lines) + "\n"
    print()
    print(table, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table, encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
