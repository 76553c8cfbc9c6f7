"""The ``symgrad`` command line: derive, generate, train, check, verify, predict, evaluate.

Every user error ends in one readable line on stderr and exit code 2 (1 for a failed check),
never a traceback.

Longer than 400 lines on purpose: one module holds every command so that the options, their
checks and the one-line error handling read together; each command delegates its work below.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ._version import __version__
from .errors import SymgradError
from .runtime.atomic import atomic_write_bytes, atomic_write_text

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
    html = "html"


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
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            help="latex, markdown, text, or html (one offline page: MathML, the generated code "
            "linked to its equations, a worked example, the network).",
        ),
    ] = Format.latex,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="Wrap the LaTeX in a compilable document.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE (atomically).")
    ] = None,
    notation: Annotated[
        str,
        typer.Option(
            "--notation",
            help="auto, symgrad, or seed002 (first the network traced node by node in seed "
            "002's letters: X_j, Y_j, W_ij, E; small networks). auto: seed002 for a node graph "
            "(graph: in the spec), symgrad otherwise.",
        ),
    ] = "auto",
) -> None:
    """Print the derivation of the gradients and Hessians of SPEC."""
    from .runtime.bounded import NOTATIONS, derivation_text

    if notation not in NOTATIONS:
        _fail(f"--notation must be one of {', '.join(NOTATIONS)}, not {notation!r}")
    if fmt is Format.html and notation == "seed002":
        _fail("--notation seed002 prints LaTeX, markdown or text, not --format html")
    if fmt is Format.html:
        from .printers.mathml import available

        if not available():
            _fail("--format html needs latex2mathml: pip install 'symgrad[html]'")
    # one time budget for deriving and printing ($SYMGRAD_TIME_BUDGET), and a size cap
    if fmt.value == "html":
        from .runtime.page import bounded_page

        text = bounded_page(_load(spec), spec_file=spec.as_posix())
    else:
        text = derivation_text(
            _load(spec),
            fmt.value,
            standalone=standalone,
            spec_file=spec.as_posix(),
            notation=notation,
        )
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)


@app.command()
def draw(
    spec: SpecArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the SVG to FILE (atomically).")
    ] = None,
) -> None:
    """Draw the network of SPEC as SVG (nodes and weights when small, layer boxes when large)."""
    from .printers.svg import network_svg

    svg = network_svg(_load(spec))
    if output is None:
        typer.echo(svg, nl=False)
    else:
        atomic_write_text(output, svg)
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
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="numpy, numba (the epoch's batch loop compiled; falls back to numpy with a "
            "notice where unsupported), or torch (PyTorch tensors on CPU or CUDA, no autograd; "
            "writes generated/<name>_torch.py by default).",
        ),
    ] = "numpy",
) -> None:
    """Write a standalone NumPy trainer module for SPEC."""
    from .runtime.bounded import module_source
    from .runtime.limits import check_model_memory
    from .runtime.loader import write_module

    if backend not in ("numpy", "numba", "torch"):
        typer.echo(f"--backend must be numpy, numba or torch, not {backend!r}", err=True)
        raise typer.Exit(2)
    s = _load(spec)
    check_model_memory(s)  # the module allocates its parameters' layout when imported
    if backend == "torch":
        import importlib.util

        from .codegen.torch_backend import torch_source

        source = torch_source(s, spec_file=spec.as_posix())  # SpecError: what it refuses
        if importlib.util.find_spec("torch") is None:
            typer.echo("notice: torch is not installed: the module needs it to run", err=True)
    elif backend == "numba":
        from .codegen.numba_backend import numba_source

        source, notice = numba_source(s, spec_file=spec.as_posix())
        if notice:
            typer.echo(f"notice: {notice}", err=True)
    else:
        source = module_source(s, spec_file=spec.as_posix())
    target = output or Path("generated") / f"{s.name}{'_torch' if backend == 'torch' else ''}.py"
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


def _data(
    spec,
    source: str,
    targets: list[str] | None,
    limit: int | None = None,
    classes: list[str] | None = None,
    max_bytes: int | None = None,
):
    from .data import DEFAULT_MAX_BYTES, load_data

    return load_data(
        source,
        n_inputs=spec.inputs,
        n_outputs=spec.outputs,
        targets=targets or None,
        dtype=np.dtype(spec.dtype),
        limit=limit,
        classes=classes if spec.is_classifier else None,
        max_bytes=max_bytes or DEFAULT_MAX_BYTES,
    )


MaxBytesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-data-bytes",
        min=1,
        help="Refuse a data file larger than this many bytes once decompressed "
        "[symgrad.data.DEFAULT_MAX_BYTES: 1 GiB].",
        show_default=False,
    ),
]

ClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Class labels in output order, comma-separated (a,b,c) [the training data's, as "
        "saved with the model].",
        show_default=False,
    ),
]


ReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Write (or add to) an HTML page: the derivation, the code, the training curve and "
        "the confusion matrix.",
        show_default=False,
    ),
]


def _parse_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [c.strip() for c in text.split(",")]
    if len(items) < 2 or not all(items):
        _fail(f"--classes {text!r}: expected two or more labels separated by commas, e.g. a,b,c")
    return items


def _check_output(option: str, path: Path) -> None:
    """Refuse, before any work, an output whose folder is missing or not writable."""
    folder = path.parent
    if path.name in ("", ".", ".."):
        _fail(f"{option} {path}: expected a file name")
    if path.is_dir():
        _fail(f"{option} {path}: is a folder, expected a file name")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        _fail(f"{option} {path}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        _fail(f"{option} {path}: cannot write in the folder {folder}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _load_model(model, path: Path, what: str = "model") -> None:
    """``model.load(path)``, every failure as one line and exit 2."""
    if not path.exists():
        _fail(f"{path}: no such {what} file")
    if path.is_dir():
        _fail(f"{path}: is a folder, expected a {what} file")
    try:
        model.load(path)
    except (ValueError, OSError) as exc:
        _fail(_one_line(exc))


def _save_model(model, path: Path, extras: dict) -> None:
    """``model.save(path, extras)`` (atomic, mode kept), failures as one line and exit 2."""
    try:
        model.save(path, extras=extras)
    except (ValueError, OSError) as exc:
        _fail(f"cannot write {path}: {_one_line(exc)}")


def _stats(spec, extras: dict | None, path: Path):
    """The input standardisation ``(mean, scale)`` saved in a model file, or None."""
    extras = extras or {}
    if ("x_mean" in extras) != ("x_scale" in extras):
        _fail(f"{path}: extra_x_mean and extra_x_scale come together; the file has one of them")
    if "x_mean" not in extras:
        return None
    mean, scale = np.asarray(extras["x_mean"]), np.asarray(extras["x_scale"])
    for name, value in (("x_mean", mean), ("x_scale", scale)):
        if value.shape != (spec.inputs,) or value.dtype.kind != "f":
            _fail(
                f"{path}: extra_{name} must hold {spec.inputs} floats, found {value.dtype} "
                f"of shape {value.shape}"
            )
    if not (scale > 0).all():
        _fail(f"{path}: extra_x_scale must be > 0")
    return mean, scale


def _standardize(X: np.ndarray, stats) -> np.ndarray:
    if stats is None:
        return X
    mean, scale = stats
    return ((X - mean) / scale).astype(X.dtype, copy=False)


def _saved_classes(spec, extras: dict | None, path: Path) -> list[str] | None:
    """The class labels saved with a model (``extra_classes``), or None."""
    value = (extras or {}).get("classes")
    if value is None:
        return None
    value = np.asarray(value)
    expected = 2 if spec.outputs == 1 else spec.outputs
    if value.dtype.kind != "U" or value.shape != (expected,):
        _fail(f"{path}: extra_classes must hold {expected} labels, found {value.shape}")
    return [str(c) for c in value.tolist()]


def _classes_for(spec, given: list[str] | None, saved: list[str] | None, path: Path):
    if given is not None and saved is not None and given != saved:
        _fail(
            f"--classes {','.join(given)} differs from the classes saved in {path} "
            f"({','.join(saved)})"
        )
    return given if given is not None else saved


@contextlib.contextmanager
def _checkpoint_lock(ckpt: Path) -> Iterator[None]:
    """Hold ``<checkpoint>.lock`` (flock) while training: a second run is refused."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    lock = Path(f"{ckpt}.lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock, flags, 0o666)
    except OSError as exc:
        _fail(f"cannot open the lock file {lock}: {exc.strerror}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _fail(
                f"another symgrad train is using the checkpoint {ckpt} (it holds {lock}); "
                "wait for it to finish or pass another --checkpoint"
            )
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends: a checkpoint and its count agree."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Stop(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stop()


