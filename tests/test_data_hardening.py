"""Regression tests for the data side of issue 11 (items 1, 8, 9, 18, 19, 20).

Hostile pickles are written opcode by opcode.  Those that crashed or read stray memory
before the fix are loaded in a child process, so a crash fails the test instead of killing
pytest.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import symgrad
import symgrad.data.io
from symgrad.data import (
    DEFAULT_MAX_BYTES,
    load_data,
    one_hot,
    read_idx,
    safe_load_pickle,
    write_idx,
)
from symgrad.errors import DataError

ARRAY_RULE = "only arrays in the form NumPy itself pickles them are allowed"
RULE = "only NumPy arrays, tuples and lists are allowed"
HINT = "(raise it with max_bytes= or --max-data-bytes)"
PACKAGE_ROOT = Path(symgrad.__file__).resolve().parents[1]


def raises(message: str):
    """pytest.raises(DataError) matching ``message`` exactly."""
    return pytest.raises(DataError, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------------------------------------
# pickle opcodes
# ---------------------------------------------------------------------------------------------

MARK, TUPLE, REDUCE, BUILD, STOP = b"(", b"t", b"R", b"b", b"."
NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"
PROTO3 = b"\x80\x03"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def num(n: int) -> bytes:
    """An int: BININT for 32 bits, LONG1 beyond."""
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def blob(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(fn: bytes, *args: bytes) -> bytes:
    return fn + tup(*args) + REDUCE


def dtype_op(code: str, order: str, state_tail: tuple = (-1, -1, 0)) -> bytes:
    """numpy.dtype(code, False, True) with its state, as NumPy pickles it."""
    state = tup(num(3), text(order), NONE, NONE, NONE, *(num(v) for v in state_tail))
    return call(glob("numpy", "dtype"), text(code), FALSE, TRUE) + state + BUILD


def array_op(shape: tuple, dtype: bytes, data: bytes, fortran: bytes = FALSE) -> bytes:
    """_reconstruct(ndarray, (0,), b'b') then its state (1, shape, dtype, fortran, data)."""
    empty = call(
        glob("numpy._core.multiarray", "_reconstruct"),
        glob("numpy", "ndarray"),
        tup(num(0)),
        blob(b"b"),
    )
    return empty + tup(num(1), tup(*(num(d) for d in shape)), dtype, fortran, data) + BUILD


def ndarray_call(*args: bytes) -> bytes:
    return call(glob("numpy", "ndarray"), *args)


U1 = dtype_op("u1", "|")
F8 = dtype_op("f8", "<")


def test_opcode_builder_makes_numpy_pickles(tmp_path: Path) -> None:
    """The hand-made opcodes above are the path NumPy's own pickles take."""
    data = np.arange(6, dtype="<f8").reshape(2, 3)
    path = tmp_path / "ok.pkl"
    path.write_bytes(PROTO3 + array_op((2, 3), F8, blob(data.tobytes())) + STOP)
    assert pickle.loads(path.read_bytes()).tolist() == data.tolist()
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded, data)
    assert loaded.flags.owndata and loaded.flags.writeable and loaded.base is None
    path.write_bytes(PROTO3 + array_op((2, 3), F8, blob(data.T.tobytes()), TRUE) + STOP)
    np.testing.assert_array_equal(safe_load_pickle(path), data)
    assert safe_load_pickle(path).flags.f_contiguous


def py2str(b: bytes) -> bytes:
    """A Python 2 ``str`` (BINSTRING), read back as text with encoding='latin1'."""
    return b"T" + struct.pack("<i", len(b)) + b


def test_numpy1_python2_pickle_loads(tmp_path: Path) -> None:
    """Nielsen's mnist.pkl.gz form: str payloads, dtype(code, 0, 1) with int flags."""

    def array(data: np.ndarray, code: bytes) -> bytes:
        order = b"|" if data.dtype.itemsize == 1 else b"<"
        state = tup(num(3), py2str(order), NONE, NONE, NONE, num(-1), num(-1), num(0))
        dtype = call(glob("numpy", "dtype"), py2str(code), b"K\x00", b"K\x01") + state + BUILD
        empty = call(
            glob("numpy.core.multiarray", "_reconstruct"),
            glob("numpy", "ndarray"),
            tup(b"K\x00"),
            py2str(b"b"),
        )
        shape = tup(*(num(d) for d in data.shape))
        return empty + tup(num(1), shape, dtype, FALSE, py2str(data.tobytes())) + BUILD

    X = np.arange(8, dtype="<f4").reshape(4, 2) / 8
    y = np.array([1, 0, 1, 1], dtype="<i8")
    pair = tup(array(X, b"f4"), array(y, b"i8"))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02" + tup(pair, pair, pair) + STOP))
    ds = load_data(f"{path}:test", n_inputs=2, n_outputs=2)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.labels, y)


