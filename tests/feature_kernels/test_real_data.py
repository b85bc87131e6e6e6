"""Column path = row path, bit for bit, on the real datasets (skipped when the files are absent)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from feature_kernels import FeaturePipeline, load_spec
from feature_kernels._core import fold_case

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("ALTSCORE_DATA_DIR", ROOT.parent / "shared" / "data"))
GMSC_CSV = DATA / "give_me_some_credit" / "cs-training.csv"
GERMAN_CSV = DATA / "german_credit" / "germancredit.csv"
GMSC_SAMPLE = 2000

Row = tuple[dict[str, Any], dict[str, Any]]


def _read(path: Path, **kw: Any) -> pl.DataFrame:
    if not path.is_file():
        pytest.skip(f"data file {path} is not available")
    return pl.read_csv(path, **kw)


def _rows(pipe: FeaturePipeline, frame: pl.DataFrame) -> list[Row]:
    """Request maps built from the frame: nulls are absent keys, values as Polars hands them out."""
    spec = pipe.spec
    numeric = {n: frame.get_column(spec.column_of(n)).to_list() for n in pipe.numeric_inputs}
    categorical = {
        n: frame.get_column(spec.column_of(n)).to_list() for n in pipe.categorical_inputs
    }
    rows: list[Row] = []
    for i in range(frame.height):
        num = {n: col[i] for n, col in numeric.items() if col[i] is not None}
        cat = {n: str(col[i]) for n, col in categorical.items() if col[i] is not None}
        rows.append((num, cat))
    return rows


def _bits(a: npt.NDArray[np.float32]) -> npt.NDArray[np.uint32]:
    assert a.dtype == np.float32
    return a.view(np.uint32)


def _assert_paths_agree(pipe: FeaturePipeline, frame: pl.DataFrame) -> npt.NDArray[np.float32]:
    rows = _rows(pipe, frame)
    columns = pipe.transform_frame(frame)
    assert columns.shape == (frame.height, pipe.n_features)
    assert not np.isinf(columns).any()

    singles = []
    for i, (num, cat) in enumerate(rows):
        vec, viol = pipe.transform_row(num, cat)
        assert viol == [], (i, num, cat, viol)
        singles.append(vec)
    stacked = np.stack(singles)
    np.testing.assert_array_equal(_bits(columns), _bits(stacked))

    batch, batch_violations = pipe.transform_rows(rows)
    assert all(v == [] for v in batch_violations)
    np.testing.assert_array_equal(_bits(batch), _bits(columns))
    return columns


def test_gmsc_column_path_equals_row_path() -> None:
    pipe = FeaturePipeline(load_spec(ROOT / "specs" / "gmsc.yaml"))
    full = _read(GMSC_CSV, null_values="NA").with_row_index("_row")
    assert full.height == 150_000

    rng = np.random.default_rng(20240611)
    sample_idx = np.sort(rng.choice(full.height, size=GMSC_SAMPLE, replace=False))
    # Also every row with one of the file's oddities (age 0, past-due codes 96/98): few, and the
    # random sample alone could miss them.
    odd = full.filter(
        (pl.col("age") == 0)
        | pl.col("NumberOfTime30-59DaysPastDueNotWorse").is_in([96, 98])
        | pl.col("NumberOfTimes90DaysLate").is_in([96, 98])
    )
    idx = np.union1d(sample_idx, odd.get_column("_row").to_numpy())
    sample = full[idx.tolist()]
    assert sample.height >= GMSC_SAMPLE

    columns = _assert_paths_agree(pipe, sample)

    # The oddities really are in there and come out as the spec says.
    names = pipe.feature_names
    age = columns[:, names.index("age")]
    raw_age = sample.get_column("age").to_numpy()
    assert (raw_age == 0).any()
    assert np.isnan(age[raw_age == 0]).all()
    coded = sample.get_column("NumberOfTime30-59DaysPastDueNotWorse").is_in([96, 98]).to_numpy()
    assert coded.any()
    assert (columns[coded, names.index("past_due_code_reported")] == 1.0).all()
    assert (columns[~coded, names.index("past_due_code_reported")] == 0.0).all()
    assert np.isnan(columns[:, names.index("monthly_income_log")]).any()  # MonthlyIncome NA
    assert columns[:, names.index("revolving_utilization")].max() <= 10.0

    # Rows are independent: the whole file through the column path gives the same sample rows.
    everything = pipe.transform_frame(full)
    np.testing.assert_array_equal(_bits(everything[idx]), _bits(columns))


def test_german_credit_column_path_equals_row_path() -> None:
    pipe = FeaturePipeline(load_spec(ROOT / "specs" / "german_credit.yaml"))
    frame = _read(GERMAN_CSV)
    assert frame.height == 1000
    columns = _assert_paths_agree(pipe, frame)
    names = pipe.feature_names
    # Every one-hot group has exactly one 1 per row (no unknown categories in the file).
    for prefix in (
        "credit_history=",
        "purpose=",
        "housing=",
        "job=",
        "telephone=",
        "foreign_worker=",
    ):
        group = [j for j, n in enumerate(names) if n.startswith(prefix)]
        np.testing.assert_array_equal(
            columns[:, group].sum(axis=1), np.ones(1000, dtype=np.float32)
        )
    assert not np.isnan(columns).any()


def test_pakdd_places_fitted_on_the_training_part_serve_as_trained() -> None:
    """PAKDD 2010 as training reads it (`training.dataset.load_frame`: NULL / single-space
    markers, codes as text), its free-text places capped by `frequency_rank` learned from the
    first 40,000 rows: the row path the server runs equals the column path on all 50,000."""
    from training.dataset import learned_columns, load_frame

    path = DATA / "pakdd2010" / "PAKDD2010_Modeling_Data.tsv.gz"
    if not path.is_file():
        pytest.skip(f"data file {path} is not available")
    spec = load_spec(ROOT / "specs" / "pakdd2010.yaml")
    frame = load_frame(path, spec)
    assert frame.height == 50_000
    fitted = spec.fitted(learned_columns(frame, spec, np.arange(40_000)))
    ranks = {f.name: f for f in fitted.features if f.name.endswith(("_city", "_borough", "zip3"))}
    assert {f.op for f in ranks.values()} == {"ordinal"}
    assert len(ranks["residential_borough"].mapping or {}) == 100  # 14,500 spellings capped
    pipe = FeaturePipeline(fitted)
    sample = frame.slice(0, 3000)
    columns = _assert_paths_agree(pipe, sample)
    borough = columns[:, pipe.feature_names.index("residential_borough")]
    assert np.isnan(borough).mean() > 0.3  # rare boroughs read as missing
    assert set(np.unique(borough[~np.isnan(borough)])) <= set(range(1, 101))
    # case_fold: the file spells one city in several cases (FORTALEZA, Fortaleza); they were
    # counted as one and every spelling gets its code
    city = ranks["residential_city"]
    assert city.case_fold
    assert all(k == k.lower() for k in city.mapping or {})
    spellings = sample.get_column("RESIDENCIAL_CITY").to_list()
    codes = columns[:, pipe.feature_names.index("residential_city")]
    by_city: dict[str, set[str]] = {}
    codes_of: dict[str, set[float | None]] = {}
    for raw, folded, code in zip(spellings, fold_case(spellings), codes.tolist(), strict=True):
        if raw is not None and folded is not None:
            by_city.setdefault(folded, set()).add(raw)
            codes_of.setdefault(folded, set()).add(None if np.isnan(code) else code)
    assert sum(len(s) > 1 for s in by_city.values()) >= 10  # cities spelled in several cases
    assert all(len(c) == 1 for c in codes_of.values())  # ... get one code whatever the case


def test_homecredit_fitted_on_the_training_part_serves_as_trained() -> None:
    """Home Credit (first 5,000 rows) as training reads it (empty field = missing), its
    occupation and organisation types capped by `frequency_rank` learned from the first 4,000
    rows: the row path equals the column path on every row, and the spec's traits hold."""
    from training.dataset import learned_columns, load_frame

    path = DATA / "home_credit" / "application_train_first5000.csv"
    if not path.is_file():
        pytest.skip(f"data file {path} is not available")
    spec = load_spec(ROOT / "specs" / "homecredit.yaml")
    frame = load_frame(path, spec)
    assert frame.height == 5000
    fitted = spec.fitted(learned_columns(frame, spec, np.arange(4000)))
    pipe = FeaturePipeline(fitted)
    columns = _assert_paths_agree(pipe, frame)
    names = pipe.feature_names
    raw = frame.get_column("DAYS_EMPLOYED").to_numpy()
    not_employed = columns[:, names.index("not_employed")]
    assert (raw == 365243).sum() > 500  # pensioners and others
    np.testing.assert_array_equal(not_employed, (raw == 365243).astype(np.float32))
    assert np.isnan(columns[raw == 365243, names.index("days_employed")]).all()
    for ext in ("ext_source_1", "ext_source_2", "ext_source_3"):
        missing = frame.get_column(ext.upper()).is_null().to_numpy()
        assert missing.any()
        assert (np.isnan(columns[:, names.index(ext)]) == missing).all()
    organization = columns[:, names.index("organization")]
    assert set(np.unique(organization[~np.isnan(organization)])) <= set(range(1, 31))
    term = columns[:, names.index("credit_term")]
    credit = frame.get_column("AMT_CREDIT").to_numpy()
    annuity = frame.get_column("AMT_ANNUITY").to_numpy()
    np.testing.assert_allclose(term, (credit / annuity).astype(np.float32), rtol=1e-6)