#: Figure formats matplotlib writes out of the box (--plot's suffix).
_PLOT_FORMATS = ("eps", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg", "svgz")
_PLOT_FORMATS += ("tif", "tiff", "webp")


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
    out: Annotated[
        Path, typer.Option("--out", help="Where to save the trained model (that exact name).")
    ] = Path("model.npz"),
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Checkpoint file [OUT.ckpt.npz], saved after every epoch; CHECKPOINT.lock "
            "keeps a second run off it.",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a loss/accuracy curve (matplotlib).")
    ] = None,
    report: ReportOpt = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="CSV target column (repeatable).")
    ] = None,
    classes: ClassesOpt = None,
    max_data_bytes: MaxBytesOpt = None,
    standardize: Annotated[
        bool | None,
        typer.Option(
            "--standardize/--no-standardize",
            help="Standardise the inputs with the training data's mean and standard deviation "
            "(saved with the model) [the spec's preprocess.standardize].",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Use the first N samples.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Plain lines, no progress bar.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="numpy, numba (each epoch's batch loop compiled; the NumPy trainer with a "
            "notice where unsupported), or torch (PyTorch tensors on the CPU, no autograd).",
        ),
    ] = "numpy",
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Train full-batch (gd, newton) on a Dask cluster: 'local' (2 worker processes "
            "here) or a scheduler address tcp://HOST:8786 [needs symgrad[cluster]].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate (or reuse) the trainer for SPEC and train it on DATA."""
    from .runtime.loader import load_trainer

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _fail("--plot needs matplotlib: pip install 'symgrad[plot]'")
        if plot.suffix[1:].lower() not in _PLOT_FORMATS:
            _fail(f"--plot {plot}: name a figure file ending in .{', .'.join(_PLOT_FORMATS)}")
    ckpt = checkpoint or Path(f"{out}.ckpt.npz")
    outputs = (("--out", out), ("--checkpoint", ckpt), ("--plot", plot), ("--report", report))
    for option, path in outputs:
        if path is not None:
            _check_output(option, path)
    given_classes = _parse_classes(classes)
    s = _load(spec)
    if cluster is not None:  # full-batch iterations over a Dask cluster: symgrad.runtime.cluster
        from .runtime.cluster import train_command

        with _checkpoint_lock(ckpt):
            train_command(
                s,
                data,
                cluster=cluster,
                epochs=epochs,
                batch_size=batch_size,
                out=out,
                checkpoint=ckpt,
                resume=resume,
                val=val,
                target=target,
                limit=limit,
                classes=given_classes,
                standardize=standardize,
                plot=plot,
                plot_fn=_plot,
            )
        return
    if backend not in ("numpy", "numba", "torch"):
        _fail(f"--backend must be numpy, numba or torch, not {backend!r}")
    with _checkpoint_lock(ckpt):  # held until the model is saved
        model = load_trainer(s, backend=backend)
        extras: dict = {}
        want = s.preprocess.standardize if standardize is None else standardize
        if resume:
            if not ckpt.exists():
                _fail(f"--resume: no checkpoint at {ckpt}")
            _load_model(model, ckpt, "checkpoint")
            extras = dict(model.extras or {})
            stats = _stats(s, extras, ckpt)
            if want != (stats is not None):
                flag = "--standardize" if stats else "--no-standardize"
                _fail(
                    f"--resume: {ckpt} was trained {'with' if stats else 'without'} standardised "
                    f"inputs; resume with the same setting ({flag} or the spec's "
                    "preprocess.standardize)"
                )
            given_classes = _classes_for(s, given_classes, _saved_classes(s, extras, ckpt), ckpt)
        train_set = _data(s, data, target, limit, given_classes, max_data_bytes)
        if s.is_classifier and train_set.classes is not None:
            given_classes = [str(c) for c in train_set.classes]
            extras["classes"] = np.array(given_classes)
        val_set = _data(s, val, target, None, given_classes, max_data_bytes) if val else None
        if want and not resume:
            X = train_set.X.astype(np.float64)
            scale = X.std(axis=0)
            scale[~(scale > 0)] = 1.0  # a constant feature is only centred
            extras["x_mean"], extras["x_scale"] = X.mean(axis=0), scale
        stats = _stats(s, extras, ckpt)
        X_train = _standardize(train_set.X, stats)
        X_val = None if val_set is None else _standardize(val_set.X, stats)
        total = epochs or s.optimizer.epochs
        model.epochs = total  # recorded in the saved files' training settings
        if batch_size is not None:
            model.batch_size = batch_size
        from .runtime.limits import check_training_memory

        check_training_memory(s, len(X_train), batch_size)  # before fit allocates its buffers
        start = model.epochs_done
        remaining = total - start
        if remaining <= 0:
            _save_model(model, out, extras)
            typer.echo(
                f"already trained for {start} epochs (checkpoint {ckpt}); model saved to {out}"
            )
            return
        saved = start if resume else None  # epochs the checkpoint on disk holds
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
            task = progress.add_task("train", total=total, completed=start, info="")
            progress.start()

        def callback(epoch, history):
            nonlocal saved
            with _signals_deferred():  # an interrupt waits until the count is recorded
                _save_model(model, ckpt, extras)  # atomic: a new temporary file, renamed
                saved = epoch
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
                X_train,
                train_set.Y,
                epochs=remaining,
                batch_size=batch_size,
                X_val=X_val,
                Y_val=None if val_set is None else val_set.Y,
                callback=callback,
            )
        except (KeyboardInterrupt, _Stop):
            if progress is not None:
                progress.stop()
            if saved is None:
                typer.echo(
                    f"interrupted in epoch {model.epochs_done + 1}, before the first checkpoint: "
                    "nothing was saved",
                    err=True,
                )
            else:
                typer.echo(
                    f"interrupted after {saved} epochs; the checkpoint {ckpt} holds them: "
                    "continue with --resume",
                    err=True,
                )
            raise typer.Exit(130) from None
        except FloatingPointError as exc:  # the generated DivergenceError
            if progress is not None:
                progress.stop()
            where = f"checkpoint {ckpt} ({saved} epochs)" if saved is not None else "no checkpoint"
            _fail(f"{_one_line(exc)} Kept: {where}", 1)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if progress is not None:
            progress.stop()
        _save_model(model, out, extras)
        elapsed = time.perf_counter() - started
        done = model.epochs_done - start
        typer.echo(f"trained {done} epochs in {elapsed:.2f}s; model saved to {out}")
        if plot is not None and history is not None:
            _plot(history, plot)
            typer.echo(f"wrote {plot}")
        if report is not None and history is not None:
            _report(report, s, spec, data, history=history)


