"""Fault injection: concurrent atomic writes, failing writes, interrupted training, divergence."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import default_signals

from symgrad.codegen import generate_source
from symgrad.runtime import atomic

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "symgrad.cli", *args],
        cwd=ROOT,
        env=kw.pop("env", ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,  # the interrupt tests send SIGINT/SIGTERM
        **kw,
    )


def test_concurrent_generate_same_file(tmp_path):
    target = tmp_path / "out.py"
    spec = str(ROOT / "examples" / "mlp_digits.yaml")
    procs = [cli("generate", spec, "-o", str(target)) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    text = target.read_text()
    compile(text, str(target), "exec")
    assert text == generate_source(spec, spec_file=Path(spec).as_posix())
    assert sorted(os.listdir(tmp_path)) == ["out.py"]


def test_failed_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_text(target, "new content")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_failed_replace_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


SPEC = """name: interrupt_net
inputs: 10
layers:
  - {units: 64, activation: tanh}
  - {units: 3, activation: softmax}
loss: cross_entropy
optimizer: {name: sgd, learning_rate: 0.05, batch_size: 10, epochs: EPOCHS}
init: {scheme: xavier, seed: 3}
"""


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 10))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    lines = [",".join([f"x{i}" for i in range(10)] + ["label"])]
    lines += [",".join(f"{v:.6f}" for v in row) + f",{c}" for row, c in zip(X, y)]
    (d / "data.csv").write_text("\n".join(lines) + "\n")
    (d / "spec.yaml").write_text(SPEC.replace("EPOCHS", "300"))
    ref = d / "ref.npz"
    p = cli(
        "train", str(d / "spec.yaml"), "--data", str(d / "data.csv"), "--out", str(ref), "--quiet"
    )
    t0 = time.perf_counter()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return d, time.perf_counter() - t0


def interrupt_trial(d: Path, trial: int, seed: int, sig) -> None:
    out = d / f"m{trial}.npz"
    ckpt = Path(str(out) + ".ckpt.npz")
    args = (
        "train",
        str(d / "spec.yaml"),
        "--data",
        str(d / "data.csv"),
        "--out",
        str(out),
        "--quiet",
    )
    p = cli(*args)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the signal handlers are in place once the first epoch is saved
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("training finished before the signal")
    assert p.returncode == 130, err
    assert "interrupted after" in err and "--resume" in err
    with np.load(ckpt, allow_pickle=False) as f:
        assert np.isfinite(f["theta"]).all()
        done = int(f["epochs_done"])
    assert 1 <= done < 300
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]
    p = cli(*args, "--resume")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    with np.load(out, allow_pickle=False) as a, np.load(d / "ref.npz", allow_pickle=False) as b:
        assert np.array_equal(a["theta"], b["theta"])
        assert int(a["epochs_done"]) == int(b["epochs_done"]) == 300


def test_interrupt_and_resume_once(train_setup):
    d, _ = train_setup
    interrupt_trial(d, 0, 0, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(1, 7))
def test_interrupt_and_resume_many(train_setup, trial):
    d, _ = train_setup
    interrupt_trial(d, trial, 1000 + trial, signal.SIGINT if trial % 2 else signal.SIGTERM)


DIVERGE = """name: diverge
inputs: 3
layers:
  - {units: 8, activation: relu}
  - {units: 1, activation: identity}
loss: mse
optimizer: {name: gd, learning_rate: 1000000, epochs: 50}
"""


def test_divergence_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 3)) * 10
    rows = ["a,b,c,t"] + [f"{r[0]},{r[1]},{r[2]},{r.sum()}" for r in X]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "s.yaml").write_text(DIVERGE)
    out = tmp_path / "m.npz"
    p = cli(
        "train",
        str(tmp_path / "s.yaml"),
        "--data",
        str(tmp_path / "d.csv"),
        "--out",
        str(out),
        "--quiet",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode not in (0, 3), err
    ours = [ln for ln in err.splitlines() if ln.startswith("symgrad:")]
    assert len(ours) == 1, err
    assert "epoch" in ours[0] and "batch" in ours[0] and "1000000" in ours[0], ours[0]
    ckpt = Path(str(out) + ".ckpt.npz")
    if ckpt.exists():
        with np.load(ckpt, allow_pickle=False) as f:
            assert np.isfinite(f["theta"]).all()


def test_divergence_stderr_is_one_line(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 3)) * 10
    rows = ["a,b,c,t"] + [f"{r[0]},{r[1]},{r[2]},{r.sum()}" for r in X]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "s.yaml").write_text(DIVERGE)
    p = cli(
        "train",
        str(tmp_path / "s.yaml"),
        "--data",
        str(tmp_path / "d.csv"),
        "--out",
        str(tmp_path / "m.npz"),
        "--quiet",
    )
    _, err = p.communicate(timeout=120)
    assert len(err.splitlines()) == 1, err
