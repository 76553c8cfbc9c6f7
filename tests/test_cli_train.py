"""The train / evaluate / predict / check commands end to end on tiny synthetic data."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from symgrad.cli import main
from symgrad.data import write_idx

ROOT = Path(__file__).resolve().parents[1]

SOFTMAX = """\
name: cli_softmax
inputs: 4
layers:
  - {units: 5, activation: tanh}
  - {units: 3, activation: softmax}
loss: cross_entropy
optimizer: {name: adam, learning_rate: 0.05, batch_size: 8, epochs: 4}
init: {scheme: xavier, seed: 0}
"""
IMAGES = """\
name: cli_idx
inputs: 12
layers:
  - {units: 3, activation: softmax}
loss: cross_entropy
optimizer: {name: sgd, learning_rate: 0.5, batch_size: 5, epochs: 2}
init: {scheme: xavier, seed: 0}
"""


def _blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    X = rng.standard_normal((n, 4)) * 0.5 + labels[:, None]
    return X, labels


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """tmp_path with a spec, a CSV (with header, string labels) and an .npz; cwd set to it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SOFTMAX, encoding="utf-8")
    X, labels = _blobs()
    names = np.array(["a", "b", "c"])[labels]
    rows = ["f1,f2,f3,f4,label"] + [
        ",".join(f"{v:.6f}" for v in x) + f",{c}" for x, c in zip(X, names)
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    np.savez(tmp_path / "train.npz", X=X, y=labels)
    return tmp_path


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_model_and_checkpoint(work, capsys):
    code, out, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--out", "m.npz", "--quiet"
    )
    assert code == 0, err
    assert (work / "m.npz").exists() and (work / "m.npz.ckpt.npz").exists()
    assert "epoch 4/4" in out and "model saved to" in out
    with np.load(work / "m.npz") as f:
        assert int(f["epochs_done"]) == 4 and np.isfinite(f["theta"]).all()


def test_resume_matches_a_straight_run(work, capsys):
    code, _, err = _run(
        capsys,
        "train",
        "spec.yaml",
        "--data",
        "train.npz",
        "--epochs",
        "4",
        "--out",
        "straight.npz",
        "-q",
    )
    assert code == 0, err
    code, _, err = _run(
        capsys,
        "train",
        "spec.yaml",
        "--data",
        "train.npz",
        "--epochs",
        "2",
        "--out",
        "part.npz",
        "--checkpoint",
        "ck.npz",
        "-q",
    )
    assert code == 0, err
    code, out, err = _run(
        capsys,
        "train",
        "spec.yaml",
        "--data",
        "train.npz",
        "--epochs",
        "4",
        "--out",
        "resumed.npz",
        "--checkpoint",
        "ck.npz",
        "--resume",
        "-q",
    )
    assert code == 0, err
    assert "trained 2 epochs" in out
    with np.load(work / "straight.npz") as a, np.load(work / "resumed.npz") as b:
        assert int(b["epochs_done"]) == 4
        np.testing.assert_array_equal(a["theta"], b["theta"])
    # resuming a finished run trains nothing more
    code, out, _ = _run(
        capsys,
        "train",
        "spec.yaml",
        "--data",
        "train.npz",
        "--epochs",
        "4",
        "--out",
        "again.npz",
        "--checkpoint",
        "ck.npz",
        "--resume",
        "-q",
    )
    assert code == 0 and "already trained" in out


def test_evaluate_and_predict(work, capsys):
    assert _run(capsys, "train", "spec.yaml", "--data", "train.csv", "--out", "m.npz", "-q")[0] == 0
    code, out, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "m.npz", "--data", "train.csv"
    )
    assert code == 0, err
    assert "samples  40" in out and "loss" in out and "accuracy" in out
    assert "confusion matrix" in out
    matrix = [line.split() for line in out.splitlines()[-3:]]
    assert [row[0] for row in matrix] == ["a", "b", "c"]
    assert sum(int(v) for row in matrix for v in row[1:]) == 40
    code, _, err = _run(
        capsys, "predict", "spec.yaml", "--model", "m.npz", "--data", "train.csv", "-o", "pred.csv"
    )
    assert code == 0, err
    lines = (work / "pred.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "prediction" and len(lines) == 41
    assert {int(v) for v in lines[1:]} <= {0, 1, 2}


def test_train_on_idx(work, capsys):
    rng = np.random.default_rng(1)
    labels = (np.arange(30) % 3).astype(np.uint8)
    images = rng.integers(0, 60, size=(30, 3, 4)).astype(np.uint8)
    images[np.arange(30), labels, :] = 250  # the row lit up tells the class
    write_idx(work / "tiny-images-idx3-ubyte", images)
    write_idx(work / "tiny-labels-idx1-ubyte.gz", labels, gzip=True)
    (work / "idx.yaml").write_text(IMAGES, encoding="utf-8")
    code, out, err = _run(
        capsys, "train", "idx.yaml", "--data", "idx:tiny", "--out", "i.npz", "--epochs", "20", "-q"
    )
    assert code == 0, err
    code, out, err = _run(capsys, "evaluate", "idx.yaml", "--model", "i.npz", "--data", "idx:tiny")
    assert code == 0, err
    assert "accuracy 1" in out


def test_check_example(capsys):
    code, out, err = _run(capsys, "check", ROOT / "examples" / "softmax_iris.yaml")
    assert code == 0, err
    assert "finite-difference check" in out and "all blocks pass" in out


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed"
)
def test_plot_without_matplotlib(work, capsys):
    code, out, err = _run(
        capsys, "train", "spec.yaml", "--data", "train.csv", "--plot", "curve.png", "-q"
    )
    assert code == 2
    assert "matplotlib" in err and not (work / "m.npz").exists()


