"""The YAML feature spec: shipped specs, schema hash, error messages, and the datasets' oddities."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from feature_kernels import FeaturePipeline, SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
GMSC = ROOT / "specs" / "gmsc.yaml"
GERMAN = ROOT / "specs" / "german_credit.yaml"
HEX64 = re.compile(r"^[0-9a-f]{64}$")

Mutation = Callable[[dict[str, Any]], object]


@pytest.fixture(scope="module")
def gmsc() -> FeaturePipeline:
    return FeaturePipeline(load_spec(GMSC))


@pytest.fixture(scope="module")
def german() -> FeaturePipeline:
    return FeaturePipeline(load_spec(GERMAN))


# --------------------------------------------------------------------------------------------
# Shipped specs and the schema hash.


@pytest.mark.parametrize(
    ("path", "name", "n_features"), [(GMSC, "gmsc", 13), (GERMAN, "german_credit", 52)]
)
def test_shipped_specs_load(path: Path, name: str, n_features: int) -> None:
    spec = load_spec(path)
    pipe = FeaturePipeline(spec)
    assert spec.name == name
    assert pipe.n_features == n_features
    assert len(pipe.feature_names) == n_features
    assert len(set(pipe.feature_names)) == n_features
    assert [n for n, _ in spec.output_features()] == pipe.feature_names
    assert len(pipe.monotone) == len(pipe.reasons) == n_features
    assert all(r.strip() for r in pipe.reasons)
    assert HEX64.fullmatch(pipe.schema_hash)
    assert sorted(pipe.numeric_inputs + pipe.categorical_inputs) == sorted(spec.inputs)


def test_schema_hashes_differ_between_specs(gmsc: FeaturePipeline, german: FeaturePipeline) -> None:
    assert gmsc.schema_hash != german.schema_hash


def _gmsc_dict() -> dict[str, Any]:
    data = yaml.safe_load(GMSC.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_schema_hash_is_deterministic(gmsc: FeaturePipeline) -> None:
    again = FeaturePipeline(load_spec(GMSC))
    from_dict = FeaturePipeline(parse_spec(_gmsc_dict()))
    assert again.schema_hash == gmsc.schema_hash == from_dict.schema_hash
    # Human text is not part of the plan: rewording a reason keeps the hash.
    data = _gmsc_dict()
    data["features"][0]["reason"] = "Reworded reason"
    data["inputs"]["age"]["description"] = "Reworded description"
    assert FeaturePipeline(parse_spec(data)).schema_hash == gmsc.schema_hash


def _set_clip_max(d: dict[str, Any]) -> None:
    d["features"][0]["max"] = 11


def _set_on_zero(d: dict[str, Any]) -> None:
    d["features"][11]["on_zero"] = -1


def _set_missing_code(d: dict[str, Any]) -> None:
    d["inputs"]["age"]["missing_codes"] = [0, 1]


def _set_range(d: dict[str, Any]) -> None:
    d["inputs"]["age"]["range"] = [18, 121]


def _set_required(d: dict[str, Any]) -> None:
    d["inputs"]["dependents"]["required"] = True


def _set_impute(d: dict[str, Any]) -> None:
    d["inputs"]["dependents"]["impute"] = 0


def _swap_features(d: dict[str, Any]) -> None:
    f = d["features"]
    f[2], f[3] = f[3], f[2]


def _change_op(d: dict[str, Any]) -> None:
    d["features"][1]["op"] = "log1p"


def _to_intermediate(d: dict[str, Any]) -> None:
    d["features"][-1]["output"] = False


def _bump_version(d: dict[str, Any]) -> None:
    d["version"] = 2


@pytest.mark.parametrize(
    "mutate",
    [
        _set_clip_max,
        _set_on_zero,
        _set_missing_code,
        _set_range,
        _set_required,
        _set_impute,
        _swap_features,
        _change_op,
        _to_intermediate,
        _bump_version,
    ],
)
def test_schema_hash_changes_with_the_plan(gmsc: FeaturePipeline, mutate: Mutation) -> None:
    data = _gmsc_dict()
    mutate(data)
    changed = FeaturePipeline(parse_spec(data))
    assert HEX64.fullmatch(changed.schema_hash)
    assert changed.schema_hash != gmsc.schema_hash


def test_schema_hash_changes_with_bucket_boundaries(german: FeaturePipeline) -> None:
    data = yaml.safe_load(GERMAN.read_text(encoding="utf-8"))
    data["features"][2]["boundaries"] = [12, 24, 36, 60]
    assert FeaturePipeline(parse_spec(data)).schema_hash != german.schema_hash


# --------------------------------------------------------------------------------------------
# Bad spec files: the message names the file, the key and the problem.

BASE: dict[str, Any] = {
    "name": "demo",
    "version": 1,
    "target": {"column": "y", "positive": [1]},
    "inputs": {
        "age": {"type": "integer", "range": [18, 120]},
        "income": {"type": "number", "required": False},
        "city": {"type": "categorical"},
    },
    "features": [
        {"name": "age", "op": "value", "input": "age", "reason": "Age"},
        {
            "name": "age_band",
            "op": "bucketize",
            "input": "age",
            "boundaries": [30, 50],
            "reason": "Age band",
        },
        {
            "name": "city",
            "op": "one_hot",
            "input": "city",
            "categories": ["x", "y"],
            "reason": "City",
        },
    ],
}


def _write(tmp_path: Path, data: object, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _mutated(mutate: Mutation) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    mutate(data)
    return data


def _spec_error(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_base_spec_is_valid(tmp_path: Path) -> None:
    pipe = FeaturePipeline(load_spec(_write(tmp_path, BASE)))
    assert pipe.feature_names == ["age", "age_band", "city=x", "city=y"]


# (id, mutation, key path the message names, the problem)
BAD_SPECS: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown_op",
        lambda d: d["features"][0].update(op="square"),
        "features[0].op",
        "Input should be 'value', 'clip'",
    ),
    (
        "op_key_missing",
        lambda d: d["features"][0].pop("op"),
        "features[0].op",
        "Field required",
    ),
    (
        "required_op_key_missing",
        lambda d: d["features"][1].pop("boundaries"),
        "features[1].boundaries",
        "op 'bucketize' needs this key",
    ),
    (
        "key_not_applicable",
        lambda d: d["features"][0].update(min=0),
        "features[0].min",
        "does not apply to op 'value'",
    ),
    (
        "unsorted_boundaries",
        lambda d: d["features"][1].update(boundaries=[50, 30]),
        "features[1].boundaries",
        "must be a non-empty, strictly increasing list",
    ),
    (
        "repeated_boundary",
        lambda d: d["features"][1].update(boundaries=[30, 30]),
        "features[1].boundaries",
        "must be a non-empty, strictly increasing list",
    ),
    (
        "unknown_input",
        lambda d: d["features"][0].update(input="agee"),
        "features[0].input",
        "'agee' is not an input or an earlier feature",
    ),
    (
        "forward_reference",
        lambda d: (
            d["features"].insert(
                0,
                {
                    "name": "r",
                    "op": "ratio",
                    "numerator": "age",
                    "denominator": "later",
                    "reason": "R",
                },
            ),
            d["features"].append(
                {"name": "later", "op": "log1p", "input": "income", "reason": "L"}
            ),
        ),
        "features[0].denominator",
        "'later' is not an input or an earlier feature",
    ),
    (
        "categorical_in_numeric_op",
        lambda d: d["features"][0].update(input="city"),
        "features[0].input",
        "'city' is categorical; op 'value' needs a number",
    ),
    (
        "numeric_in_one_hot",
        lambda d: d["features"][2].update(input="age"),
        "features[2].input",
        "'age' is not a categorical input",
    ),
    (
        "duplicate_feature_name",
        lambda d: d["features"][1].update(name="age"),
        "features[1].name",
        "'age' is already defined",
    ),
    (
        "missing_reason",
        lambda d: d["features"][1].pop("reason"),
        "features[1].reason",
        "an output feature needs a human reason text",
    ),
    (
        "blank_reason",
        lambda d: d["features"][1].update(reason="   "),
        "features[1].reason",
        "an output feature needs a human reason text",
    ),
    (
        "range_lower_above_upper",
        lambda d: d["inputs"]["age"].update(range=[120, 18]),
        "inputs.age.range",
        "lower bound 120.0 is above upper bound 18.0",
    ),
    (
        "clip_min_above_max",
        lambda d: d["features"].append(
            {"name": "c", "op": "clip", "input": "income", "min": 5, "max": 1, "reason": "C"}
        ),
        "features[3].max",
        "1.0 is below min 5.0",
    ),
    (
        "extra_top_level_key",
        lambda d: d.update(owner="risk-team"),
        "owner",
        "Extra inputs are not permitted",
    ),
    (
        "extra_feature_key",
        lambda d: d["features"][0].update(factor=2),
        "features[0].factor",
        "Extra inputs are not permitted",
    ),
    (
        "monotone_on_one_hot",
        lambda d: d["features"][2].update(monotone="increasing"),
        "features[2].monotone",
        "a one_hot feature cannot carry a monotone constraint",
    ),
    (
        "bad_monotone_value",
        lambda d: d["features"][0].update(monotone="up"),
        "features[0].monotone",
        "Input should be 'increasing', 'decreasing' or 'none'",
    ),
    (
        "duplicate_categories",
        lambda d: d["features"][2].update(categories=["x", "x"]),
        "features[2].categories",
        "must be a non-empty list without duplicates",
    ),
    (
        "range_on_categorical",
        lambda d: d["inputs"]["city"].update(range=[0, 1]),
        "inputs.city.range",
        "applies to numeric inputs only",
    ),
    (
        "infinite_range",
        lambda d: d["inputs"]["age"].update(range=[float("-inf"), 120]),
        "inputs.age.range[0]",
        "Input should be a finite number",
    ),
    (
        "unknown_input_type",
        lambda d: d["inputs"]["age"].update(type="int"),
        "inputs.age.type",
        "Input should be 'number', 'integer' or 'categorical'",
    ),
    (
        "bad_feature_name",
        lambda d: d["features"][0].update(name="1age"),
        "features[0].name",
        "String should match pattern",
    ),
    (
        "missing_target",
        lambda d: d.pop("target"),
        "target",
        "Field required",
    ),
    (
        "no_output_feature",
        lambda d: [f.update(output=False) for f in d["features"]],
        "<root>",
        "at least one output feature is needed",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_bad_spec_file(tmp_path: Path, mutate: Mutation, key: str, problem: str) -> None:
    path = _write(tmp_path, _mutated(mutate))
    message = _spec_error(path)
    first = message.splitlines()[0]
    assert first.startswith(f"{path}: {key}: "), message
    assert problem in first, message


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["features"][0]["input"] = "nope"
        d["features"][1]["name"] = "age"

    message = _spec_error(_write(tmp_path, _mutated(mutate)))
    assert "features[0].input: 'nope'" in message
    assert "features[1].name: 'age' is already defined" in message


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nfeatures: [1, 2\ninputs: {}\n", encoding="utf-8")
    message = _spec_error(path)
    assert message.startswith(f"{path}: <root>: not valid YAML")


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "nowhere.yaml"
    message = _spec_error(path)
    assert message.startswith(f"{path}: cannot read spec file")
    assert "No such file" in message


@pytest.mark.parametrize("top", [["name", "demo"], "just a string", 42, None])
def test_non_mapping_top_level(tmp_path: Path, top: object) -> None:
    path = _write(tmp_path, top)
    assert _spec_error(path) == f"{path}: <root>: a spec must be a mapping"


def test_parse_spec_names_its_source() -> None:
    with pytest.raises(SpecError, match=r"^inline: features\[0\]\.input: 'zzz'"):
        parse_spec(_mutated(lambda d: d["features"][0].update(input="zzz")), source="inline")


# The module docstring promises the exact key ("specs/gmsc.yaml: features[3].boundaries: must be
# strictly increasing"), but model-level checks report the enclosing feature or input only.
PRECISE_KEYS: list[tuple[str, Mutation, str]] = [
    (
        "unsorted_boundaries",
        lambda d: d["features"][1].update(boundaries=[50, 30]),
        "features[1].boundaries",
    ),
    (
        "range_lower_above_upper",
        lambda d: d["inputs"]["age"].update(range=[120, 18]),
        "inputs.age.range",
    ),
    (
        "required_op_key_missing",
        lambda d: d["features"][1].pop("boundaries"),
        "features[1].boundaries",
    ),
    ("key_not_applicable", lambda d: d["features"][0].update(min=0), "features[0].min"),
    ("missing_reason", lambda d: d["features"][1].pop("reason"), "features[1].reason"),
    (
        "monotone_on_one_hot",
        lambda d: d["features"][2].update(monotone="increasing"),
        "features[2].monotone",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key"), [c[1:] for c in PRECISE_KEYS], ids=[c[0] for c in PRECISE_KEYS]
)
def test_bad_spec_file_names_the_exact_key(tmp_path: Path, mutate: Mutation, key: str) -> None:
    path = _write(tmp_path, _mutated(mutate))
    assert _spec_error(path).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["features"].append(
            {
                "name": "r",
                "op": "ratio",
                "numerator": "age",
                "denominator": "income",
                "on_zero": float("nan"),
                "reason": "R",
            }
        ),
        lambda d: d["features"].append(
            {"name": "c", "op": "clip", "input": "income", "max": float("inf"), "reason": "C"}
        ),
        lambda d: d["inputs"]["income"].update(impute=float("nan")),
    ],
    ids=["on_zero_nan", "clip_max_inf", "impute_nan"],
)
def test_non_finite_parameters_are_spec_errors(tmp_path: Path, mutate: Mutation) -> None:
    path = _write(tmp_path, _mutated(mutate))
    with pytest.raises(SpecError, match=re.escape(str(path))):
        FeaturePipeline(load_spec(path))


def test_spec_numbers_reach_the_kernel_exactly() -> None:
    x = 230.77022296250766  # e.g. a quantile written to the spec with repr()
    ranged = FeaturePipeline(
        parse_spec(_mutated(lambda d: d["inputs"]["income"].update(range=[x, x])), source="ranged")
    )
    _, range_violations = ranged.transform_row({"age": 40.0, "income": x}, {"city": "x"})
    bucketed_at = FeaturePipeline(
        parse_spec(
            _mutated(
                lambda d: (
                    d["inputs"]["income"].update(required=True),
                    d["features"].append(
                        {
                            "name": "ib",
                            "op": "bucketize",
                            "input": "income",
                            "boundaries": [x],
                            "reason": "I",
                        }
                    ),
                )
            )
        )
    )
    vec, viol = bucketed_at.transform_row({"age": 40.0, "income": x}, {"city": "x"})
    assert viol == []
    bucket = float(vec[bucketed_at.feature_names.index("ib")])
    # Both halves together, so the failure report shows the two symptoms at once.
    assert (range_violations, bucket) == ([], 1.0)


# --------------------------------------------------------------------------------------------
# The datasets' oddities, through the shipped specs' row path.

GMSC_ROW: dict[str, float] = {
    "revolving_utilization": 0.5,
    "age": 45.0,
    "past_due_30_59": 0.0,
    "debt_ratio": 0.3,
    "monthly_income": 5000.0,
    "open_credit_lines": 8.0,
    "times_90_days_late": 0.0,
    "real_estate_loans": 2.0,
    "past_due_60_89": 0.0,
    "dependents": 1.0,
}


def _gmsc(
    pipe: FeaturePipeline, **changes: float
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    vec, viol = pipe.transform_row({**GMSC_ROW, **changes}, {})
    return dict(zip(pipe.feature_names, vec.tolist(), strict=True)), viol


def test_gmsc_plain_row(gmsc: FeaturePipeline) -> None:
    f, viol = _gmsc(gmsc)
    assert viol == []
    assert f["age"] == 45.0
    assert f["revolving_utilization"] == 0.5
    assert f["past_due_code_reported"] == 0.0
    assert f["income_missing"] == 0.0
    assert f["real_estate_share"] == 0.25
    assert f["debt_ratio_log"] == pytest.approx(np.log1p(0.3), rel=1e-6)


def test_gmsc_age_zero_is_missing(gmsc: FeaturePipeline) -> None:
    f, viol = _gmsc(gmsc, age=0.0)
    assert viol == []
    assert np.isnan(f["age"])
    assert not np.isnan(f["revolving_utilization"])


@pytest.mark.parametrize("age", [5.0, 17.0, 121.0, -1.0])
def test_gmsc_implausible_age_is_rejected(gmsc: FeaturePipeline, age: float) -> None:
    vec, viol = gmsc.transform_row({**GMSC_ROW, "age": age}, {})
    assert [f for f, _ in viol] == ["numeric.age"]
    assert "outside the allowed range [18, 120]" in viol[0][1]
    assert np.isnan(vec).all()


@pytest.mark.parametrize("code", [96.0, 98.0])
def test_gmsc_past_due_codes_are_missing(gmsc: FeaturePipeline, code: float) -> None:
    f, viol = _gmsc(gmsc, past_due_30_59=code)
    assert viol == []
    assert np.isnan(f["past_due_30_59"])
    assert f["past_due_code_reported"] == 1.0


def test_gmsc_past_due_edge_and_bad_code(gmsc: FeaturePipeline) -> None:
    f, viol = _gmsc(gmsc, past_due_30_59=95.0)
    assert viol == []
    assert f["past_due_30_59"] == 95.0
    assert f["past_due_code_reported"] == 0.0
    for bad in (97.0, 99.0, 1.5):
        vec, viol = gmsc.transform_row({**GMSC_ROW, "past_due_30_59": bad}, {})
        assert [f for f, _ in viol] == ["numeric.past_due_30_59"], bad
        assert np.isnan(vec).all()


def test_gmsc_utilisation_is_clipped(gmsc: FeaturePipeline) -> None:
    f, viol = _gmsc(gmsc, revolving_utilization=50000.0)
    assert viol == []
    assert f["revolving_utilization"] == 10.0


def test_gmsc_income_optional_and_zero_credit_lines(gmsc: FeaturePipeline) -> None:
    row = {k: v for k, v in GMSC_ROW.items() if k != "monthly_income"}
    vec, viol = gmsc.transform_row({**row, "open_credit_lines": 0.0}, {})
    f = dict(zip(gmsc.feature_names, vec.tolist(), strict=True))
    assert viol == []
    assert f["income_missing"] == 1.0
    assert np.isnan(f["monthly_income_log"])
    assert f["real_estate_share"] == 0.0  # on_zero


GERMAN_ROW: tuple[dict[str, float], dict[str, str]] = (
    {
        "duration_months": 24.0,
        "credit_amount": 2400.0,
        "installment_rate": 4.0,
        "residence_since": 2.0,
        "age": 35.0,
        "existing_credits": 1.0,
        "dependants": 1.0,
    },
    {
        "checking_account": "no checking account",
        "credit_history": "existing credits paid back duly till now",
        "purpose": "car (used)",
        "savings": "... < 100 DM",
        "employment_since": "1 <= ... < 4 years",
        "personal_status_sex": "male : single",
        "other_debtors": "none",
        "property": "real estate",
        "other_installment_plans": "none",
        "housing": "own",
        "job": "skilled employee / official",
        "telephone": "none",
        "foreign_worker": "yes",
    },
)


def _german(pipe: FeaturePipeline, **cat: str) -> tuple[dict[str, float], list[tuple[str, str]]]:
    vec, viol = pipe.transform_row(GERMAN_ROW[0], {**GERMAN_ROW[1], **cat})
    return dict(zip(pipe.feature_names, vec.tolist(), strict=True)), viol


def test_german_plain_row(german: FeaturePipeline) -> None:
    f, viol = _german(german)
    assert viol == []
    assert f["purpose=car (used)"] == 1.0
    assert f["checking_account"] == 3.0
    assert f["duration_band"] == 2.0  # 24 is on a boundary: [12, 24, 36, 48]
    assert f["monthly_amount"] == 100.0
    assert sum(v for k, v in f.items() if k.startswith("housing=")) == 1.0


def test_german_unknown_purpose_is_all_zeros(german: FeaturePipeline) -> None:
    f, viol = _german(german, purpose="holiday")
    assert viol == []
    purpose = [v for k, v in f.items() if k.startswith("purpose=")]
    assert len(purpose) == 10
    assert purpose == [0.0] * 10
    assert f["housing=own"] == 1.0


def test_german_unknown_housing_is_rejected(german: FeaturePipeline) -> None:
    vec, viol = german.transform_row(GERMAN_ROW[0], {**GERMAN_ROW[1], "housing": "castle"})
    assert viol == [("categorical.housing", 'unknown category "castle"')]
    assert np.isnan(vec).all()


def test_german_telephone_is_imputed(german: FeaturePipeline) -> None:
    cat = {k: v for k, v in GERMAN_ROW[1].items() if k != "telephone"}
    vec, viol = german.transform_row(GERMAN_ROW[0], cat)
    f = dict(zip(german.feature_names, vec.tolist(), strict=True))
    assert viol == []
    assert f["telephone=none"] == 1.0
    assert f["telephone=yes, registered under the customers name"] == 0.0


def test_row_path_wrong_value_types_are_reported_once() -> None:
    pipeline = FeaturePipeline(load_spec(ROOT / "specs" / "german_credit.yaml"))
    _, bad = pipeline.transform_row(
        {"duration_months": None, "credit_amount": True},  # type: ignore[dict-item]
        {"purpose": 3},  # type: ignore[dict-item]
    )
    fields = [f for f, _ in bad]
    for field in ("numeric.duration_months", "numeric.credit_amount", "categorical.purpose"):
        assert fields.count(field) == 1, bad
        assert "wrong type" in dict(bad)[field]


def test_gmsc_schema_hash_is_stable() -> None:
    """Every registered model records its schema hash and a server refuses a model whose spec
    hashes differently: a change to the canonical plan form (not to the spec) would strand every
    registered model. Change this value only on purpose, with a migration note."""
    expected = "9080282131662ec21e3833261920f4e08576255225ef016e7b34ea2042d920d2"
    assert FeaturePipeline(load_spec(GMSC)).schema_hash == expected
