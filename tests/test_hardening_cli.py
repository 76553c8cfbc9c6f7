"""Issue 11: model files, checkpoints and the train / predict / evaluate commands, hardened.

Each test names the item of issue 11 it guards. The model file format is the one the design
describes: an .npz archive with ``format`` = "symgrad-model", ``format_version`` = 1, ``theta``,
``model_sha256``, ``epochs_done``, ``training``, ``opt_*`` and ``extra_*``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import default_signals

import symgrad.runtime.loader as loader
from symgrad.cli import main
from symgrad.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: harden_softmax
inputs: 4
layers:
  - {units: 5, activation: tanh}
  - {units: 3, activation: softmax}
loss: cross_entropy
optimizer: {name: adam, learning_rate: 0.05, batch_size: 8, epochs: 4}
init: {scheme: xavier, seed: 0}
"""


def _blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    X = rng.standard_normal((n, 4)) * 0.5 + labels[:, None] * 3.0 + 10.0
    return X, labels


def _csv(path: Path, X, names) -> None:
    rows = ["f1,f2,f3,f4,label"] + [
        ",".join(f"{v:.6f}" for v in x) + f",{c}" for x, c in zip(X, names)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A folder (the cwd) with spec.yaml and train.csv (labels a, b, c)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    X, labels = _blobs()
    _csv(tmp_path / "train.csv", X, np.array(["a", "b", "c"])[labels])
    return tmp_path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _error(err: str) -> str:
    """The single error line (and nothing else) on stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("symgrad: error: "), err
    return lines[0][len("symgrad: error: ") :]


def _train(capsys, *extra, out="m.npz"):
    code, stdout, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--out", out, "-q", *extra
    )
    assert code == 0, err
    return stdout


def _arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def _rewrite(src, dst, **changes) -> Path:
    """Copy the model file ``src`` to ``dst`` with keys changed (None removes a key)."""
    arrays = _arrays(src)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    np.savez(dst, **arrays)
    return Path(dst)


def _trainer(text=SPEC):
    return loader.load_trainer(load_spec(text))


# ---------------------------------------------------------------------------------------------
# Item 2: no writer follows a symlink planted at its temporary name
# ---------------------------------------------------------------------------------------------


def test_save_does_not_follow_a_symlink_at_the_old_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    target = tmp_path / "m.npz"
    os.symlink(victim, f"{target}.{os.getpid()}.tmp")  # the name save() used to write through
    model = _trainer()
    assert model.save(target) == str(target)
    assert victim.read_text(encoding="utf-8") == "precious"
    assert stat.S_ISREG(os.lstat(target).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.npz",
        f"m.npz.{os.getpid()}.tmp",
        "victim.txt",
    ]  # the planted link untouched, no temporary file left behind


def test_save_replaces_a_symlink_at_the_target_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    os.symlink(victim, tmp_path / "m.npz")
    _trainer().save(tmp_path / "m.npz")
    assert victim.read_text(encoding="utf-8") == "precious"
    assert stat.S_ISREG(os.lstat(tmp_path / "m.npz").st_mode)


def test_cli_checkpoints_and_models_do_not_follow_planted_symlinks(work, capsys):
    victim = work / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    for name in ("m.npz", "ck.npz"):
        os.symlink(victim, f"{name}.{os.getpid()}.tmp")
    _train(capsys, "--checkpoint", "ck.npz")
    assert victim.read_text(encoding="utf-8") == "precious"
    assert _arrays(work / "ck.npz")["epochs_done"] == 4


def _fake_matplotlib(monkeypatch) -> None:
    """A stand-in for matplotlib (not installed here) whose savefig writes b"FAKEPNG"."""

    class Axes:
        def plot(self, *args, **kwargs):
            pass

        set_xlabel = set_ylabel = legend = plot

        def twinx(self):
            return Axes()

    class Figure:
        def tight_layout(self):
            pass

        def savefig(self, target, format=None):  # noqa: A002 - matplotlib's name
            if hasattr(target, "write"):
                target.write(b"FAKEPNG")
            else:
                with open(target, "wb") as fh:
                    fh.write(b"FAKEPNG")

    pyplot = types.ModuleType("matplotlib.pyplot")
    pyplot.subplots = lambda figsize=None: (Figure(), Axes())
    pyplot.close = lambda fig: None
    mpl = types.ModuleType("matplotlib")
    mpl.use = lambda backend: None
    mpl.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)


def test_plot_does_not_follow_a_symlink_at_its_temporary_name(work, capsys, monkeypatch):
    _fake_matplotlib(monkeypatch)
    victim = work / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    os.symlink(victim, work / ".c.png.tmp.png")  # the name --plot used to write through
    stdout = _train(capsys, "--plot", "c.png")
    assert "wrote c.png" in stdout
    assert victim.read_text(encoding="utf-8") == "precious"
    assert (work / "c.png").read_bytes() == b"FAKEPNG"


# ---------------------------------------------------------------------------------------------
# Item 25: a replaced file keeps its mode; a new file gets the umask's default
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_save_keeps_the_mode_of_a_replaced_file_and_uses_the_umask_for_a_new_one(tmp_path):
    model = _trainer()
    with _umask(0o022):
        model.save(tmp_path / "new.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o644
    with _umask(0o027):
        model.save(tmp_path / "other.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "other.npz").st_mode) == 0o640
    os.chmod(tmp_path / "new.npz", 0o604)
    with _umask(0o022):
        model.save(tmp_path / "new.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o604


def test_train_keeps_the_mode_of_the_model_it_replaces(work, capsys):
    with _umask(0o022):
        _train(capsys, "--checkpoint", "ck.npz")
        assert stat.S_IMODE(os.stat(work / "m.npz").st_mode) == 0o644
        assert stat.S_IMODE(os.stat(work / "ck.npz").st_mode) == 0o644
        os.chmod(work / "m.npz", 0o604)
        _train(capsys, "--checkpoint", "ck.npz")
        assert stat.S_IMODE(os.stat(work / "m.npz").st_mode) == 0o604


def test_predictions_keep_the_mode_of_the_file_they_replace(work, capsys):
    """Predictions are written by symgrad.runtime.atomic, which must keep modes too."""
    _train(capsys)
    args = ("predict", "spec.yaml", "--model", "m.npz", "--data", "train.csv", "-o", "p.csv")
    with _umask(0o022):
        assert _run(capsys, *args)[0] == 0
        assert stat.S_IMODE(os.stat(work / "p.csv").st_mode) == 0o644
        os.chmod(work / "p.csv", 0o604)
        assert _run(capsys, *args)[0] == 0
        assert stat.S_IMODE(os.stat(work / "p.csv").st_mode) == 0o604


# ---------------------------------------------------------------------------------------------
# Items 10, 20: damaged, truncated or foreign files are one line and exit 2
# ---------------------------------------------------------------------------------------------


def _commands(model: str):
    """evaluate, predict and train --resume, each reading ``model``."""
    return [
        ("evaluate", "spec.yaml", "--model", model, "--data", "train.csv"),
        ("predict", "spec.yaml", "--model", model, "--data", "train.csv"),
        ("train", "spec.yaml", "--data", "train.csv", "--checkpoint", model, "--resume", "-q"),
    ]


def test_a_truncated_model_or_checkpoint_is_one_line(work, capsys):
    _train(capsys)
    (work / "t.npz").write_bytes((work / "m.npz").read_bytes()[:300])  # head -c 300
    for args in _commands("t.npz"):
        code, _, err = _run(capsys, *args)
        assert code == 2, (args, err)
        assert _error(err).startswith("t.npz: damaged or truncated model file ("), err


def test_a_npy_renamed_npz_is_not_a_model(work, capsys):
    np.save(work / "x.npy", np.zeros(3))
    os.rename(work / "x.npy", work / "x.npz")
    for args in _commands("x.npz"):
        code, _, err = _run(capsys, *args)
        assert code == 2, (args, err)
        assert _error(err) == "x.npz: not a symgrad model (one .npy array, not an .npz archive)"


def test_a_text_file_is_not_a_model_and_gets_no_pickle_advice(work, capsys):
    (work / "notes.txt").write_text("these are not weights\n", encoding="utf-8")
    for args in _commands("notes.txt"):
        code, _, err = _run(capsys, *args)
        assert code == 2, (args, err)
        assert _error(err) == "notes.txt: not a symgrad model (not an .npz archive)"
        assert "pickle" not in err


def test_a_truncated_model_has_no_traceback_in_a_real_process(work, capsys):
    _train(capsys)
    (work / "t.npz").write_bytes((work / "m.npz").read_bytes()[:300])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SYMGRAD_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "symgrad.cli", *_commands("t.npz")[0]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert _error(proc.stderr).startswith("t.npz: damaged or truncated model file")


def test_a_member_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)}
    )
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        archive.writestr("theta.npy", header.getvalue() + b"\0" * 64)  # magic, header, 64 bytes
    with pytest.raises(ValueError) as info:
        _trainer().load(tmp_path / "bomb.npz")
    assert str(info.value) == (
        f"{tmp_path / 'bomb.npz'}: theta: declares 16000000000000 bytes, more than a model this "
        "size holds"
    )


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    model = _trainer()
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "o.npz", extra_note=np.array([object()]))
    with pytest.raises(ValueError, match=re.escape("extra_note: dtype object is not read")):
        model.load(tmp_path / "o.npz")


# ---------------------------------------------------------------------------------------------
# Items 11, 21: fields of the wrong type or range, NaN and inf
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [np.array([3, 4]), np.array(-1), np.array(2.0), np.array("3"), np.array(True)],
    ids=["array", "negative", "float", "string", "bool"],
)
def test_epochs_done_of_the_wrong_type_or_range_is_one_line(work, capsys, value):
    _train(capsys, "--checkpoint", "ck.npz")
    _rewrite(work / "ck.npz", work / "bad.npz", epochs_done=value)
    code, _, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--checkpoint", "bad.npz",
        "--resume", "-q",
    )  # fmt: skip
    assert code == 2
    assert _error(err).startswith("bad.npz: epochs_done must be one integer >= 0, found "), err


def test_optimizer_step_count_of_the_wrong_range_is_refused(work, capsys):
    _train(capsys, "--checkpoint", "ck.npz")
    _rewrite(work / "ck.npz", work / "bad.npz", opt_t=np.array(-5))
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "bad.npz", "--data", "train.csv"
    )
    assert code == 2 and _error(err) == "bad.npz: opt_t must be one integer >= 0, found int64 -5"


@pytest.mark.parametrize("key", ["theta", "opt_m", "opt_v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_parameters_or_state_refuse_to_load(work, capsys, key, bad):
    _train(capsys)
    value = _arrays(work / "m.npz")[key].copy()
    value[1] = bad
    _rewrite(work / "m.npz", work / "bad.npz", **{key: value})
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "bad.npz", "--data", "train.csv"
    )
    what = "parameters" if key == "theta" else "optimiser state"
    assert code == 2 and _error(err) == f"bad.npz: {key}: NaN or inf among the {what}"


def test_nan_in_the_saved_standardisation_refuses_to_load(work, capsys):
    _train(capsys, "--standardize")
    mean = _arrays(work / "m.npz")["extra_x_mean"].copy()
    mean[0] = np.nan
    _rewrite(work / "m.npz", work / "bad.npz", extra_x_mean=mean)
    code, _, err = _run(capsys, "predict", "spec.yaml", "--model", "bad.npz", "--data", "train.csv")
    assert code == 2 and _error(err) == "bad.npz: extra_x_mean: NaN or inf among its values"


def test_a_refused_file_changes_nothing(tmp_path):
    model = _trainer()
    model.save(tmp_path / "m.npz")
    theta = model.theta.copy()
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", theta=np.full(theta.shape, 7.0),
             epochs_done=np.array(-1))  # fmt: skip
    with pytest.raises(ValueError, match="epochs_done"):
        model.load(tmp_path / "bad.npz")
    np.testing.assert_array_equal(model.theta, theta)
    assert model.epochs_done == 0


def test_a_file_with_the_wrong_optimiser_state_changes_nothing(tmp_path):
    X, labels = _blobs()
    model = _trainer()
    model.fit(X, np.eye(3)[labels], epochs=1)
    model.save(tmp_path / "m.npz")
    state = {k: np.copy(v) for k, v in model._opt_state.items()}
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", opt_v=None)
    with pytest.raises(ValueError) as info:
        model.load(tmp_path / "bad.npz")
    assert str(info.value).endswith("bad.npz: the adam state holds m, t; expected m, t, v")
    assert model._opt_state["t"] == state["t"] > 0
    np.testing.assert_array_equal(model._opt_state["m"], state["m"])


def test_a_member_holding_more_or_less_than_its_header_declares_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (4,)}
    )
    for held in (16, 40):
        with zipfile.ZipFile(tmp_path / "odd.npz", "w") as archive:
            archive.writestr("theta.npy", header.getvalue() + b"\0" * held)
        with pytest.raises(ValueError) as info:
            _trainer().load(tmp_path / "odd.npz")
        assert str(info.value) == (
            f"{tmp_path / 'odd.npz'}: theta: {held} bytes of data where the header declares 32"
        )


@pytest.mark.parametrize(
    "training, why",
    [
        (np.array("[1]"), "found list"),
        (np.array(["{}"]), "Expecting value"),
        (np.array("[" * 100_000), "recursion"),
    ],
    ids=["list", "array", "nested"],
)
def test_training_that_is_not_one_json_object_is_one_line(tmp_path, training, why):
    model = _trainer()
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", training=training)
    with pytest.raises(ValueError) as info:
        model.load(tmp_path / "bad.npz")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bad.npz'}: training must be a JSON object (")
    assert why in message and "\n" not in message


def test_save_refuses_nan_parameters_and_bad_extras(tmp_path):
    model = _trainer()
    with pytest.raises(ValueError, match=re.escape("extras['x']: NaN or inf among its values")):
        model.save(tmp_path / "m.npz", extras={"x": np.array([1.0, np.inf])})
    with pytest.raises(ValueError, match="is not a letter then letters, digits, _"):
        model.save(tmp_path / "m.npz", extras={"no good": np.zeros(2)})
    model.set_flat(np.full(model.theta.shape, np.nan))
    with pytest.raises(ValueError, match="not saved: NaN or inf among the parameters"):
        model.save(tmp_path / "m.npz")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Item 26: format and version; unknown keys
# ---------------------------------------------------------------------------------------------


def test_model_files_carry_format_and_version(work, capsys):
    _train(capsys)
    arrays = _arrays(work / "m.npz")
    assert str(arrays["format"]) == "symgrad-model" and int(arrays["format_version"]) == 1
    assert set(arrays) == {
        "format",
        "format_version",
        "model_sha256",
        "theta",
        "epochs_done",
        "training",
        "opt_t",
        "opt_m",
        "opt_v",
        "extra_classes",
    }
    assert str(arrays["model_sha256"]) == load_spec(work / "spec.yaml").model_digest()


def test_unknown_keys_and_other_versions_are_refused(work, capsys):
    _train(capsys)
    cases = {
        "unknown.npz": (
            {"surprise": np.zeros(2)},
            "unknown.npz: unknown keys surprise (format version 1 has none such): not written "
            "by this symgrad",
        ),
        "v2.npz": (
            {"format_version": np.array(2)},
            "v2.npz: symgrad model format version 2; this trainer reads version 1 only",
        ),
        "noversion.npz": (
            {"format_version": None},
            "noversion.npz: symgrad model format version missing; this trainer reads version 1 "
            "only",
        ),
        "other.npz": (
            {"format": np.array("keras")},
            "other.npz: not a symgrad model (no format entry 'symgrad-model')",
        ),
        "old.npz": (
            {"format": None, "spec_sha256": np.array("0" * 64)},
            "old.npz: not a symgrad model (no format entry 'symgrad-model')",
        ),
    }
    for name, (changes, message) in cases.items():
        _rewrite(work / "m.npz", work / name, **changes)
        code, _, err = _run(capsys, "evaluate", "spec.yaml", "--model", name, "--data", "train.csv")
        assert code == 2 and _error(err) == message


# ---------------------------------------------------------------------------------------------
# Item 27: the model's identity, not its training schedule
# ---------------------------------------------------------------------------------------------


def test_model_digest_covers_what_defines_the_model_only():
    base = load_spec(SPEC)
    same = [
        SPEC.replace("epochs: 4", "epochs: 400"),
        SPEC.replace("name: adam, learning_rate: 0.05", "name: sgd, learning_rate: 0.5"),
        SPEC.replace("seed: 0", "seed: 9").replace("xavier", "he"),
        SPEC.replace("name: harden_softmax", "name: renamed"),
        SPEC + "regularization: {l2: 0.1}\ndescription: notes\n",
        SPEC + "preprocess: {standardize: true}\n",
        SPEC + "activations: {unused: 'z**3'}\n",
    ]
    for text in same:
        assert load_spec(text).model_digest() == base.model_digest(), text
        assert load_spec(text).digest() != base.digest(), text
    different = [
        SPEC.replace("units: 5", "units: 6"),
        SPEC.replace("inputs: 4", "inputs: 5"),
        SPEC.replace("activation: tanh", "activation: sigmoid"),
        SPEC + "dtype: float32\n",
        SPEC.replace("activation: tanh", "activation: cube") + "activations: {cube: 'z**3'}\n",
    ]
    digests = {load_spec(text).model_digest() for text in different}
    assert len(digests) == len(different) and base.model_digest() not in digests
    custom = SPEC.replace("activation: tanh", "activation: cube")
    assert (
        load_spec(custom + "activations: {cube: 'z**3'}\n").model_digest()
        != load_spec(custom + "activations: {cube: 'z**3 + z'}\n").model_digest()
    )


def test_changing_the_schedule_keeps_a_model_usable_and_evaluate_reports_it(work, capsys):
    _train(capsys)
    (work / "longer.yaml").write_text(
        SPEC.replace("epochs: 4", "epochs: 40").replace("adam", "momentum"), encoding="utf-8"
    )
    code, out, err = _run(
        capsys, "evaluate", "longer.yaml", "--model", "m.npz", "--data", "train.csv"
    )
    assert code == 0, err
    assert out.splitlines()[0] == "model    m.npz: 4 epochs of adam (learning rate 0.05, batch 8)"
    (work / "wider.yaml").write_text(SPEC.replace("units: 5", "units: 6"), encoding="utf-8")
    code, _, err = _run(capsys, "evaluate", "wider.yaml", "--model", "m.npz", "--data", "train.csv")
    assert code == 2 and _error(err) == (
        "m.npz: saved from a different model (its spec differs in sizes, activations, custom "
        "expressions, loss, dtype or task: model hash mismatch)"
    )


def test_training_settings_are_recorded(work, capsys):
    _train(capsys, "--epochs", "3", "--batch-size", "5")
    model = _trainer()
    model.load(work / "m.npz")
    assert model.training["optimizer"]["name"] == "adam"
    assert model.training["optimizer"]["epochs"] == 3
    assert model.training["optimizer"]["batch_size"] == 5
    assert model.training["init"] == {"scheme": "xavier", "seed": 0}
    # the optimiser's own settings, not the unused ones of the others
    assert {"beta1", "beta2", "eps"} <= set(model.training["optimizer"])
    assert not {"momentum", "rho", "damping"} & set(model.training["optimizer"])


def test_another_optimisers_state_is_not_restored(tmp_path):
    X, labels = _blobs()
    Y = np.eye(3)[labels]
    adam = _trainer()
    adam.fit(X, Y, epochs=2)
    adam.save(tmp_path / "m.npz")
    sgd = _trainer(SPEC.replace("name: adam", "name: sgd"))
    sgd.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(sgd.theta, adam.theta)
    assert sgd.epochs_done == 2 and sgd._opt_state is None
    sgd.fit(X, Y, epochs=1)  # trains on from the loaded parameters
    assert sgd.epochs_done == 3


# ---------------------------------------------------------------------------------------------
# Item 12: output folders are checked before training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--out", "nodir/m.npz"), "--out nodir/m.npz: the folder nodir does not exist"),
        (
            ("--checkpoint", "nodir/ck.npz"),
            "--checkpoint nodir/ck.npz: the folder nodir does not exist",
        ),
        (("--plot", "nodir/c.png"), "--plot nodir/c.png: the folder nodir does not exist"),
        (
            ("--out", "train.csv/m.npz"),
            "--out train.csv/m.npz: the folder train.csv is not a folder",
        ),
        (("--out", "."), "--out .: expected a file name"),
        (("--out", "sub"), "--out sub: is a folder, expected a file name"),
    ],
)
def test_output_folders_are_checked_before_training(work, capsys, monkeypatch, extra, message):
    _fake_matplotlib(monkeypatch)
    (work / "sub").mkdir()
    code, out, err = _run(capsys, "train", "spec.yaml", "--data", "train.csv", "-q", *extra)
    assert code == 2 and _error(err) == message
    assert "epoch" not in out and not list(work.glob("*.npz"))


def test_predict_checks_its_output_folder_first(work, capsys):
    _train(capsys)
    code, out, err = _run(
        capsys, "predict", "spec.yaml", "--model", "m.npz", "--data", "train.csv",
        "-o", "nodir/p.csv",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert _error(err) == "--output nodir/p.csv: the folder nodir does not exist"
    assert not (work / "nodir").exists()


# ---------------------------------------------------------------------------------------------
# Item 22: the name given is the name written
# ---------------------------------------------------------------------------------------------


def test_out_and_checkpoint_names_are_used_as_given(work, capsys):
    stdout = _train(capsys, "--checkpoint", "ck1", out="plainout")
    assert stdout.splitlines()[-1].endswith("model saved to plainout")
    assert (work / "plainout").is_file() and (work / "ck1").is_file()
    assert not list(work.glob("*.npz"))
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "plainout", "--data", "train.csv"
    )
    assert code == 0, err
    code, out, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--epochs", "6", "--out", "plainout",
        "--checkpoint", "ck1", "--resume", "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "trained 2 epochs" in out and int(_arrays(work / "plainout")["epochs_done"]) == 6


# ---------------------------------------------------------------------------------------------
# Item 23: --classes fixes the set of classes the error message talks about
# ---------------------------------------------------------------------------------------------


def test_classes_option_fixes_the_set(work, capsys):
    X, labels = _blobs()
    keep = labels > 0
    _csv(work / "bc.csv", X[keep], np.array(["a", "b", "c"])[labels[keep]])
    code, _, err = _run(capsys, "train", "spec.yaml", "--data", "bc.csv", "-q")
    assert code == 2
    message = _error(err)
    assert message.startswith("bc.csv: column 'label' holds 2 classes") and "classes" in message
    assert message.endswith("to fix the set"), message
    code, _, err = _run(
        capsys, "train", "spec.yaml", "--data", "bc.csv", "--classes", "a,b,c", "-q"
    )
    assert code == 0, err
    assert list(_arrays(work / "model.npz")["extra_classes"]) == ["a", "b", "c"]
    # evaluate and predict reuse the saved classes: the columns keep their meaning
    code, out, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "model.npz", "--data", "bc.csv"
    )
    assert code == 0, err
    assert out.splitlines()[-4].split() == ["a", "b", "c"]
    assert out.splitlines()[-3].split() == ["a", "0", "0", "0"]
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "model.npz", "--data", "bc.csv",
        "--classes", "c,b,a",
    )  # fmt: skip
    assert code == 2
    assert _error(err) == "--classes c,b,a differs from the classes saved in model.npz (a,b,c)"
    code, _, err = _run(
        capsys, "predict", "spec.yaml", "--model", "model.npz", "--data", "bc.csv",
        "--classes", "a,,c",
    )  # fmt: skip
    assert code == 2
    assert _error(err) == (
        "--classes 'a,,c': expected two or more labels separated by commas, e.g. a,b,c"
    )


# ---------------------------------------------------------------------------------------------
# Item 24: the interrupt message counts the epochs the checkpoint holds
# ---------------------------------------------------------------------------------------------


def test_interrupt_message_counts_the_epochs_in_the_checkpoint(work, capsys, monkeypatch):
    real = loader.load_trainer

    def load_trainer(*args, **kwargs):
        model = real(*args, **kwargs)
        save = model.save
        calls = []

        def interrupted_save(path, *a, **k):
            calls.append(path)
            if len(calls) == 3:  # Ctrl-C while the third epoch's checkpoint is being written
                raise KeyboardInterrupt
            return save(path, *a, **k)

        model.save = interrupted_save
        return model

    monkeypatch.setattr(loader, "load_trainer", load_trainer)
    code, _, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--checkpoint", "ck.npz", "-q"
    )
    assert code == 130
    assert int(_arrays(work / "ck.npz")["epochs_done"]) == 2
    assert err.strip() == (
        "interrupted after 2 epochs; the checkpoint ck.npz holds them: continue with --resume"
    )


def test_interrupt_with_a_signal_reports_what_the_checkpoint_holds(work):
    X, labels = _blobs(n=3000)
    _csv(work / "big.csv", X, np.array(["a", "b", "c"])[labels])
    (work / "slow.yaml").write_text(
        SPEC.replace("epochs: 4", "epochs: 100000").replace("batch_size: 8", "batch_size: 1"),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "symgrad.cli", "train", "slow.yaml", "--data", "big.csv",
         "--checkpoint", "ck.npz", "-q"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (work / "ck.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    held = int(_arrays(work / "ck.npz")["epochs_done"])
    assert err.strip() == (
        f"interrupted after {held} epochs; the checkpoint ck.npz holds them: continue with --resume"
    )


# ---------------------------------------------------------------------------------------------
# Item 28: one training run per checkpoint
# ---------------------------------------------------------------------------------------------


def test_a_second_run_on_the_same_checkpoint_is_refused(work, capsys):
    fd = os.open(work / "ck.npz.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the lock
        code, out, err = _run(
            capsys, "train", "spec.yaml", "--data", "train.csv", "--checkpoint", "ck.npz", "-q"
        )
    finally:
        os.close(fd)
    assert code == 2 and out == ""
    assert _error(err) == (
        "another symgrad train is using the checkpoint ck.npz (it holds ck.npz.lock); wait for "
        "it to finish or pass another --checkpoint"
    )
    assert not (work / "ck.npz").exists()
    _train(capsys, "--checkpoint", "ck.npz")  # released: the next run goes ahead


def test_the_lock_file_is_not_followed_through_a_symlink(work, capsys):
    victim = work / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    os.symlink(victim, work / "ck.npz.lock")
    code, _, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--checkpoint", "ck.npz", "-q"
    )
    assert code == 2
    assert _error(err).startswith("cannot open the lock file ck.npz.lock: ")
    assert victim.read_text(encoding="utf-8") == "precious"


# ---------------------------------------------------------------------------------------------
# Item 29: input standardisation, saved with the model and applied by predict / evaluate
# ---------------------------------------------------------------------------------------------


def test_standardisation_is_saved_and_applied(work, capsys):
    _train(capsys, "--standardize")
    arrays = _arrays(work / "m.npz")
    X, _ = _blobs()
    np.testing.assert_allclose(arrays["extra_x_mean"], X.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(arrays["extra_x_scale"], X.std(axis=0), rtol=1e-5)
    code, out, err = _run(capsys, "predict", "spec.yaml", "--model", "m.npz", "--data", "train.csv")
    assert code == 0, err
    model = _trainer()
    model.load(work / "m.npz")
    Xs = np.loadtxt(work / "train.csv", delimiter=",", skiprows=1, usecols=range(4))
    expected = model.predict((Xs - arrays["extra_x_mean"]) / arrays["extra_x_scale"])
    assert out.splitlines()[1:] == [str(v) for v in expected]
    code, out, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "m.npz", "--data", "train.csv"
    )
    assert code == 0, err
    assert out.splitlines()[0].endswith(
        "; inputs standardised with the training data's mean and scale"
    )


def test_the_spec_key_standardises_and_the_flag_overrides_it(work, capsys):
    (work / "std.yaml").write_text(SPEC + "preprocess: {standardize: true}\n", encoding="utf-8")
    code, _, err = _run(capsys, "train", "std.yaml", "--data", "train.csv", "--out", "s.npz", "-q")
    assert code == 0, err
    assert "extra_x_mean" in _arrays(work / "s.npz")
    code, _, err = _run(
        capsys, "train", "std.yaml", "--data", "train.csv", "--out", "n.npz", "--no-standardize",
        "-q",
    )  # fmt: skip
    assert code == 0, err
    assert "extra_x_mean" not in _arrays(work / "n.npz")


def test_standardisation_helps_on_shifted_features(work, capsys):
    raw = _train(capsys, "--epochs", "4", out="raw.npz")
    std = _train(capsys, "--epochs", "4", "--standardize", out="std.npz")
    acc = [float(re.search(r"acc (\S+)", s.splitlines()[-2]).group(1)) for s in (raw, std)]
    assert acc[1] >= 0.9 and acc[0] <= 0.5, acc


def test_resume_keeps_the_checkpoints_standardisation(work, capsys):
    _train(capsys, "--standardize", "--checkpoint", "ck.npz")
    mean = _arrays(work / "ck.npz")["extra_x_mean"]
    code, _, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--checkpoint", "ck.npz", "--resume",
        "-q",
    )  # fmt: skip
    assert code == 2
    assert _error(err) == (
        "--resume: ck.npz was trained with standardised inputs; resume with the same setting "
        "(--standardize or the spec's preprocess.standardize)"
    )
    code, out, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--limit", "20", "--epochs", "6",
        "--checkpoint", "ck.npz", "--resume", "--standardize", "-q",
    )  # fmt: skip
    assert code == 0, err
    # the statistics of the first run stay, though the data (--limit 20) differ now
    np.testing.assert_array_equal(_arrays(work / "m.npz")["extra_x_mean"], mean)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"extra_x_scale": None}, "extra_x_mean and extra_x_scale come together"),
        ({"extra_x_scale": np.zeros(4)}, "extra_x_scale must be > 0"),
        ({"extra_x_mean": np.zeros(3)}, "extra_x_mean must hold 4 floats, found float64 of"),
        ({"extra_classes": np.array(["a", "b"])}, "extra_classes must hold 3 labels, found (2,)"),
    ],
)
def test_saved_extras_are_checked(work, capsys, changes, message):
    _train(capsys, "--standardize")
    _rewrite(work / "m.npz", work / "bad.npz", **changes)
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "bad.npz", "--data", "train.csv"
    )
    assert code == 2 and _error(err).startswith(f"bad.npz: {message}"), err


def test_python_api_extras_round_trip(tmp_path):
    model = _trainer()
    model.save(tmp_path / "m.npz", extras={"x_mean": np.arange(4.0), "tag": "v1"})
    other = _trainer()
    other.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(other.extras["x_mean"], np.arange(4.0))
    assert str(other.extras["tag"]) == "v1"
    other.save(tmp_path / "again.npz")  # the extras loaded are saved again by default
    assert set(_arrays(tmp_path / "again.npz")) >= {"extra_x_mean", "extra_tag"}