def _report(path: Path, s, spec_path: Path, data: str, **results) -> None:
    """Write the HTML report at ``path``, keeping what a page there for the same spec shows."""
    from .printers.html import Results
    from .printers.mathml import available
    from .runtime.page import write_report

    if not available():
        _fail("--report needs latex2mathml: pip install 'symgrad[html]'")
    _check_output("--report", path)
    metrics = {k: float(v) for k, v in results.pop("metrics", {}).items()}
    write_report(path, s, Results(data=data, metrics=metrics, **results), spec_path.as_posix())
    typer.echo(f"wrote {path}", err=True)


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
    buffer = io.BytesIO()  # rendered in memory, then written atomically (never via a tmp name)
    fig.savefig(buffer, format=path.suffix[1:].lower())
    plt.close(fig)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        _fail(f"cannot write {path}: {_one_line(exc)}")


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


@app.command()
def verify(
    spec: SpecArg,
    seed: Annotated[int, typer.Option("--seed", help="Seed of parameters, data, direction.")] = 0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Samples of the random batch.")] = 5,
    notation: Annotated[
        str,
        typer.Option("--notation", help="auto, symgrad, or seed002 (as derive --notation)."),
    ] = "auto",
) -> None:
    """Evaluate every equation of the derivation on numbers; exit 1 when one disagrees."""
    from .runtime.bounded import NOTATIONS
    from .runtime.verify import verify as run_verify

    if notation not in NOTATIONS:
        _fail(f"--notation must be one of {', '.join(NOTATIONS)}, not {notation!r}")
    report = run_verify(_load(spec), seed=seed, batch=batch, notation=notation)
    typer.echo(report.table())
    if not report.ok:
        names = ", ".join(sorted({r.key for r in report.failures}))
        typer.echo(f"FAILED: {len(report.failures)} rows ({names})", err=True)
        raise typer.Exit(1)


