"""Tests for symgrad.data: every format's happy path and every documented error."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from symgrad.data import Dataset, load_data, one_hot, read_idx, safe_load_pickle, write_idx
from symgrad.errors import DataError

RULE = "only NumPy arrays, tuples and lists are allowed"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return the path."""
    path.write_text(text, encoding="utf-8")
    return path


def raises(message: str, exact: bool = True):
    """pytest.raises(DataError) matching ``message`` exactly (or as a substring)."""
    pattern = re.escape(message)
    return pytest.raises(DataError, match=f"^{pattern}$" if exact else pattern)


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def test_csv_numeric_single_target(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,c,y\n1,2,3,0.5\n-4,5e-1,6,1.25\n")
    ds = load_data(path, n_inputs=3, n_outputs=1)
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.X, [[1, 2, 3], [-4, 0.5, 6]])
    np.testing.assert_array_equal(ds.Y, [[0.5], [1.25]])
    assert ds.X.dtype == np.float64 and ds.Y.dtype == np.float64
    assert ds.feature_names == ["a", "b", "c"]
    assert ds.target_names == ["y"]
    assert ds.classes is None and ds.labels is None


def test_csv_several_numeric_targets_and_blank_trailing_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "x1,x2,t1,t2\n1,2,3,4\n5,6,7,8\n\n\n")
    ds = load_data(str(path), n_inputs=2, n_outputs=2)
    np.testing.assert_array_equal(ds.X, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(ds.Y, [[3, 4], [7, 8]])
    assert ds.target_names == ["t1", "t2"]


def test_csv_one_hot_sorted_classes(tmp_path: Path) -> None:
    text = "a,b,species\n1,2,virginica\n3,4,setosa\n5,6,versicolor\n7,8,setosa\n"
    ds = load_data(write_text(tmp_path / "iris.csv", text), n_inputs=2, n_outputs=3)
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    np.testing.assert_array_equal(ds.Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 0])
    assert ds.labels.dtype == np.int64
    assert ds.target_names == ["species=setosa", "species=versicolor", "species=virginica"]


