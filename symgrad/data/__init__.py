"""Data sources for train/evaluate/predict: CSV, npz, IDX and the textbook MNIST pickle."""

from .core import Dataset, load_data, one_hot, read_idx, safe_load_pickle, write_idx

__all__ = ["Dataset", "load_data", "one_hot", "read_idx", "safe_load_pickle", "write_idx"]
