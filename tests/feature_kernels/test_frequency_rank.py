"""``frequency_rank``: a free-text category's cardinality capped by codes learned from the
training part, stored as an ``ordinal`` map in the spec a bundle carries, so the server's row path
gives exactly the training column path's features (known, rare, unseen and missing categories)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import yaml

from feature_kernels import FeaturePipeline, SpecError, parse_spec

SPEC = {
    "name": "places",
    "version": 1,
    "target": {"column": "bad", "positive": [1]},
    "inputs": {
        "city": {"type": "categorical", "required": False},
        "income": {"type": "number"},
    },
    "features": [
        {"name": "city_rank", "op": "frequency_rank", "input": "city", "max_categories": 3,
         "min_count": 2, "reason": "Place"},
        {"name": "income", "op": "value", "input": "income", "reason": "Income"},
    ],
}  # fmt: skip

TRAIN = ["Rio"] * 5 + ["Recife"] * 3 + ["Natal"] * 3 + ["Belem"] * 2 + ["Acu"] + [None] * 2


def test_the_most_frequent_categories_get_codes_and_the_rest_reads_missing() -> None:
    spec = parse_spec(SPEC)
    with pytest.raises(SpecError, match="learned at training time"):
        FeaturePipeline(spec)  # a spec with an unfitted op cannot be served
    fitted = spec.fitted({"city": TRAIN})
    (rank, _) = fitted.features
    assert rank.op == "ordinal"
    assert rank.unknown == "missing"
    # by count, ties by name; capped at 3; Belem (2 rows) would pass min_count but not the cap
    assert rank.mapping == {"Rio": 1.0, "Natal": 2.0, "Recife": 3.0}
    assert spec.fitted({"city": ["a"] * 2 + ["b"]}).features[0].mapping == {"a": 1.0}  # min 2
    # what the bundle stores reads back as the same plan (same schema hash)
    again = parse_spec(yaml.safe_load(fitted.to_yaml()))
    assert FeaturePipeline(again).schema_hash == FeaturePipeline(fitted).schema_hash
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec
    with pytest.raises(SpecError, match="monotone"):
        parse_spec({**SPEC, "features": [{**SPEC["features"][0], "monotone": "increasing"}]})
    numeric = {**SPEC["features"][0], "input": "income"}
    with pytest.raises(SpecError, match="not a categorical input"):
        parse_spec({**SPEC, "features": [numeric, SPEC["features"][1]]})


def test_serving_applies_the_map_training_learned() -> None:
    fitted = parse_spec(SPEC).fitted({"city": TRAIN})
    pipeline = FeaturePipeline(fitted)
    cities = ["Rio", "Natal", "Recife", "Belem", "Acu", "Unseen", None]
    frame = pl.DataFrame({"city": cities, "income": [1000.0 + i for i in range(len(cities))]})
    columns = pipeline.transform_frame(frame)
    rows = [
        ({"income": 1000.0 + i}, {} if c is None else {"city": c}) for i, c in enumerate(cities)
    ]
    served, violations = pipeline.transform_rows(rows)
    assert violations == [[] for _ in cities]
    np.testing.assert_array_equal(served, columns)
    assert columns[:, 0].tolist()[:3] == [1.0, 2.0, 3.0]
    assert np.isnan(columns[3:, 0]).all()  # rare, single, unseen and missing: missing