def test_bad_spec_is_one_line_without_traceback(work):
    (work / "bad.yaml").write_text("name: bad\ninputs: -3\nlayers: []\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SYMGRAD_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "symgrad.cli", "train", "bad.yaml", "--data", "train.csv"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("symgrad: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_missing_model_and_resume_without_checkpoint_exit_2(work, capsys):
    code, _, err = _run(
        capsys, "evaluate", "spec.yaml", "--model", "nosuch.npz", "--data", "train.csv"
    )
    assert code == 2 and "nosuch.npz" in err
    code, _, err = _run(capsys, "train", "spec.yaml", "--data", "train.csv", "--resume", "-q")
    assert code == 2 and "--resume" in err


def _readme_cli_lines() -> list[str]:
    """The command lines of the README's "The CLI" block, comments kept."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## The CLI", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_every_readme_cli_command_works_as_written(tmp_path, monkeypatch, capsys):
    """Issue 11, item 29: the README's commands, run as a new user would, give good results."""
    pytest.importorskip("sklearn")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "generated").mkdir()  # as in a checkout
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for line in _readme_cli_lines():
        command, _, comment = line.partition("  #")
        if command.startswith("python "):
            subprocess.run([sys.executable, *shlex.split(command)[1:]], check=True, timeout=120)
            continue
        optional = re.findall(r"\[([^\]]+)\]", command)
        argv = shlex.split(re.sub(r"\s*\[[^\]]+\]", "", command))
        assert argv[0] == "symgrad", line
        code, out, err = _run(capsys, *argv[1:])
        assert code == 0, (line, err)
        outputs[" ".join(argv[1:])] = out, err, comment
        for extra in optional:
            if extra.startswith("--plot") and importlib.util.find_spec("matplotlib") is None:
                continue
            code, out, err = _run(capsys, *argv[1:], *shlex.split(extra))
            assert code == 0, (line, extra, err)
            outputs[" ".join(argv[1:] + [extra])] = out, err, comment
    assert {key.split()[0] for key in outputs} >= {
        "derive", "generate", "check", "train", "evaluate", "predict", "--version",
    }  # fmt: skip
    assert (tmp_path / "xor.tex").read_text(encoding="utf-8").startswith("\\documentclass")
    assert (tmp_path / "generated" / "xor.py").is_file()
    assert outputs["generate examples/xor.yaml --check"][0].endswith("is up to date\n")
    assert outputs["check examples/mlp_digits.yaml"][0].endswith("all blocks pass\n")
    train = next(
        v for k, v in outputs.items() if k.startswith("train") and "--" + "resume" not in k
    )
    accuracy = float(re.search(r" acc (\S+)", train[0].splitlines()[-2]).group(1))
    assert accuracy >= 0.9, train[0]
    out, _, comment = next(v for k, v in outputs.items() if k.startswith("evaluate"))
    accuracy = float(re.search(r"^accuracy (\S+)$", out, re.M).group(1))
    assert accuracy >= 0.9, out
    assert comment.strip() == f"accuracy {accuracy:.3f}"  # the README states what it gives
    resumed = next(v for k, v in outputs.items() if "--resume" in k)[0]
    assert resumed.startswith("already trained for 200 epochs")
    predictions = (tmp_path / "pred.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "prediction" and len(predictions) == 151


def test_max_data_bytes_caps_what_train_and_evaluate_read(work, capsys):
    size = (work / "train.csv").stat().st_size
    args = ("train", "spec.yaml", "--data", "train.csv", "--out", "m.npz", "--quiet")
    code, out, err = _run(capsys, *args, "--max-data-bytes", size - 1)
    assert code == 2
    assert err.strip() == (
        f"symgrad: error: train.csv: file is larger than the data size limit of {size - 1} "
        "bytes (raise it with max_bytes= or --max-data-bytes)"
    )
    assert not (work / "m.npz").exists()
    code, out, err = _run(capsys, *args, "--max-data-bytes", size)
    assert code == 0, err
    evaluate = ("evaluate", "spec.yaml", "--model", "m.npz", "--data", "train.csv")
    code, out, err = _run(capsys, *evaluate, "--max-data-bytes", 10)
    assert code == 2 and "larger than the data size limit of 10 bytes" in err
