"""Data sources for train/evaluate/predict: CSV, npz, IDX and the textbook MNIST pickle.

Everything here treats its input as untrusted.  Bad input raises :class:`DataError` with a
single line that names the file, the row (1-based line number for CSV) or key at fault,
and what was expected.  Pickles are only ever read with a restricted unpickler that admits
NumPy's own array reconstruction, checked step by step, never with plain :func:`pickle.load`.
No file is read past :data:`DEFAULT_MAX_BYTES` (after decompression) unless ``max_bytes``
says otherwise.

Sources understood by :func:`load_data`:

* ``data.csv`` / ``data.csv.gz``: a header row, then numeric rows; the target column may
  hold class labels, which are one-hot encoded.
* ``data.npz``: arrays ``X`` and ``Y`` (or ``y``, 1-D integer labels).
* ``idx:PREFIX``: ``PREFIX-images-idx3-ubyte[.gz]`` and ``PREFIX-labels-idx1-ubyte[.gz]``
  (MNIST / Fashion-MNIST layout), or a path to one ``...-images-idx3-ubyte[.gz]`` file with
  its labels file beside it.
* ``mnist.pkl.gz[:train|validation|test]``: the gzipped pickle used by Nielsen's
  *Neural Networks and Deep Learning* (written by Python 2, so read with ``latin1``).

Modules: ``source`` (dispatch), ``dataset`` (shared checks), ``labels`` (the label encoder),
``io`` (opening, bounded reads, gzip), and one per format: ``csv``, ``npz``, ``idx``,
``pickle``.
"""

from .dataset import Dataset
from .idx import read_idx, write_idx
from .io import DEFAULT_MAX_BYTES
from .labels import one_hot
from .pickle import safe_load_pickle
from .source import load_data

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Dataset",
    "load_data",
    "one_hot",
    "read_idx",
    "safe_load_pickle",
    "write_idx",
]