# Loaded in a child: before the fix these segfaulted, read heap memory into X, handed back
# uninitialised memory or tried to allocate a terabyte.
HOSTILE = {
    "offset.pkl": ndarray_call(tup(num(16)), U1, blob(bytes(16)), num(-4096)),
    "no_buffer.pkl": ndarray_call(tup(num(1 << 16)), U1),
    # one byte seen a million times: a tiny file that load_data would copy to 1 MiB (or 1 TiB)
    "strides.pkl": ndarray_call(tup(num(1 << 20)), U1, blob(bytes(1)), num(0), tup(num(0))),
    "huge_empty.pkl": call(
        glob("numpy.core.multiarray", "_reconstruct"),
        glob("numpy", "ndarray"),
        tup(num(1 << 40)),
        blob(b"b"),
    ),
    "short_payload.pkl": array_op((1000,), F8, blob(bytes(8))),
    "dtype_elsize.pkl": array_op((2,), dtype_op("f8", "<", (1, 1, 0)), blob(bytes(16))),
    "list_payload.pkl": array_op((2,), F8, MARK + num(1) + num(2) + b"l"),
    "fortran_seven.pkl": array_op((2,), F8, blob(bytes(16)), num(7)),
}


def _expected(path: Path) -> str:
    name = path.name
    if name in ("offset.pkl", "no_buffer.pkl", "strides.pkl"):
        return f"{path}: refusing to unpickle a call to 'numpy.ndarray': {ARRAY_RULE}"
    if name == "huge_empty.pkl":
        return (
            f"{path}: refusing to unpickle 'numpy.core.multiarray._reconstruct(numpy.ndarray, "
            f"(1099511627776,), b'b')': {ARRAY_RULE}"
        )
    if name == "short_payload.pkl":
        return (
            f"{path}: refusing to unpickle an array of shape (1000,) and dtype float64 with 8 "
            f"bytes of data (expected 8000): {ARRAY_RULE}"
        )
    if name == "dtype_elsize.pkl":
        return (
            f"{path}: refusing to unpickle a dtype with state (3, '<', None, None, None, 1, 1, "
            f"0): {ARRAY_RULE}"
        )
    if name == "list_payload.pkl":
        return (
            f"{path}: refusing to unpickle an array with state (1, (2,), numpy.dtype('f8'), "
            f"False, [1, 2]): {ARRAY_RULE}"
        )
    return (
        f"{path}: refusing to unpickle an array with state (1, (2,), numpy.dtype('f8'), 7, "
        f"b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'...): {ARRAY_RULE}"
    )


CHILD = """
import sys
from symgrad.data import load_data, safe_load_pickle
from symgrad.errors import DataError
for path in sys.argv[1:]:
    try:
        if path.endswith(".gz"):
            load_data(path, n_inputs=4, n_outputs=2)
        else:
            safe_load_pickle(path)
    except DataError as exc:
        print(exc)
    else:
        print("LOADED", path)
"""


