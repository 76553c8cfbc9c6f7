"""The ``symgrad`` command line: derive, generate, train, check, predict, evaluate.

Every user error ends in one readable line on stderr and exit code 2 (1 for a failed check),
never a traceback.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ._version import __version__
from .errors import SymgradError
from .runtime.atomic import atomic_write_text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SymPy-derived gradients and Hessians as LaTeX, and fast NumPy trainers, from YAML.",
    pretty_exceptions_enable=False,
)

EXIT_USAGE = 2


class Format(str, Enum):
    latex = "latex"
    markdown = "markdown"
    text = "text"


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"symgrad: error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"symgrad {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """symgrad: derive, generate, train and check models described in YAML."""


SpecArg = Annotated[Path, typer.Argument(help="The model spec (YAML).", show_default=False)]


def _load(spec_path: Path):
    from .spec import load_spec

    return load_spec(spec_path)


@app.command()
def derive(
    spec: SpecArg,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="latex, markdown or text.")] = (
        Format.latex
    ),
    standalone: Annotated[
        bool, typer.Option("--standalone", help="Wrap the LaTeX in a compilable document.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE (atomically).")
    ] = None,
) -> None:
    """Print the derivation of the gradients and Hessians of SPEC."""
    from .derivation import derive as derive_
    from .printers.latex import render

    text = render(derive_(_load(spec)), fmt.value, standalone=standalone)
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)


@app.command()
def generate(
    spec: SpecArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the module [generated/<name>.py]."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Do not write; exit 1 with a diff if the file is stale."),
    ] = False,
) -> None:
    """Write a standalone NumPy trainer module for SPEC."""
    from .codegen import generate_source
    from .runtime.loader import write_module

    s = _load(spec)
    source = generate_source(s, spec_file=spec.as_posix())
    target = output or Path("generated") / f"{s.name}.py"
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == source:
            typer.echo(f"{target} is up to date")
            return
        diff = difflib.unified_diff(
            current.splitlines(True), source.splitlines(True), str(target), "regenerated"
        )
        sys.stdout.writelines(list(diff)[:200])
        typer.echo(
            f"{target} differs from what {spec} generates; refresh it with: "
            f"symgrad generate {spec} -o {target}",
            err=True,
        )
        raise typer.Exit(1)
    write_module(source, target)
    typer.echo(f"wrote {target} (class {s.class_name}, {s.n_params} parameters)")


def _data(spec, source: str, targets: list[str] | None, limit: int | None = None):
    from .data import load_data

    return load_data(
        source,
        n_inputs=spec.inputs,
        n_outputs=spec.outputs,
        targets=targets or None,
        dtype=np.dtype(spec.dtype),
        limit=limit,
    )


class _Stop(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stop()


@app.command()
def train(
    spec: SpecArg,
    data: Annotated[
        str, typer.Option("--data", help="Training data: CSV, .npz, idx:PREFIX, .pkl.gz.")
    ],
    val: Annotated[str | None, typer.Option("--val", help="Validation data.")] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Override the spec.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Override the spec.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to save the trained model.")] = Path(
        "model.npz"
    ),
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Checkpoint file [OUT.ckpt.npz].")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a loss/accuracy curve (matplotlib).")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="CSV target column (repeatable).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Use the first N samples.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain lines, no progress bar.")
    ] = False,
) -> None:
    """Generate (or reuse) the trainer for SPEC and train it on DATA."""
    from .runtime.loader import load_trainer

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _fail("--plot needs matplotlib: pip install 'symgrad[plot]'")
    s = _load(spec)
    train_set = _data(s, data, target, limit)
    val_set = _data(s, val, target) if val else None
    model = load_trainer(s)
    ckpt = checkpoint or Path(str(out) + ".ckpt.npz")
    if resume:
        if not ckpt.exists():
            _fail(f"--resume: no checkpoint at {ckpt}")
        try:
            model.load(ckpt)
        except ValueError as exc:
            _fail(str(exc))
    total = epochs or s.optimizer.epochs
    remaining = total - model.epochs_done
    if remaining <= 0:
        typer.echo(f"already trained for {model.epochs_done} epochs (checkpoint {ckpt})")
        model.save(out)
        return
    fancy = not quiet and sys.stdout.isatty()
    started = time.perf_counter()
    progress = None
    task = None
    if fancy:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("epoch {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        task = progress.add_task("train", total=total, completed=model.epochs_done, info="")
        progress.start()

    def callback(epoch, history):
        model.save(ckpt)  # atomic: a temporary file renamed into place
        info = f"loss {history['loss'][-1]:.5g}"
        if "accuracy" in history:
            info += f" acc {history['accuracy'][-1]:.4f}"
        if "val_loss" in history:
            info += f" val_loss {history['val_loss'][-1]:.5g}"
        if "val_accuracy" in history:
            info += f" val_acc {history['val_accuracy'][-1]:.4f}"
        if progress is not None:
            progress.update(task, completed=epoch, info=info)
        else:
            elapsed = time.perf_counter() - started
            typer.echo(f"epoch {epoch}/{total} {info} ({elapsed:.1f}s)")

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    history = None
    try:
        history = model.fit(
            train_set.X,
            train_set.Y,
            epochs=remaining,
            batch_size=batch_size,
            X_val=None if val_set is None else val_set.X,
            Y_val=None if val_set is None else val_set.Y,
            callback=callback,
        )
    except (KeyboardInterrupt, _Stop):
        if progress is not None:
            progress.stop()
        typer.echo(
            f"interrupted after {model.epochs_done} epochs; the checkpoint {ckpt} is intact: "
            f"continue with --resume",
            err=True,
        )
        raise typer.Exit(130) from None
    except FloatingPointError as exc:  # the generated DivergenceError
        if progress is not None:
            progress.stop()
        _fail(f"{exc} Checkpoint: {ckpt}", 1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if progress is not None:
        progress.stop()
    saved = model.save(out)
    elapsed = time.perf_counter() - started
    typer.echo(f"trained {remaining} epochs in {elapsed:.2f}s; model saved to {saved}")
    if plot is not None and history is not None:
        _plot(history, plot)
        typer.echo(f"wrote {plot}")


def _plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["loss"], label="loss")
    if "val_loss" in history:
        ax.plot(history["val_loss"], label="val_loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    if "accuracy" in history:
        ax2 = ax.twinx()
        ax2.plot(history["accuracy"], "g--", label="accuracy")
        if "val_accuracy" in history:
            ax2.plot(history["val_accuracy"], "r--", label="val_accuracy")
        ax2.set_ylabel("accuracy")
    ax.legend(loc="upper right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp)
    os.replace(tmp, path)
    plt.close(fig)


@app.command()
def check(
    spec: SpecArg,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Random samples to use.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random data.")] = 0,
    no_hessian: Annotated[bool, typer.Option("--no-hessian", help="Gradients only.")] = False,
    grad_tol: Annotated[float, typer.Option("--grad-tol")] = 1e-6,
    hess_tol: Annotated[float, typer.Option("--hess-tol")] = 1e-5,
) -> None:
    """Check the generated trainer's gradient and Hessian against central differences."""
    from rich.console import Console
    from rich.table import Table

    from .runtime.fdcheck import check as fd_check
    from .runtime.loader import load_trainer
    from .spec import MAX_HESSIAN_PARAMS

    s = _load(spec)
    model = load_trainer(s, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, s.inputs))
    if s.is_classifier:
        if s.outputs == 1:
            Y = (rng.random((samples, 1)) > 0.5).astype(float)
        else:
            Y = np.eye(s.outputs)[rng.integers(0, s.outputs, samples)]
    else:
        Y = rng.standard_normal((samples, s.outputs))
    with_h = not no_hessian and s.n_params <= min(MAX_HESSIAN_PARAMS, 2000)
    results = fd_check(model, X, Y, hessian=with_h)
    table = Table(title=f"finite-difference check of {s.name} ({s.n_params} parameters)")
    for col in ("block", "size", "grad max abs", "grad rel", "hess max abs", "hess rel", "ok"):
        table.add_column(col)
    ok_all = True
    for r in results:
        ok = r.passed(grad_tol, hess_tol)
        ok_all &= ok
        table.add_row(
            r.block,
            str(r.size),
            f"{r.grad_abs:.2e}",
            f"{r.grad_rel:.2e}",
            "-" if r.hess_abs is None else f"{r.hess_abs:.2e}",
            "-" if r.hess_rel is None else f"{r.hess_rel:.2e}",
            "yes" if ok else "NO",
        )
    Console(width=120).print(table)
    if not with_h and not no_hessian:
        typer.echo("Hessian not checked: too many parameters for finite differences")
    if not ok_all:
        typer.echo(f"FAILED: tolerance grad {grad_tol:g}, hessian {hess_tol:g}", err=True)
        raise typer.Exit(1)
    typer.echo("all blocks pass")


