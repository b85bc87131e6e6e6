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


def test_case_fold_one_rule_for_fitting_training_and_serving() -> None:
    """``case_fold: true``: spellings that differ only in case are one category when
    ``frequency_rank`` counts them (the kernels' fold, through ``fold_case``), and the column
    path (training) and the row path (serving) match any case of a learned category alike."""
    from feature_kernels._core import fold_case

    assert fold_case(["FORTALEZA", "Fortaleza", None, "SÃO PAULO"]) == [
        "fortaleza", "fortaleza", None, "são paulo",
    ]  # fmt: skip
    folding = {**SPEC["features"][0], "case_fold": True}
    spec = parse_spec({**SPEC, "features": [folding, SPEC["features"][1]]})
    train = ["RIO"] * 2 + ["Rio"] * 2 + ["Natal"] * 3 + ["NATAL"] + ["SÃO PAULO", "São Paulo"]
    fitted = spec.fitted({"city": train})
    (rank, _) = fitted.features
    assert (rank.op, rank.case_fold) == ("ordinal", True)
    # 4 + 4 + 2: without folding, the cap of 3 with min_count 2 would keep Natal (3), RIO and Rio
    assert rank.mapping == {"natal": 1.0, "rio": 2.0, "são paulo": 3.0}
    unfolded = parse_spec(SPEC).fitted({"city": train}).features[0]
    assert unfolded.mapping == {"Natal": 1.0, "RIO": 2.0, "Rio": 3.0}
    # what the bundle stores reads back as the same plan
    again = parse_spec(yaml.safe_load(fitted.to_yaml()))
    pipeline = FeaturePipeline(again)
    assert pipeline.schema_hash == FeaturePipeline(fitted).schema_hash
    exact = FeaturePipeline(parse_spec(SPEC).fitted({"city": train}))
    assert pipeline.schema_hash != exact.schema_hash
    cities = ["rio", "RIO", "Rio", "rIo", "NATAL", "natal", "São Paulo", "SÃO PAULO", "Recife",
              None]  # fmt: skip
    frame = pl.DataFrame({"city": cities, "income": [1.0] * len(cities)})
    columns = pipeline.transform_frame(frame)
    served, violations = pipeline.transform_rows(
        [({"income": 1.0}, {} if c is None else {"city": c}) for c in cities]
    )
    assert violations == [[] for _ in cities]
    np.testing.assert_array_equal(served.view(np.uint32), columns.view(np.uint32))
    assert columns[:8, 0].tolist() == [2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 3.0, 3.0]
    assert np.isnan(columns[8:, 0]).all()  # unseen and missing

    # ordinal and one_hot written by hand: keys in any case, matched in any case
    hand = parse_spec({
        **SPEC,
        "features": [
            {"name": "flag", "op": "ordinal", "input": "city", "mapping": {"Y": 1, "N": 0},
             "unknown": "missing", "case_fold": True, "reason": "Flag"},
            {"name": "big", "op": "one_hot", "input": "city", "categories": ["Rio", "NATAL"],
             "unknown": "error", "case_fold": True, "reason": "Big city"},
        ],
    })  # fmt: skip
    pipe = FeaturePipeline(hand)
    assert pipe.feature_names == ["flag", "big=Rio", "big=NATAL"]  # as written
    vec, bad = pipe.transform_row({"income": 1.0}, {"city": "y"})
    assert bad == [("categorical.city", 'unknown category "y"')]  # one_hot knows no "y"
    vec, bad = pipe.transform_row({"income": 1.0}, {"city": "natal"})
    assert bad == []
    assert np.isnan(vec[0])
    assert vec[1:].tolist() == [0.0, 1.0]
    vec, bad = pipe.transform_row({"income": 1.0}, {"city": "RIO"})
    assert bad == []
    assert np.isnan(vec[0])
    assert vec[1:].tolist() == [1.0, 0.0]
    vec, bad = pipe.transform_row({"income": 1.0}, {"city": "Recife"})
    assert bad == [("categorical.city", 'unknown category "Recife"')]  # as sent
    flag = FeaturePipeline(parse_spec({**SPEC, "features": [hand.features[0]]}))
    for value, code in (("y", 1.0), ("Y", 1.0), ("n", 0.0)):
        vec, bad = flag.transform_row({"income": 1.0}, {"city": value})
        assert bad == [], value
        assert vec.tolist() == [code], value
    with pytest.raises(SpecError, match="case_fold"):
        parse_spec({**SPEC, "features": [{**SPEC["features"][1], "case_fold": True}]})
    clash = {"name": "f", "op": "ordinal", "input": "city", "mapping": {"Y": 1, "y": 0},
             "case_fold": True, "reason": "Flag"}  # fmt: skip
    with pytest.raises(ValueError, match="fold to the same"):
        FeaturePipeline(parse_spec({**SPEC, "features": [clash]}))