def run_child(paths: list[Path], timeout: float = 120) -> list[str]:
    """Load ``paths`` in a fresh interpreter; a crash or a hang fails the calling test."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, f"child exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout.splitlines()


def test_hostile_array_pickles_refused_in_child(tmp_path: Path) -> None:
    paths = []
    for name, body in HOSTILE.items():
        path = tmp_path / name
        path.write_bytes(PROTO3 + body + STOP)
        paths.append(path)
    # The CLI's own path: train --data evil.pkl.gz with X built by ndarray(..., offset=-4096).
    evil = tmp_path / "evil.pkl.gz"
    X = ndarray_call(tup(num(4), num(4)), F8, blob(bytes(128)), num(-4096))
    y = array_op((4,), dtype_op("i8", "<"), blob(bytes(32)))
    evil.write_bytes(gzip.compress(PROTO3 + tup(X, y) + STOP))
    paths.append(evil)
    expected = [_expected(p) for p in paths[:-1]]
    expected.append(f"{evil}: refusing to unpickle a call to 'numpy.ndarray': {ARRAY_RULE}")
    assert run_child(paths) == expected


def test_shared_lists_are_visited_once(tmp_path: Path) -> None:
    # 50**12 paths through 12 lists: walking every path hung; each list is checked once.
    value: list = [np.zeros(1)]
    for _ in range(12):
        value = [value] * 50
    path = tmp_path / "dag.pkl"
    path.write_bytes(pickle.dumps(value, protocol=2))
    assert run_child([path], timeout=60) == [f"LOADED {path}"]


def test_list_containing_itself(tmp_path: Path) -> None:
    loop: list = []
    loop.append(loop)
    path = tmp_path / "loop.pkl"
    path.write_bytes(pickle.dumps(loop, protocol=2))
    with raises(f"{path}: refusing to unpickle a list or tuple that contains itself at [0]"):
        safe_load_pickle(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (glob("numpy", "ndarray"), f"refusing to unpickle a bare 'numpy.ndarray': {RULE}"),
        (
            glob("numpy.core.multiarray", "scalar"),
            f"refusing to unpickle 'numpy.core.multiarray.scalar': {RULE}",
        ),
        (
            call(glob("numpy", "dtype"), text("f8"), TRUE, TRUE),
            f"refusing to unpickle 'numpy.dtype('f8', True, True)': {ARRAY_RULE}",
        ),
        (
            glob("numpy", "dtype") + tup(text("x")) + BUILD,
            f"refusing to set a state on 'numpy.dtype': {ARRAY_RULE}",
        ),
        (
            call(glob("numpy", "dtype"), text("f8"), FALSE, TRUE),
            f"refusing to unpickle a dtype: {RULE}",
        ),
        (
            array_op((2,), F8, blob(bytes(16))) + tup(num(1)) + BUILD,
            "refusing to unpickle an array whose state is set twice",
        ),
        (
            call(
                glob("numpy.core.multiarray", "_reconstruct"),
                glob("numpy", "ndarray"),
                tup(num(0)),
                blob(b"b"),
            ),
            f"refusing to unpickle an array without its state: {RULE}",
        ),
    ],
)
def test_every_step_of_the_array_path_is_checked(tmp_path: Path, body: bytes, message: str):
    path = tmp_path / "x.pkl"
    path.write_bytes(PROTO3 + body + STOP)
    with raises(f"{path}: {message}"):
        safe_load_pickle(path)


# ---------------------------------------------------------------------------------------------
# IDX headers (item 8)
# ---------------------------------------------------------------------------------------------


def test_idx_too_many_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x08\x41" + struct.pack(">65I", 0, *[1] * 64))
    with raises(f"{path}: IDX header declares 65 dimensions; at most 32 are supported"):
        read_idx(path)


def test_idx_empty_with_huge_sizes(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x08\x04" + struct.pack(">4I", 0, *[2**32 - 1] * 3))
    size = (2**32 - 1) ** 3
    with raises(
        f"{path}: IDX header declares shape 0x4294967295x4294967295x4294967295 of uint8, "
        f"{size} bytes per item, over the data size limit of {DEFAULT_MAX_BYTES} bytes {HINT}"
    ):
        read_idx(path)


def test_idx_empty_images_file_through_load_data(tmp_path: Path) -> None:
    (tmp_path / "t-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03" + struct.pack(">3I", 0, 2**32 - 1, 2**32 - 1)
    )
    write_idx(tmp_path / "t-labels-idx1-ubyte", np.zeros(0, dtype=np.uint8))
    images = tmp_path / "t-images-idx3-ubyte"
    with raises(
        f"{images}: IDX header declares shape 0x4294967295x4294967295 of uint8, "
        f"{(2**32 - 1) ** 2} bytes per item, over the data size limit of 1000 bytes {HINT}"
    ):
        load_data(f"idx:{tmp_path / 't'}", n_inputs=4, n_outputs=2, max_bytes=1000)


# ---------------------------------------------------------------------------------------------
# npz members (item 9) and decompression bombs (item 19)
# ---------------------------------------------------------------------------------------------


def npy_bytes(shape: tuple, descr: str = "<f8", data: bytes = b"", version: int = 1) -> bytes:
    """A .npy member: NumPy's header for ``shape`` and ``descr``, then ``data``."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    writer = {1: np.lib.format.write_array_header_1_0, 2: np.lib.format.write_array_header_2_0}
    writer[version](buf, header)
    return buf.getvalue() + data