def _trained(spec: Path, model_path: Path, classes: str | None, data: str, target, max_bytes=None):
    """The spec, the loaded model and DATA, standardised and encoded as the model was trained."""
    from .runtime.loader import load_trainer

    given = _parse_classes(classes)
    s = _load(spec)
    model = load_trainer(s)
    _load_model(model, model_path)
    stats = _stats(s, model.extras, model_path)
    saved = _saved_classes(s, model.extras, model_path)
    ds = _data(s, data, target, None, _classes_for(s, given, saved, model_path), max_bytes)
    return s, model, ds, _standardize(ds.X, stats)


@app.command()
def predict(
    spec: SpecArg,
    model: Annotated[Path, typer.Option("--model", help="A model saved by train.")],
    data: Annotated[str, typer.Option("--data", help="Inputs (targets, if present, are ignored).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV to write.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target")] = None,
    classes: ClassesOpt = None,
    max_data_bytes: MaxBytesOpt = None,
) -> None:
    """Print (or write as CSV) the model's predictions for DATA."""
    if output is not None:
        _check_output("--output", output)
    s, m, ds, X = _trained(spec, model, classes, data, target, max_data_bytes)
    pred = m.predict(X)
    pred = pred.reshape(len(X), -1)
    lines = [
        ",".join(f"{v:.10g}" if isinstance(v, float) else str(v) for v in row.tolist())
        for row in pred
    ]
    header = "prediction" if pred.shape[1] == 1 else ",".join(f"y{j}" for j in range(pred.shape[1]))
    text = "\n".join([header] + lines) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        _fail(f"cannot write {output}: {_one_line(exc)}")
    typer.echo(f"wrote {len(lines)} predictions to {output}", err=True)


