"""Loading training data with Polars, labels, and the fixed stratified holdout split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from feature_kernels import FeatureSpec
from training.entity import day_number, entity_features

__all__ = ["Split", "labels", "load_frame", "stratified_split"]

NULL_VALUES = ["NA", ""]


def load_frame(path: Path, spec: FeatureSpec) -> pl.DataFrame:
    """Read a CSV/TSV/Parquet file lazily, keep the spec's columns plus the target, read the
    spec's ``dates`` as day numbers and join the entity features point in time (history tables
    are found next to ``path``)."""
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    suffixes = path.suffixes
    if suffixes[-1:] == [".parquet"]:
        lf = pl.scan_parquet(path)
    else:
        sep = "\t" if ".tsv" in suffixes else ","
        lf = pl.scan_csv(path, separator=sep, null_values=NULL_VALUES, infer_schema_length=10000)
    entity_inputs = set(spec.entity_inputs())
    wanted = [spec.column_of(n) for n in spec.inputs if n not in entity_inputs]
    wanted.append(spec.target.column)
    if spec.entity is not None:
        wanted += [spec.entity.key, spec.entity.as_of]
    schema = lf.collect_schema()
    missing = [c for c in wanted if c not in schema]
    if spec.target.column in missing:
        raise ValueError(f"{path}: target column {spec.target.column!r} is missing")
    if spec.entity is not None and (spec.entity.key in missing or spec.entity.as_of in missing):
        raise ValueError(
            f"{path}: entity columns {spec.entity.key!r}/{spec.entity.as_of!r} missing"
        )
    present = list(dict.fromkeys(c for c in wanted if c in schema))
    lf = lf.select(present)
    dates = [c for c in spec.dates if c in present]
    frame = (lf.with_columns([day_number(c) for c in dates]) if dates else lf).collect()
    if spec.entity is None:
        return frame
    features = entity_features(
        frame.get_column(spec.entity.key),
        frame.get_column(spec.entity.as_of),
        spec.entity,
        path.parent,
    )
    return pl.concat([frame, features], how="horizontal")


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