def write_zip(path: Path, members: dict[str, bytes], deflate: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


Y_OK = npy_bytes((2, 1), data=bytes(16))


@pytest.mark.parametrize("member", ["X.npy", "X"])
def test_npz_member_without_numpy_header(tmp_path: Path, member: str) -> None:
    path = write_zip(tmp_path / "d.npz", {member: b"not an array", "Y.npy": Y_OK})
    with raises(f"{path}: key 'X': member {member!r} does not start with a NumPy array header"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_header_declaring_terabytes(tmp_path: Path) -> None:
    X = npy_bytes((10**12, 2), data=bytes(16))
    path = write_zip(tmp_path / "d.npz", {"X.npy": X, "Y.npy": Y_OK})
    with raises(
        f"{path}: key 'X': header declares shape (1000000000000, 2) of float64, "
        f"16000000000000 bytes, over the data size limit of {DEFAULT_MAX_BYTES} bytes {HINT}"
    ):
        load_data(path, n_inputs=2, n_outputs=1)


def test_npz_budget_is_shared_by_the_members(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((10, 5)), Y=np.zeros((10, 1)))
    with raises(
        f"{path}: key 'Y': header declares shape (10, 1) of float64, 80 bytes, over the data "
        f"size limit, 20 bytes left, of 420 bytes {HINT}"
    ):
        load_data(path, n_inputs=5, n_outputs=1, max_bytes=420)
    assert load_data(path, n_inputs=5, n_outputs=1, max_bytes=480).X.shape == (10, 5)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (
            npy_bytes((-1, 2)),
            "key 'X': header declares shape (-1, 2); expected at most 32 non-negative sizes",
        ),
        (
            b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31),
            "key 'X': member 'X.npy' declares a NumPy array header of 2147483648 bytes; at "
            "most 10000 are allowed",
        ),
        (
            b"\x93NUMPY\x03\x00" + bytes(8),
            "key 'X': member 'X.npy' has .npy format version 3.0; expected 1.0 or 2.0",
        ),
        (
            npy_bytes((2, 1), data=bytes(15)),
            "key 'X': array data is truncated: shape (2, 1) of float64 needs 16 bytes, found 15",
        ),
        (npy_bytes((2, 1), descr="|O"), "key 'X': object arrays are not allowed"),
        (npy_bytes((2, 1), descr="<c16"), "key 'X' has dtype complex128; expected a numeric array"),
    ],
)
def test_npz_bad_headers(tmp_path: Path, X: bytes, message: str) -> None:
    path = write_zip(tmp_path / "d.npz", {"X.npy": X, "Y.npy": Y_OK})
    with raises(f"{path}: {message}"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_deflated_member_larger_than_its_header(tmp_path: Path) -> None:
    # 16 bytes declared, 64 MiB of zeros behind them (64 KiB deflated): np.load returned the
    # 16 bytes; the member is now read to its declared size plus one byte and refused.
    X = npy_bytes((2, 1), data=bytes(16 + (64 << 20)))
    path = write_zip(tmp_path / "d.npz", {"X.npy": X, "Y.npy": Y_OK}, deflate=True)
    assert path.stat().st_size < 1 << 20
    with raises(
        f"{path}: key 'X': member 'X.npy' holds more data than its header declares "
        "(shape (2, 1) of float64, 16 bytes)"
    ):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_compressed_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.zeros((1000, 1000)), y=np.zeros(1000, dtype=np.int8))
    with raises(
        f"{path}: key 'X': header declares shape (1000, 1000) of float64, 8000000 bytes, over "
        f"the data size limit of 1000000 bytes {HINT}"
    ):
        load_data(path, n_inputs=1000, n_outputs=2, max_bytes=1_000_000)


def test_gzip_idx_bomb_refused_by_its_header(tmp_path: Path) -> None:
    images = np.zeros((2000, 100, 100), dtype=np.uint8)  # 20 MB, ~20 KB gzipped
    write_idx(tmp_path / "b-images-idx3-ubyte.gz", images, gzip=True)
    write_idx(tmp_path / "b-labels-idx1-ubyte.gz", np.zeros(2000, dtype=np.uint8), gzip=True)
    path = tmp_path / "b-images-idx3-ubyte.gz"
    message = (
        f"{path}: IDX header declares shape 2000x100x100 of uint8, 20000000 bytes of data, "
        f"over the data size limit of 1000000 bytes {HINT}"
    )
    with raises(message):
        load_data(f"idx:{tmp_path / 'b'}", n_inputs=10000, n_outputs=2, max_bytes=1_000_000)
    with raises(message):
        read_idx(path, max_bytes=1_000_000)