def _trained(spec: Path, model_path: Path):
    from .runtime.loader import load_trainer

    s = _load(spec)
    model = load_trainer(s)
    if not model_path.exists():
        _fail(f"{model_path}: no such model file")
    try:
        model.load(model_path)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    return s, model


@app.command()
def predict(
    spec: SpecArg,
    model: Annotated[Path, typer.Option("--model", help="A model saved by train.")],
    data: Annotated[str, typer.Option("--data", help="Inputs (targets, if present, are ignored).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target")] = None,
) -> None:
    """Print (or write as CSV) the model's predictions for DATA."""
    s, m = _trained(spec, model)
    ds = _data(s, data, target)
    pred = m.predict(ds.X)
    pred = pred.reshape(len(ds.X), -1)
    lines = [
        ",".join(f"{v:.10g}" if isinstance(v, float) else str(v) for v in row.tolist())
        for row in pred
    ]
    text = (
        "\n".join(
            [
                "prediction"
                if pred.shape[1] == 1
                else ",".join(f"y{j}" for j in range(pred.shape[1]))
            ]
            + lines
        )
        + "\n"
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        typer.echo(f"wrote {len(lines)} predictions to {output}", err=True)


@app.command()
def evaluate(
    spec: SpecArg,
    model: Annotated[Path, typer.Option("--model", help="A model saved by train.")],
    data: Annotated[str, typer.Option("--data", help="Data with targets.")],
    target: Annotated[list[str] | None, typer.Option("--target")] = None,
) -> None:
    """Loss (and accuracy and confusion matrix for classifiers) of a trained model on DATA."""
    s, m = _trained(spec, model)
    ds = _data(s, data, target)
    typer.echo(f"samples  {len(ds.X)}")
    typer.echo(f"loss     {m.loss(ds.X, ds.Y):.6g}")
    if not s.is_classifier:
        typer.echo(f"R^2      {m.score(ds.X, ds.Y):.6g}")
        return
    typer.echo(f"accuracy {m.score(ds.X, ds.Y):.6g}")
    pred = np.asarray(m.predict(ds.X)).ravel()
    truth = (ds.Y[:, 0] > 0.5).astype(int) if s.outputs == 1 else np.argmax(ds.Y, axis=1)
    k = max(2, s.outputs)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (truth, pred), 1)
    labels = [str(c) for c in (ds.classes or range(k))]
    width = max(6, *(len(x) for x in labels))
    typer.echo("confusion matrix (rows: true, columns: predicted)")
    typer.echo(" " * width + "".join(f" {x:>{width}}" for x in labels))
    for i, row in enumerate(cm):
        typer.echo(f"{labels[i]:>{width}}" + "".join(f" {v:>{width}}" for v in row))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn user errors into one line and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int):
            return code
    except typer.Exit as exc:
        return exc.exit_code
    except SymgradError as exc:
        typer.echo(f"symgrad: error: {exc}", err=True)
        return EXIT_USAGE
    except (typer.BadParameter, typer.Abort) as exc:  # pragma: no cover - click handles most
        typer.echo(f"symgrad: error: {exc}", err=True)
        return EXIT_USAGE
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if os.environ.get("SYMGRAD_DEBUG"):
            raise
        typer.echo(
            f"symgrad: internal error: {type(exc).__name__}: {exc} (set SYMGRAD_DEBUG=1 for the "
            "traceback, and please report it)",
            err=True,
        )
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
