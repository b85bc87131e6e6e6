"""Loading training data with Polars, labels, and the fixed stratified holdout split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from feature_kernels import FeatureSpec

__all__ = ["Split", "labels", "load_frame", "stratified_split"]

NULL_VALUES = ["NA", ""]


def load_frame(path: Path, spec: FeatureSpec) -> pl.DataFrame:
    """Read a CSV/TSV/Parquet file lazily and keep the spec's columns plus the target."""
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    suffixes = path.suffixes
    if suffixes[-1:] == [".parquet"]:
        lf = pl.scan_parquet(path)
    else:
        sep = "\t" if ".tsv" in suffixes else ","
        lf = pl.scan_csv(path, separator=sep, null_values=NULL_VALUES, infer_schema_length=10000)
    wanted = [spec.column_of(n) for n in spec.inputs] + [spec.target.column]
    schema = lf.collect_schema()
    missing = [c for c in wanted if c not in schema]
    if spec.target.column in missing:
        raise ValueError(f"{path}: target column {spec.target.column!r} is missing")
    present = [c for c in wanted if c in schema]
    return lf.select(present).collect()


def labels(frame: pl.DataFrame, spec: FeatureSpec) -> npt.NDArray[np.int8]:
    """1 where the target column holds one of the spec's positive (default) values."""
    col = frame.get_column(spec.target.column)
    if col.null_count():
        raise ValueError(f"target column {spec.target.column!r} has {col.null_count()} nulls")
    positive = [str(p) for p in spec.target.positive]
    y = col.cast(pl.String).is_in(positive).cast(pl.Int8).to_numpy()
    if y.min() == y.max():
        raise ValueError(f"target column {spec.target.column!r} has a single class")
    return y


@dataclass(frozen=True)
class Split:
    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def stratified_split(y: npt.NDArray[np.int8], test_size: float, seed: int) -> Split:
    """The documented holdout: ``train_test_split(test_size, stratify=y, random_state=seed)`` over
    the rows in file order (defaults 0.2 and 42, the protocol of ../shared/PEERS.md)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    return Split(train=np.sort(tr), test=np.sort(te))
