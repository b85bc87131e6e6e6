"""Loading training data with Polars, labels, and the fixed stratified holdout split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from credit_core.evaluation import describe_file_problem
from feature_kernels import FeatureError, FeatureSpec
from training.entity import day_number, entity_features

__all__ = [
    "Split",
    "TrainingDataError",
    "describe_bad_rows",
    "labels",
    "learned_columns",
    "load_frame",
    "stratified_split",
]

NULL_VALUES = ["NA", "", "NULL", " "]
"""Markers of a missing value in CSV/TSV training files (``NA``: Give Me Some Credit; empty:
Home Credit, Zindi; ``NULL`` or a single space: PAKDD 2010)."""


def load_frame(path: Path, spec: FeatureSpec) -> pl.DataFrame:
    """Read a CSV/TSV/Parquet file lazily, keep the spec's columns plus the target, read the
    spec's ``dates`` as day numbers and join the entity features point in time (history tables
    are found next to ``path``)."""
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path}")
    suffixes = path.suffixes
    entity_inputs = set(spec.entity_inputs())
    if suffixes[-1:] == [".parquet"]:
        lf = pl.scan_parquet(path)
    else:
        sep = "\t" if ".tsv" in suffixes else ","
        header = pl.scan_csv(path, separator=sep, infer_schema_length=0).collect_schema()
        # the spec says what each input is: numbers as Float64 whatever the first rows look
        # like, categories as text (a code such as "095" keeps its zero)
        overrides = {
            spec.column_of(n): pl.String if d.type == "categorical" else pl.Float64
            for n, d in spec.inputs.items()
            if n not in entity_inputs
            and spec.column_of(n) in header
            and spec.column_of(n) not in spec.dates  # read as text, then day numbers
        }
        lf = pl.scan_csv(
            path,
            separator=sep,
            null_values=NULL_VALUES,
            infer_schema_length=10000,
            schema_overrides=overrides,
        )
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


class TrainingDataError(ValueError):
    """A training file breaks its feature spec; the message says where and how to fix it."""


_HINTS = {
    "MISSING_REQUIRED": "input {input} is required, but {count} rows have no value: set "
    "`required: false` on inputs.{input} in {spec} (a missing value then reaches the model as "
    "missing) or give it `impute: <value>`",
    "OUT_OF_RANGE": "{count} values of input {input} are outside its `range`: widen "
    "inputs.{input}.range in {spec}, or list codes that mean 'unknown' under `missing_codes`",
    "NOT_INTEGER": "input {input} holds fractions: declare it `type: number` in {spec}",
    "NOT_FINITE": "input {input} holds infinite values: clean them, or list them under "
    "`missing_codes` in {spec}",
    "UNKNOWN_CATEGORY": "input {input} holds categories {spec} does not list: add them to the "
    "feature's `categories` / `mapping`, or set `unknown: missing`",
}


def describe_bad_rows(
    error: FeatureError, data_path: Path, spec: FeatureSpec, spec_path: Path | str
) -> str:
    """What the kernels found wrong in a training file, for a person: one line per problem
    with its data row and file line (from 1), the count of bad rows, and per input a hint of
    the spec change that accepts such data."""
    csv = data_path.suffix != ".parquet"
    args = error.args
    if len(args) < 3 or not isinstance(args[2], dict):  # whole columns (missing, unknown...)
        pairs = args[1] if len(args) > 1 else []
        lines = [
            describe_file_problem(data_path, 0, _file_column(spec, c), m, csv=csv) for c, m in pairs
        ]
        return f"{data_path} does not fit the spec {spec_path}:\n  " + "\n  ".join(lines)
    details: dict[str, Any] = args[2]
    counts = dict(details["per_column"])
    out = [
        f"{details['bad_rows']:,} of {details['n_rows']:,} rows of {data_path} break the spec "
        f"{spec_path}:"
    ]
    shown: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for column, row, reason, description in details["listed"]:
        shown[column] = shown.get(column, 0) + 1
        reasons.setdefault(column, reason)
        out.append(
            "  "
            + describe_file_problem(
                data_path, row + 1, _file_column(spec, column), description, csv=csv
            )
        )
    for column, count in counts.items():
        if count > shown.get(column, 0):
            out.append(
                f"  ... {count - shown.get(column, 0):,} more in column "
                f"{_file_column(spec, column)!r} ({count:,} in all)"
            )
    for column, reason in reasons.items():
        hint = _HINTS.get(reason)
        if hint is not None:
            out.append(
                "hint: " + hint.format(input=column, count=f"{counts[column]:,}", spec=spec_path)
            )
    return "\n".join(out)


def _file_column(spec: FeatureSpec, name: str) -> str:
    return spec.column_of(name) if name in spec.inputs else name


def learned_columns(
    frame: pl.DataFrame, spec: FeatureSpec, rows: npt.NDArray[np.int64]
) -> dict[str, list[str | None]]:
    """The training part's values (``rows``) of every input a ``frequency_rank`` feature
    learns from, as text (what :meth:`FeatureSpec.fitted` counts)."""
    names = {f.input for f in spec.features if f.op == "frequency_rank" and f.input}
    out: dict[str, list[str | None]] = {}
    for name in sorted(names):
        column = frame.get_column(spec.column_of(name)).cast(pl.String)
        out[name] = column.gather(rows).to_list()
    return out


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