def _describe_training(m, path: Path) -> str:
    """One line on how a saved model was trained (its recorded settings)."""
    opt = (m.training or {}).get("optimizer")
    text = f"{path}: {m.epochs_done} epochs"
    if isinstance(opt, dict):
        batch = opt.get("batch_size") or "whole set"
        text += f" of {opt.get('name')} (learning rate {opt.get('learning_rate')}, batch {batch})"
    if "x_mean" in (m.extras or {}):
        text += "; inputs standardised with the training data's mean and scale"
    return text


@app.command()
def evaluate(
    spec: SpecArg,
    model: Annotated[Path, typer.Option("--model", help="A model saved by train.")],
    data: Annotated[str, typer.Option("--data", help="Data with targets.")],
    target: Annotated[list[str] | None, typer.Option("--target")] = None,
    classes: ClassesOpt = None,
    max_data_bytes: MaxBytesOpt = None,
    report: ReportOpt = None,
) -> None:
    """Loss (and accuracy and confusion matrix for classifiers) of a trained model on DATA."""
    s, m, ds, X = _trained(spec, model, classes, data, target, max_data_bytes)
    typer.echo(f"model    {_describe_training(m, model)}")
    typer.echo(f"samples  {len(X)}")
    typer.echo(f"loss     {m.loss(X, ds.Y):.6g}")
    if not s.is_classifier:
        typer.echo(f"R^2      {m.score(X, ds.Y):.6g}")
        if report is not None:
            _report(
                report, s, spec, data, metrics={"loss": m.loss(X, ds.Y), "R^2": m.score(X, ds.Y)}
            )
        return
    typer.echo(f"accuracy {m.score(X, ds.Y):.6g}")
    pred = np.asarray(m.predict(X)).ravel()
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
    if report is not None:
        metrics = {"loss": m.loss(X, ds.Y), "accuracy": m.score(X, ds.Y)}
        _report(report, s, spec, data, metrics=metrics, confusion=cm.tolist(), labels=labels)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of command-line mistakes (Typer bundles Click; older Typers use
    Click itself, which is then installed)."""
    found: list[type[BaseException]] = []
    for module, name in (("typer", "TyperException"), ("click", "ClickException")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; a user error gives one line (or the usage) and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="symgrad")
        if isinstance(code, int):
            return code
    except typer.Exit as exc:
        return exc.exit_code
    except SymgradError as exc:
        typer.echo(f"symgrad: error: {exc}", err=True)
        return EXIT_USAGE
    except typer.Abort:
        typer.echo("symgrad: error: aborted", err=True)
        return EXIT_USAGE
    except Exception as exc:
        if isinstance(exc, _usage_errors()):
            # no arguments, an unknown command or option, a bad value: the usage and the error
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            else:  # pragma: no cover - every Click exception has show()
                typer.echo(f"symgrad: error: {exc}", err=True)
            return EXIT_USAGE
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
