"""Row/column parity for the operations entity features use: ``difference`` (e.g. age from two
day numbers) and ``missing_indicator`` of a categorical input (e.g. "not referred")."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_kernels import FeaturePipeline, parse_spec

PIPELINE = FeaturePipeline(
    parse_spec(
        {
            "name": "ops",
            "version": 1,
            "target": {"column": "y", "positive": [1]},
            "inputs": {
                "a": {"type": "number", "required": False},
                "b": {"type": "number", "required": False},
                "c": {"type": "categorical", "required": False},
            },
            "features": [
                {"name": "d", "op": "difference", "left": "a", "right": "b", "scale": 0.25,
                 "reason": "D"},
                {"name": "d1", "op": "difference", "left": "a", "right": "b", "reason": "D1"},
                {"name": "m", "op": "missing_indicator", "input": "c", "reason": "M"},
            ],
        }
    )
)  # fmt: skip

numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 17_000.5]),
)
rows = st.lists(
    st.tuples(numbers, numbers, st.one_of(st.none(), st.just(""), st.text(max_size=5))),
    min_size=1,
    max_size=30,
)


def _check(batch: list[tuple[float | None, float | None, str | None]]) -> None:
    a = np.array([math.nan if x is None else x for x, _, _ in batch])
    b = np.array([math.nan if y is None else y for _, y, _ in batch])
    c = [z for _, _, z in batch]
    columns = PIPELINE.transform_columns({"a": a, "b": b}, {"c": c}, len(batch))
    for i, (x, y, z) in enumerate(batch):
        numeric = {k: v for k, v in (("a", x), ("b", y)) if v is not None}
        categorical = {"c": z} if z is not None else {}
        vec, bad = PIPELINE.transform_row(numeric, categorical)
        assert bad == []
        assert vec.view(np.uint32).tolist() == columns[i].view(np.uint32).tolist()
        assert vec[2] == (1.0 if not z else 0.0)
        if x is not None and y is not None:  # (left - right) * scale, saturated to float32
            fmax = float(np.finfo(np.float32).max)
            assert vec[0] == np.float32(min(max((x - y) * 0.25, -fmax), fmax))
            assert vec[1] == np.float32(min(max(x - y, -fmax), fmax))
        else:
            assert np.isnan(vec[0])
            assert np.isnan(vec[1])


@settings(max_examples=200, deadline=None)
@given(rows)
def test_difference_and_category_missing_parity(
    batch: list[tuple[float | None, float | None, str | None]],
) -> None:
    _check(batch)


def test_deterministic_thousand_rows() -> None:
    """With the hypothesis examples above: well over 1,000 rows through both paths."""
    rng = np.random.default_rng(11)
    batch: list[tuple[float | None, float | None, str | None]] = []
    for _ in range(1_000):
        x = None if rng.random() < 0.2 else float(rng.normal(17_000, 5_000))
        y = None if rng.random() < 0.2 else float(rng.choice([0.0, 1e308, -1e308, rng.normal()]))
        z = [None, "", "ref-1", "x"][int(rng.integers(4))]
        batch.append((x, y, z))
    _check(batch)