def test_default_limit_is_the_module_constant(tmp_path: Path, monkeypatch) -> None:
    assert DEFAULT_MAX_BYTES == symgrad.data.io.DEFAULT_MAX_BYTES == 1 << 30
    path = tmp_path / "a-idx"
    write_idx(path, np.zeros((300, 10), dtype=np.uint8), gzip=True)
    monkeypatch.setattr(symgrad.data.io, "DEFAULT_MAX_BYTES", 2000)
    with raises(
        f"{path}: IDX header declares shape 300x10 of uint8, 3000 bytes of data, over the data "
        f"size limit of 2000 bytes {HINT}"
    ):
        read_idx(path)


def test_pickle_gz_bomb(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl.gz"
    pair = (np.zeros((1000, 1000)), np.zeros(1000, dtype=np.int64))
    path.write_bytes(gzip.compress(pickle.dumps(pair, protocol=4)))
    assert path.stat().st_size < 100_000
    message = (
        f"{path}: decompressed data is larger than the data size limit of 1000000 bytes {HINT}"
    )
    with raises(message):
        safe_load_pickle(path, max_bytes=1_000_000)
    with raises(message):
        load_data(path, n_inputs=1000, n_outputs=2, max_bytes=1_000_000)


def test_csv_gz_bomb(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(b"x,y\n" + b"1,2\n" * 500_000))
    with raises(
        f"{path}: decompressed data is larger than the data size limit of 100000 bytes {HINT}"
    ):
        load_data(path, n_inputs=1, n_outputs=1, max_bytes=100_000)


def test_endless_empty_gzip_members_are_capped(tmp_path: Path) -> None:
    # Empty members decompress to nothing, so only the compressed input can bound the read.
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(b"x,y\n1,2\n") + gzip.compress(b"", mtime=0) * 200)
    with raises(
        f"{path}: compressed file is larger than twice the data size limit of 1000 bytes {HINT}"
    ):
        load_data(path, n_inputs=1, n_outputs=1, max_bytes=1000)
    assert load_data(path, n_inputs=1, n_outputs=1, max_bytes=10_000).X.shape == (1, 1)


# ---------------------------------------------------------------------------------------------
# bounded reads (item 18)
# ---------------------------------------------------------------------------------------------


def test_special_file_read_is_bounded(tmp_path: Path) -> None:
    # /dev/zero reports st_size 0 and never ends: a CSV reader used to read it forever.
    path = tmp_path / "zero.csv"
    path.symlink_to("/dev/zero")
    assert path.stat().st_size == 0
    with raises(f"{path}: file is larger than the data size limit of 1048576 bytes {HINT}"):
        load_data(path, n_inputs=1, n_outputs=1, max_bytes=1 << 20)


def test_limit_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"x,y\n1,2\n3,4\n")
    size = path.stat().st_size
    assert load_data(path, n_inputs=1, n_outputs=1, max_bytes=size).X.shape == (2, 1)
    with raises(f"{path}: file is larger than the data size limit of {size - 1} bytes {HINT}"):
        load_data(path, n_inputs=1, n_outputs=1, max_bytes=size - 1)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "1"])
def test_bad_max_bytes(tmp_path: Path, bad: object) -> None:
    with raises(f"max_bytes must be a positive integer, got {bad!r}"):
        load_data(tmp_path / "d.csv", n_inputs=1, n_outputs=1, max_bytes=bad)  # type: ignore


# ---------------------------------------------------------------------------------------------
# no allow_pickle advice (item 20), one label encoder
# ---------------------------------------------------------------------------------------------


def test_text_file_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_text("x,y\n1,2\n", encoding="utf-8")
    with raises(f"{path}: not an .npz archive (it does not start with a zip header)") as info:
        load_data(path, n_inputs=1, n_outputs=1)
    assert "allow_pickle" not in str(info.value)


def test_labels_match_by_value_in_every_source(tmp_path: Path) -> None:
    matrix, classes = one_hot(["3", 3.0, 1, " 1 "])
    assert classes == [1, 3]
    np.testing.assert_array_equal(matrix, [[0, 1], [0, 1], [1, 0], [1, 0]])
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("a,k\n0,3.0\n1,1\n", encoding="utf-8")
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, X=np.array([[0.0], [1.0]]), y=np.array([3, 1]))
    for path in (csv_path, npz_path):
        ds = load_data(path, n_inputs=1, n_outputs=2, classes=["3", "1"])
        np.testing.assert_array_equal(ds.labels, [0, 1])
        assert ds.classes == ["3", "1"]