def test_csv_one_hot_given_class_order(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,label\n1,cat\n2,dog\n3,bird\n")
    ds = load_data(path, n_inputs=1, n_outputs=3, classes=["dog", "cat", "bird"])
    assert ds.classes == ["dog", "cat", "bird"]
    np.testing.assert_array_equal(ds.Y, [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(ds.labels, [1, 0, 2])


def test_csv_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    rows = "".join(f"{i},{lab}\n" for i, lab in enumerate([10, 2, 1, 2]))
    ds = load_data(write_text(tmp_path / "d.csv", "x,k\n" + rows), n_inputs=1, n_outputs=3)
    assert ds.classes == [1, 2, 10]
    np.testing.assert_array_equal(ds.labels, [2, 1, 0, 1])


def test_csv_label_outside_given_classes(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,label\n1,cat\n2,fox\n")
    with raises(
        f"{path}: row 3, column 'label': label 'fox' is not one of the classes "
        "['cat', 'dog', 'bird']"
    ):
        load_data(path, n_inputs=1, n_outputs=3, classes=["cat", "dog", "bird"])


def test_csv_wrong_number_of_classes(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,label\n1,cat\n2,dog\n")
    with raises(
        f"{path}: column 'label' holds 2 classes ['cat', 'dog']; the spec has 3 outputs; "
        "pass classes to fix the set"
    ):
        load_data(path, n_inputs=1, n_outputs=3)


def test_csv_binary_labels_for_single_output(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,spam\n1,2,yes\n3,4,no\n5,6,yes\n")
    ds = load_data(path, n_inputs=2, n_outputs=1)
    assert ds.classes == ["no", "yes"]
    np.testing.assert_array_equal(ds.Y, [[1], [0], [1]])
    np.testing.assert_array_equal(ds.labels, [1, 0, 1])
    assert ds.target_names == ["spam"]


def test_csv_three_labels_for_single_output(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,t\n1,x\n2,y\n3,z\n")
    with raises(
        f"{path}: column 't' holds 3 classes ['x', 'y', 'z']; "
        "a single output needs numbers or exactly 2 classes"
    ):
        load_data(path, n_inputs=1, n_outputs=1)


def test_csv_named_targets(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,y,b\n1,10,2\n3,30,4\n")
    ds = load_data(path, n_inputs=2, n_outputs=1, targets=["y"])
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(ds.Y, [[10], [30]])
    assert ds.feature_names == ["a", "b"] and ds.target_names == ["y"]


def test_csv_named_label_target_one_hot(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "k,a,b\n1,0.5,0.25\n0,1,2\n")
    ds = load_data(path, n_inputs=2, n_outputs=2, targets=["k"])
    assert ds.classes == [0, 1]
    np.testing.assert_array_equal(ds.Y, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(ds.X, [[0.5, 0.25], [1, 2]])


def test_csv_unknown_target(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,c\n1,2,3\n")
    with raises(f"{path}: unknown target column 'z'; the header has 'a', 'b', 'c'"):
        load_data(path, n_inputs=2, n_outputs=1, targets=["z"])


def test_csv_named_targets_wrong_input_count(tmp_path: Path) -> None:
    path = write_text(tmp_path / "data.csv", "a,b,c,y\n1,2,3,4\n")
    with raises(f"{path}: expected 4 input columns for the spec, found 3"):
        load_data(path, n_inputs=4, n_outputs=1, targets=["y"])


def test_csv_wrong_column_count(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,c\n1,2,3\n")
    with raises(
        f"{path}: expected n_inputs + n_outputs = 7 or n_inputs + 1 = 5 columns for the spec, "
        "found 3"
    ):
        load_data(path, n_inputs=4, n_outputs=3)
    with raises(f"{path}: expected 5 columns for the spec, found 3"):
        load_data(path, n_inputs=4, n_outputs=1)


def test_csv_empty_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "")
    with raises(f"{path}: file is empty; expected a header row and data rows"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_csv_header_only(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,y\n\n")
    with raises(f"{path}: has a header but no data rows"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,y\n1,2,3\n4,5\n")
    with raises(f"{path}: row 3 has 2 cells, header has 3"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_non_numeric_cell(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,name,y\n1,2,3\n4,abc,6\n")
    with raises(f"{path}: row 3, column 'name': 'abc' is not a number"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_empty_cell(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,b,y\n1,,3\n")
    with raises(f"{path}: row 2, column 'b': '' is not a number"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_mixed_target_column_reports_bad_cell(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,y\n1,0.5\n2,oops\n")
    with raises(f"{path}: row 3, column 'y': 'oops' is not a number"):
        load_data(path, n_inputs=1, n_outputs=1)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_csv_non_finite(tmp_path: Path, bad: str) -> None:
    path = write_text(tmp_path / "d.csv", f"a,b,y\n1,2,3\n4,5,6\n7,{bad},9\n")
    with raises(f"{path}: row 4, column 'b': '{bad}' is not a finite number"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_row_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", 'a,"multi\nline",y\n1,2,3\n4,x,6\n')
    with raises(f"{path}: row 4, column 'multi\\nline': 'x' is not a number", exact=False):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_interior_blank_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,y\n1,2\n\n3,4\n")
    with raises(f"{path}: row 3 is blank; blank lines are only allowed at the end of the file"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_csv_numeric_header_rejected(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "1,2\n3,4\n")
    with raises(
        f"{path}: row 1 holds only numbers (1, 2); expected a header row naming the columns"
    ):
        load_data(path, n_inputs=1, n_outputs=1)


def test_csv_duplicate_header(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "a,a,y\n1,2,3\n")
    with raises(f"{path}: row 1 (header): column name 'a' appears twice"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_csv_gz_bom_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    rows = "".join(f"{i},{i * 2}\n" for i in range(10))
    path.write_bytes(gzip.compress(("\ufeffx,y\n" + rows).encode("utf-8")))
    ds = load_data(path, n_inputs=1, n_outputs=1, limit=4)
    assert ds.feature_names == ["x"]
    np.testing.assert_array_equal(ds.X[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.Y[:, 0], [0, 2, 4, 6])


def test_csv_limit_skips_bad_rows_after_it(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "x,y\n1,2\n3,4\nbad,row\n")
    ds = load_data(path, n_inputs=1, n_outputs=1, limit=2)
    assert ds.X.shape == (2, 1)


def test_csv_dtype_float32(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "x,y\n0.5,1\n")
    ds = load_data(path, n_inputs=1, n_outputs=1, dtype=np.float32)
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.float32
    assert ds.X[0, 0] == np.float32(0.5)


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"x,y\n1,\xff\n")
    with raises(f"{path}: not UTF-8 text", exact=False):
        load_data(path, n_inputs=1, n_outputs=1)


# ---------------------------------------------------------------------------------------------
# general
# ---------------------------------------------------------------------------------------------


def test_unsupported_format(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.txt", "x")
    with raises(
        f"{path}: unsupported data source; supported formats are .csv, .csv.gz, .npz, "
        "idx:PREFIX, an ...-images-idx3-ubyte[.gz] file, and a .pkl/.pkl.gz pickle of (X, y) "
        "pairs (PATH[:train|validation|test])"
    ):
        load_data(path, n_inputs=1, n_outputs=1)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with raises(f"{path}: file not found"):
        load_data(path, n_inputs=1, n_outputs=1)


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_bad_limit(tmp_path: Path, limit: object) -> None:
    with raises(f"limit must be a positive integer, got {limit!r}"):
        load_data(tmp_path / "d.csv", n_inputs=1, n_outputs=1, limit=limit)  # type: ignore


def test_non_float_dtype_rejected(tmp_path: Path) -> None:
    with raises("dtype must be a floating-point type, got int32"):
        load_data(tmp_path / "d.csv", n_inputs=1, n_outputs=1, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# one_hot
# ---------------------------------------------------------------------------------------------


def test_one_hot_default_and_given_classes() -> None:
    matrix, classes = one_hot([3, 1, 3, 2])
    assert classes == [1, 2, 3]
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0]])
    matrix, classes = one_hot(np.array(["b", "a"]), classes=["b", "a", "c"])
    assert classes == ["b", "a", "c"]
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0]])


def test_one_hot_unknown_label() -> None:
    with raises("one_hot: label 7 at index 2 is not one of the classes [0, 1]"):
        one_hot([0, 1, 7], classes=[0, 1])


def test_one_hot_duplicate_class() -> None:
    with raises("one_hot: class 1.0 appears twice in classes"):
        one_hot([1], classes=[1, 1.0])


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def test_npz_X_and_Y(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    Y = np.arange(8, dtype=np.int32).reshape(4, 2)
    np.savez(path, X=X, Y=Y)
    ds = load_data(path, n_inputs=3, n_outputs=2)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.Y, Y)
    assert ds.X.dtype == np.float64 and ds.Y.dtype == np.float64
    assert ds.feature_names == ["x0", "x1", "x2"] and ds.target_names == ["y0", "y1"]
    assert ds.classes is None


def test_npz_labels_one_hot_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.eye(4), y=np.array([2, 0, 1, 2]))
    ds = load_data(path, n_inputs=4, n_outputs=3, limit=3)
    np.testing.assert_array_equal(ds.X, np.eye(4)[:3])
    np.testing.assert_array_equal(ds.Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(ds.labels, [2, 0, 1])
    assert ds.classes == [0, 1, 2]


def test_npz_labels_with_given_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 1)), y=np.array([5, 7, 5]))
    ds = load_data(path, n_inputs=1, n_outputs=2, classes=[7, 5])
    np.testing.assert_array_equal(ds.Y, [[0, 1], [1, 0], [0, 1]])
    assert ds.classes == [7, 5]


def test_npz_single_output_1d_targets(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((2, 1)), Y=np.array([0.25, 0.75]))
    ds = load_data(path, n_inputs=1, n_outputs=1)
    np.testing.assert_array_equal(ds.Y, [[0.25], [0.75]])


def test_npz_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 1)), y=np.array([0, 1, 3]))
    with raises(
        f"{path}: key 'y': index 2: label 3 is out of range for 3 outputs (expected integers 0..2)"
    ):
        load_data(path, n_inputs=1, n_outputs=3)


def test_npz_object_array_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([[1, "a"]], dtype=object), Y=np.zeros((1, 1)))
    with raises(f"{path}: key 'X': object arrays are not allowed"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_npz_missing_X(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.zeros((1, 1)), Y=np.zeros((1, 1)))
    with raises(f"{path}: missing array 'X' (keys found: 'inputs', 'Y')"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_missing_Y(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((1, 1)))
    with raises(f"{path}: missing array 'Y' or 'y' (keys found: 'X')"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_X_not_2d(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros(3), Y=np.zeros((3, 1)))
    with raises(f"{path}: key 'X' must be 2-D (samples, inputs), found shape (3,)"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_wrong_input_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((2, 3)), Y=np.zeros((2, 1)))
    with raises(f"{path}: expected 4 input columns for the spec, found 3"):
        load_data(path, n_inputs=4, n_outputs=1)


def test_npz_wrong_output_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((2, 3)), Y=np.zeros((2, 2)))
    with raises(f"{path}: key 'Y' has 2 columns but the spec has 3 outputs"):
        load_data(path, n_inputs=3, n_outputs=3)


def test_npz_sample_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 1)), Y=np.zeros((2, 1)))
    with raises(f"{path}: key 'X' has 3 samples but key 'Y' has 2"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_non_numeric_dtype(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([["a"]]), Y=np.zeros((1, 1)))
    with raises(f"{path}: key 'X' has dtype <U1; expected a numeric array"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_non_finite(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    X = np.zeros((3, 2))
    X[1, 1] = np.nan
    X[2, 0] = np.inf
    np.savez(path, X=X, Y=np.zeros((3, 1)))
    with raises(f"{path}: key 'X' has a non-finite value (nan) at index (1, 1)"):
        load_data(path, n_inputs=2, n_outputs=1)
    np.savez(path, X=np.zeros((2, 2)), y=np.array([0.0, -np.inf]))
    with raises(f"{path}: key 'y' has a non-finite value (-inf) at index 1"):
        load_data(path, n_inputs=2, n_outputs=1)


def test_npz_that_is_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(pickle.dumps({"X": 1}))
    with raises(f"{path}: holds pickled data, which is not allowed; expected an .npz archive"):
        load_data(path, n_inputs=1, n_outputs=1)


def test_npz_that_is_garbage(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"PK\x03\x04garbage")
    with raises(f"{path}: not an .npz archive", exact=False):
        load_data(path, n_inputs=1, n_outputs=1)


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / "a-idx3"
    write_idx(path, array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_layout(tmp_path: Path) -> None:
    path = tmp_path / "l"
    write_idx(path, np.array([1, 2, 3], dtype=np.int16))
    assert path.read_bytes() == b"\x00\x00\x0b\x01\x00\x00\x00\x03\x00\x01\x00\x02\x00\x03"


def test_idx_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    plain_named_gz = tmp_path / "x.gz"
    gz_named_plain = tmp_path / "y"
    write_idx(plain_named_gz, np.array([7], dtype=np.uint8), gzip=False)
    write_idx(gz_named_plain, np.array([9], dtype=np.uint8), gzip=True)
    assert read_idx(plain_named_gz).tolist() == [7]
    assert read_idx(gz_named_plain).tolist() == [9]


def test_write_idx_unsupported_dtype(tmp_path: Path) -> None:
    path = tmp_path / "x"
    with raises(
        f"{path}: cannot write dtype int64 as IDX; supported dtypes are uint8, int8, int16, "
        "int32, float32 and float64"
    ):
        write_idx(path, np.zeros(2, dtype=np.int64))


def _raw(path: Path, data: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = _raw(tmp_path / "x", b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with raises(f"{path}: not an IDX file (expected magic 0x0000, found 0x0102)"):
        read_idx(path)


def test_idx_unknown_type(tmp_path: Path) -> None:
    path = _raw(tmp_path / "x", b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with raises(
        f"{path}: unknown IDX type code 0x07 (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E)"
    ):
        read_idx(path)


def test_idx_too_short_and_truncated_header(tmp_path: Path) -> None:
    path = _raw(tmp_path / "x", b"\x00\x00")
    with raises(f"{path}: too short for an IDX header (2 bytes)"):
        read_idx(path)
    path = _raw(tmp_path / "y", b"\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00")
    with raises(f"{path}: IDX header is truncated: expected 3 dimension sizes"):
        read_idx(path)
    path = _raw(tmp_path / "z", b"\x00\x00\x08\x00")
    with raises(f"{path}: IDX header declares 0 dimensions"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_payload(tmp_path: Path, compress: bool) -> None:
    header = b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2)
    path = _raw(tmp_path / "x", header + bytes(7), compress)
    with raises(f"{path}: IDX payload is truncated: shape 2x2x2 needs 8 bytes of data, found 7"):
        read_idx(path)


def test_idx_lying_header_does_not_allocate(tmp_path: Path) -> None:
    header = b"\x00\x00\x0e\x03" + struct.pack(">3I", 2**32 - 1, 2**16, 2**16)
    path = _raw(tmp_path / "x", header + bytes(16))
    with raises(
        f"{path}: IDX header declares shape 4294967295x65536x65536 of float64, "
        "147573952555316674560 bytes of data, over the data size limit of 1073741824 bytes "
        "(raise it with max_bytes= or --max-data-bytes)"
    ):
        read_idx(path)
    with raises(f"{path}: IDX payload is truncated: shape 4294967295x65536x65536 needs ", False):
        read_idx(path, max_bytes=2**70)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_oversized_payload(tmp_path: Path, compress: bool) -> None:
    header = b"\x00\x00\x0b\x01" + struct.pack(">I", 2)
    path = _raw(tmp_path / "x", header + bytes(5), compress)
    with raises(
        f"{path}: IDX payload is larger than its header declares: shape 2 needs 4 bytes of "
        "data, found more"
    ):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 100) + bytes(100))
    path = _raw(tmp_path / "x", data[: len(data) // 2])
    with raises(f"{path}: corrupt or truncated gzip data", exact=False):
        read_idx(path)


def make_idx_pair(
    prefix: Path, images: np.ndarray, labels: np.ndarray, compress: bool = False
) -> None:
    """Write PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz]."""
    suffix = ".gz" if compress else ""
    write_idx(f"{prefix}-images-idx3-ubyte{suffix}", images, gzip=compress)
    write_idx(f"{prefix}-labels-idx1-ubyte{suffix}", labels, gzip=compress)


IMAGES = np.array([[[0, 255], [51, 102]], [[255, 255], [0, 0]], [[1, 2], [3, 4]]], dtype=np.uint8)
LABELS = np.array([2, 0, 1], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_prefix_load(tmp_path: Path, compress: bool) -> None:
    make_idx_pair(tmp_path / "train", IMAGES, LABELS, compress)
    ds = load_data(f"idx:{tmp_path / 'train'}", n_inputs=4, n_outputs=3)
    np.testing.assert_array_equal(ds.X, IMAGES.reshape(3, 4) / 255.0)
    assert ds.X.min() >= 0 and ds.X.max() <= 1
    np.testing.assert_array_equal(ds.Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(ds.labels, [2, 0, 1])
    assert ds.classes == [0, 1, 2]
    assert ds.feature_names == ["pixel0", "pixel1", "pixel2", "pixel3"]
    assert ds.target_names == ["label=0", "label=1", "label=2"]


def test_idx_prefix_mixed_compression_and_limit(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", IMAGES, gzip=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", LABELS)
    ds = load_data(f"idx:{tmp_path / 't10k'}", n_inputs=4, n_outputs=3, limit=2)
    assert ds.X.shape == (2, 4)
    np.testing.assert_array_equal(ds.labels, [2, 0])


def test_idx_single_images_path(tmp_path: Path) -> None:
    make_idx_pair(tmp_path / "train", IMAGES, LABELS, compress=True)
    ds = load_data(tmp_path / "train-images-idx3-ubyte.gz", n_inputs=4, n_outputs=3)
    np.testing.assert_array_equal(ds.labels, [2, 0, 1])


def test_idx_single_images_path_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, IMAGES)
    base = tmp_path / "train-labels-idx1-ubyte"
    with raises(f"{path}: no labels file beside it (looked for {base} and {base}.gz)"):
        load_data(path, n_inputs=4, n_outputs=3)


def test_idx_prefix_missing_files(tmp_path: Path) -> None:
    base = f"{tmp_path / 'nope'}-images-idx3-ubyte"
    with raises(f"idx:{tmp_path / 'nope'}: no images file (looked for {base} and {base}.gz)"):
        load_data(f"idx:{tmp_path / 'nope'}", n_inputs=4, n_outputs=3)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    make_idx_pair(tmp_path / "train", IMAGES, LABELS[:2])
    images = f"{tmp_path / 'train'}-images-idx3-ubyte"
    labels = f"{tmp_path / 'train'}-labels-idx1-ubyte"
    with raises(f"{images}: 3 images but {labels} has 2 labels"):
        load_data(f"idx:{tmp_path / 'train'}", n_inputs=4, n_outputs=3)


def test_idx_label_too_large(tmp_path: Path) -> None:
    make_idx_pair(tmp_path / "train", IMAGES, np.array([0, 1, 5], dtype=np.uint8))
    labels = f"{tmp_path / 'train'}-labels-idx1-ubyte"
    with raises(
        f"{labels}: index 2: label 5 is out of range for 3 outputs (expected integers 0..2)"
    ):
        load_data(f"idx:{tmp_path / 'train'}", n_inputs=4, n_outputs=3)


def test_idx_wrong_pixel_count(tmp_path: Path) -> None:
    make_idx_pair(tmp_path / "train", IMAGES, LABELS)
    images = f"{tmp_path / 'train'}-images-idx3-ubyte"
    with raises(f"{images}: expected 784 input columns for the spec, found 4"):
        load_data(f"idx:{tmp_path / 'train'}", n_inputs=784, n_outputs=3)


@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    ds = load_data(f"idx:{FASHION / 't10k'}", n_inputs=784, n_outputs=10, limit=100)
    assert ds.X.shape == (100, 784) and ds.Y.shape == (100, 10)
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0
    np.testing.assert_array_equal(ds.Y.sum(axis=1), np.ones(100))
    np.testing.assert_array_equal(ds.Y.argmax(axis=1), ds.labels)


# ---------------------------------------------------------------------------------------------
# pickles
# ---------------------------------------------------------------------------------------------


def nielsen_parts() -> tuple:
    """A tiny (training, validation, test) tuple shaped like mnist.pkl.gz."""
    rng = np.random.default_rng(0)
    parts = []
    for n in (5, 3, 2):
        X = rng.random((n, 4), dtype=np.float32)
        y = np.arange(n, dtype=np.int64) % 3
        parts.append((X, y))
    return tuple(parts)


def test_nielsen_pickle_protocol2_gz(tmp_path: Path) -> None:
    parts = nielsen_parts()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(parts, protocol=2)))
    ds = load_data(path, n_inputs=4, n_outputs=3)
    np.testing.assert_array_equal(ds.X, parts[0][0].astype(np.float64))
    np.testing.assert_array_equal(ds.labels, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(ds.Y[1], [0, 1, 0])
    assert ds.classes == [0, 1, 2]
    for index, split in enumerate(["train", "validation", "test"]):
        ds = load_data(f"{path}:{split}", n_inputs=4, n_outputs=3, limit=2)
        np.testing.assert_array_equal(ds.X, parts[index][0][:2])
    loaded = safe_load_pickle(path)
    assert isinstance(loaded, tuple) and len(loaded) == 3


def test_default_protocol_plain_pickle(tmp_path: Path) -> None:
    path = tmp_path / "pair.pkl"
    X, y = nielsen_parts()[0]
    path.write_bytes(pickle.dumps([X, y]))
    ds = load_data(path, n_inputs=4, n_outputs=3)
    np.testing.assert_array_equal(ds.X, X)


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` (BINSTRING), like pickles made by Python 2."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def test_python2_style_pickle_loads(tmp_path: Path) -> None:
    parts = nielsen_parts()
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(parts)
    data = buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"_codecs" not in data and b"numpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(data))
    ds = load_data(f"{path}:validation", n_inputs=4, n_outputs=3)
    np.testing.assert_array_equal(ds.X, parts[1][0])
    np.testing.assert_array_equal(ds.labels, parts[1][1])


class _SystemPayload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalPayload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.target)!r}, 'w').close()",))


class _PopenPayload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.target)],))


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (_SystemPayload, "os.system"),
        (_EvalPayload, "builtins.eval"),
        (_PopenPayload, "subprocess.Popen"),
    ],
)
def test_malicious_globals_refused(tmp_path: Path, payload: type, name: str, protocol: int) -> None:
    target = tmp_path / "pwned_x"
    path = tmp_path / "mnist.pkl.gz"
    parts = nielsen_parts()
    evil = (parts[0], parts[1], (parts[2][0], payload(target)))
    path.write_bytes(gzip.compress(pickle.dumps(evil, protocol=protocol)))
    with raises(f"{path}: refusing to unpickle '{name}': {RULE}"):
        load_data(path, n_inputs=4, n_outputs=3)
    with raises(f"{path}: refusing to unpickle '{name}': {RULE}"):
        safe_load_pickle(path)
    assert not target.exists()


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ({"X": 1}, "a dict"),
        ("rm -rf /", "a str"),
        (((np.zeros(2), [b"raw"]),), "a bytes at [0][1][0]"),
        ((np.zeros(1), 3), "an int at [1]"),
        ((np.array(["a"]),), "an array of dtype <U1 at [0]"),
        ((np.array([1, "a"], dtype=object),), "an array of dtype object at [0]"),
    ],
)
def test_non_array_payloads_refused(tmp_path: Path, payload: object, what: str) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with raises(f"{path}: refusing to unpickle {what}: {RULE}", exact=False):
        safe_load_pickle(path)


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    # _codecs.encode is admitted only in the form protocol-2 pickles use for bytes.
    data = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    path = _raw(tmp_path / "x.pkl", data)
    with raises(f"{path}: not a valid pickle of NumPy arrays", exact=False):
        safe_load_pickle(path)


def test_pickle_wrong_structure(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((np.zeros(1),), protocol=2)))
    with raises(
        f"{path}: expected a tuple (training, validation, test) of (X, y) array pairs, "
        "found a tuple of 1 items"
    ):
        load_data(path, n_inputs=1, n_outputs=2)


def test_pickle_unknown_split(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl.gz"
    with raises(f"{path}: unknown split 'valid'; expected train, validation or test"):
        load_data(f"{path}:valid", n_inputs=1, n_outputs=2)


def test_pickle_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(nielsen_parts(), protocol=2)))
    with raises(
        f"{path}:train: y: index 2: label 2 is out of range for 2 outputs (expected integers 0..1)"
    ):
        load_data(path, n_inputs=4, n_outputs=2)


def test_pickle_not_a_pickle(tmp_path: Path) -> None:
    path = _raw(tmp_path / "m.pkl", b"")
    with raises(f"{path}: pickle is truncated (Ran out of input)"):
        safe_load_pickle(path)
    path = _raw(tmp_path / "n.pkl", b"hello world")
    with raises(f"{path}: not a valid pickle of NumPy arrays", exact=False):
        safe_load_pickle(path)
