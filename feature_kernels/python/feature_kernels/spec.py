"""The declarative feature spec: one YAML file per dataset, versioned.

A spec names the raw inputs a request carries (type, required or optional, allowed range, codes that
mean "missing", imputation), the derived features the model sees (in order), their monotone
direction and the human reason text used for adverse-action notices. ``load_spec`` validates the
file; every problem is reported with the file, the key and what is wrong::

    specs/gmsc.yaml: features[3].boundaries: must be a non-empty, strictly increasing list

The normalised form (``FeatureSpec.plan_json``) is what the Rust kernels compile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "DeriveDef",
    "EntityDef",
    "EntityFeatureDef",
    "FeatureDef",
    "FeatureSpec",
    "HistoryTable",
    "InputDef",
    "ModelDef",
    "SpecError",
    "TargetDef",
    "load_spec",
    "parse_spec",
]


class SpecError(ValueError):
    """A feature spec file is malformed. The message names the file, the key and the problem."""


class _Strict(BaseModel):
    # attribute docstrings become the fields' descriptions: the spec reference and the CLI's
    # --help are generated from them
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )


class InputDef(_Strict):
    """A raw input as it arrives in a request (and as a column in training data)."""

    type: Literal["number", "integer", "categorical"]
    """``number`` (any finite value), ``integer`` (a fraction is rejected) or ``categorical``
    (text; in training data a numeric column is read as text too, so ``1`` matches category
    ``"1"``)."""
    required: bool = True
    """A request (or training row) without a value is rejected. ``false``: a missing value
    reaches the model as missing (XGBoost learns a direction for it), or ``impute`` fills it."""
    range: tuple[float | None, float | None] | None = None
    """Allowed closed interval; values outside it are rejected. ``null`` leaves a side open."""
    missing_codes: list[float] = Field(default_factory=list)
    """Values that mean "unknown" in the source data (e.g. 96/98 in past-due counts)."""
    impute: float | str | None = None
    """Value used when the input is missing; without it the model sees a missing value."""
    column: str | None = None
    """Column name in the training data, when it differs from the input name."""
    source: Literal["request", "entity"] = "request"
    """``entity``: looked up in the online store by applicant id (computed offline from history
    tables, see ``entity``); ``request``: sent by the caller."""
    overridable: bool = False
    """For an entity input: whether a request may send its own value instead of the stored one."""
    description: str = ""
    """What the input is, for people (GetModelInfo shows it)."""

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; checked after parsing so each names its exact key."""
        out: list[tuple[str, str]] = []
        if self.type == "categorical":
            for key in ("range", "missing_codes"):
                if key in self.model_fields_set and getattr(self, key):
                    out.append((key, "applies to numeric inputs only"))
            if self.impute is not None and not isinstance(self.impute, str):
                out.append(("impute", "must be a string for a categorical input"))
        else:
            if isinstance(self.impute, str):
                out.append(("impute", "must be a number for a numeric input"))
            if self.range is not None:
                lo, hi = self.range
                if lo is not None and hi is not None and lo > hi:
                    out.append(("range", f"lower bound {lo} is above upper bound {hi}"))
        if self.overridable and self.source != "entity":
            out.append(("overridable", "applies to entity inputs only"))
        return out


Monotone = Literal["increasing", "decreasing", "none"]
_NEEDS: dict[str, tuple[str, ...]] = {
    "value": ("input",),
    "clip": ("input",),
    "log1p": ("input",),
    "ratio": ("numerator", "denominator"),
    "bucketize": ("input", "boundaries"),
    "missing_indicator": ("input",),
    "difference": ("left", "right"),
    "ordinal": ("input", "mapping"),
    "one_hot": ("input", "categories"),
    "frequency_rank": ("input",),
}
_ALLOWED: dict[str, set[str]] = {
    "value": {"input"},
    "clip": {"input", "min", "max"},
    "log1p": {"input"},
    "ratio": {"numerator", "denominator", "on_zero"},
    "bucketize": {"input", "boundaries"},
    "missing_indicator": {"input"},
    "difference": {"left", "right", "scale"},
    "ordinal": {"input", "mapping", "unknown", "case_fold"},
    "one_hot": {"input", "categories", "unknown", "case_fold"},
    "frequency_rank": {"input", "max_categories", "min_count", "case_fold"},
}
_OP_KEYS = set().union(*_ALLOWED.values())


class FeatureDef(_Strict):
    """One derived feature. Which keys apply depends on ``op``."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """The feature's name: the model column (``one_hot`` adds ``=<category>``) and its reason
    code."""
    op: Literal[
        "value",
        "clip",
        "log1p",
        "ratio",
        "bucketize",
        "missing_indicator",
        "difference",
        "ordinal",
        "one_hot",
        "frequency_rank",
    ]
    """What computes it (``OPS`` describes each, with an example)."""
    input: str | None = None
    """The operand of a one-operand op: an input, or an earlier feature."""
    left: str | None = None
    """``difference``: the value subtracted from."""
    right: str | None = None
    """``difference``: the value subtracted."""
    scale: float = 1.0
    """``difference``: factor applied to ``left - right`` (e.g. 1/365.25 for days to years)."""
    numerator: str | None = None
    """``ratio``: the dividend."""
    denominator: str | None = None
    """``ratio``: the divisor."""
    min: float | None = None
    """``clip``: lower bound (none when absent)."""
    max: float | None = None
    """``clip``: upper bound (none when absent)."""
    on_zero: float | None = None
    """``ratio``: the value when the denominator is 0; absent: missing."""
    boundaries: list[float] | None = None
    """``bucketize``: strictly increasing cut points; the feature is the number of boundaries
    at or below the value (0 .. len)."""
    mapping: dict[str, float] | None = None
    """``ordinal``: category -> number (e.g. a ranking of account balances)."""
    categories: list[str] | None = None
    """``one_hot``: the categories that get a column each, in order."""
    max_categories: Annotated[int, Field(ge=1)] = 50
    """``frequency_rank``: the most frequent categories of the training part that get a code
    (the cap on a free-text column's cardinality)."""
    min_count: Annotated[int, Field(ge=1)] = 1
    """``frequency_rank``: fewest training rows a category needs to get a code."""
    unknown: Literal["error", "missing"] = "error"
    """``ordinal`` / ``one_hot``: a category not listed is rejected (``error``) or read as
    missing (``missing``: NaN for ordinal, all zeros for one_hot)."""
    case_fold: bool = False
    """``ordinal`` / ``one_hot`` / ``frequency_rank``: match categories whatever their case
    (``FORTALEZA``, ``Fortaleza`` and ``fortaleza`` are one category; Unicode lower case, one
    rule in the Rust kernels for training and serving). ``frequency_rank`` counts the folded
    values, and its learned mapping holds them in lower case."""
    monotone: Monotone = "none"
    """The direction XGBoost must respect: ``increasing`` (a higher value never lowers the PD),
    ``decreasing``, or ``none``; the training report checks it held."""
    reason: str = ""
    """Human text for reason codes: why this feature raises the risk."""
    output: bool = True
    """False for an intermediate that only feeds later features."""

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; checked after parsing so each names its exact key."""
        out: list[tuple[str, str]] = []
        for key in _NEEDS[self.op]:
            if getattr(self, key) is None:
                out.append((key, f"op {self.op!r} needs this key"))
        for key in sorted((_OP_KEYS & self.model_fields_set) - _ALLOWED[self.op]):
            out.append((key, f"does not apply to op {self.op!r}"))
        if self.op == "clip" and self.min is not None and self.max is not None:
            if self.min > self.max:
                out.append(("max", f"{self.max} is below min {self.min}"))
        if self.boundaries is not None:
            b = self.boundaries
            if not b or any(x >= y for x, y in pairwise(b)):
                out.append(("boundaries", "must be a non-empty, strictly increasing list"))
        if self.categories is not None:
            if not self.categories or len(set(self.categories)) != len(self.categories):
                out.append(("categories", "must be a non-empty list without duplicates"))
        if self.op in ("one_hot", "frequency_rank") and self.monotone != "none":
            out.append(("monotone", f"a {self.op} feature cannot carry a monotone constraint"))
        if self.output and not self.reason.strip():
            out.append(("reason", "an output feature needs a human reason text"))
        return out

    def operands(self) -> list[str]:
        """Names this feature reads."""
        names = (self.input, self.numerator, self.denominator, self.left, self.right)
        return [n for n in names if n is not None]


class DeriveDef(_Strict):
    """An event-level column computed before aggregation."""

    op: Literal["days_between"]
    """``days_between``: ``end - start`` in days."""
    start: str
    """The earlier date column of the table."""
    end: str
    """``end - start`` in days (both date columns of the table)."""


class HistoryTable(_Strict):
    """A table of events (with ``time``) or static attributes (without) keyed by the entity."""

    file: str
    """Path relative to the folder of the application data file."""
    key: str
    """Column holding the entity id (matched with the application's ``entity.key``)."""
    time: str | None = None
    """Event time (a date column): an event counts for an application only when it happened
    strictly before the application's ``as_of`` date (point in time: no leakage)."""
    dates: list[str] = Field(default_factory=list)
    """Date columns, read as (fractional) days since 1970-01-01."""
    derive: dict[str, DeriveDef] = Field(default_factory=dict)
    """Event-level columns computed before aggregation, by name."""


class EntityFeatureDef(_Strict):
    """One entity-level aggregate; it feeds the input of the same name (``source: entity``)."""

    name: str
    """The entity input it fills (an input with ``source: entity`` of the same name)."""
    table: str
    """The history table (a key of ``entity.tables``)."""
    agg: Literal["count", "sum", "mean", "min", "max", "rate", "attribute"]
    """``count`` of events; ``sum`` / ``mean`` / ``min`` / ``max`` of ``column``; ``rate``:
    the share of events whose ``column`` is above ``above``; ``attribute``: the value of
    ``column`` in a table without ``time`` (one row per entity)."""
    column: str | None = None
    """The table column aggregated (all aggregates but ``count``)."""
    above: float = 0.0
    """``rate``: the share of events whose ``column`` is above this."""
    window_days: Annotated[float, Field(gt=0)] | None = None
    """Only events within this many days before ``as_of``."""


class EntityDef(_Strict):
    """How entity inputs are built from history tables, offline (training) and for publishing."""

    name: str
    """The entity's name (e.g. ``customer``); with the spec's name and version it makes the
    online store's namespace."""
    key: str
    """Application column holding the entity id (the request's ``applicant_id``)."""
    as_of: str
    """Application date column (listed in the spec's ``dates``)."""
    optional: bool = True
    """True: when the online store fails, score without entity features (answer flagged
    degraded); False: such requests fail with UNAVAILABLE."""
    tables: dict[str, HistoryTable]
    """The history tables, by name."""
    features: list[EntityFeatureDef]
    """The aggregates, one per entity input."""


DRIFT_TESTS = (
    "psi", "ks", "wasserstein", "jensenshannon", "kl_div", "hellinger", "anderson",
    "cramer_von_mises", "mannw", "ed", "t_test",
)  # fmt: skip
"""Per-feature drift tests the drift worker runs (Evidently's method names). ``ks``, ``anderson``,
``cramer_von_mises``, ``mannw``, ``t_test``: drift when the p-value is below the threshold; the
others are distances: drift when the distance reaches it."""


class DriftTestDef(_Strict):
    """One column's drift test; unset parts take the monitoring section's defaults."""

    stattest: Literal[DRIFT_TESTS] | None = None  # type: ignore[valid-type]
    """The test (absent: the section's ``stattest``)."""
    threshold: Annotated[float, Field(gt=0)] | None = None
    """Its threshold (absent: the section's ``threshold``)."""


class MonitoringDef(_Strict):
    """What the drift worker (``python -m drift run``) checks for models of this spec. Every
    part has a default, so a spec without the section is monitored with them."""

    window_rows: Annotated[int, Field(ge=100)] = 5000
    """A window closes once it holds this many served predictions of the champion ..."""
    window_seconds: Annotated[float, Field(gt=0)] | None = None
    """... or (when set) once this long passed since its first one and it holds ``min_rows``."""
    min_rows: Annotated[int, Field(ge=50)] = 500
    """Fewest predictions a window closed by time must hold to be checked."""
    stattest: Literal[DRIFT_TESTS] = "psi"  # type: ignore[valid-type]
    """Default test of every output feature against the model's reference sample."""
    threshold: Annotated[float, Field(gt=0)] = 0.2
    """Default threshold: a p-value below it, or a distance at or above it, is drift."""
    features: dict[str, DriftTestDef] = Field(default_factory=dict)
    """Per-feature overrides, keyed by output feature name."""
    prediction: DriftTestDef = Field(default_factory=DriftTestDef)
    """The test of the PD distribution against the reference sample's."""
    auc_drop: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """The retrain signal also fires when the label-free AUC estimate falls this far below the
    holdout AUC."""

    @model_validator(mode="after")
    def _window(self) -> MonitoringDef:
        if self.min_rows > self.window_rows:
            raise ValueError("min_rows must not exceed window_rows")
        return self

    def test_of(self, column: str | None) -> tuple[str, float]:
        """``(stattest, threshold)`` of an output feature (None: the prediction)."""
        d = self.prediction if column is None else self.features.get(column, DriftTestDef())
        return d.stattest or self.stattest, d.threshold or self.threshold


class ModelDef(_Strict):
    """XGBoost's hyper-parameters for models of this spec (``python -m training train``; its
    flags of the same names override them, ``--tune`` searches them). Every key has a default:
    the PEERS.md baseline protocol (hist, eta 0.05, depth 4, early stopping on 10 % of the
    training part) with row and column subsampling."""

    eta: Annotated[float, Field(gt=0, le=1)] = 0.05
    """Learning rate: the shrinkage of each tree."""
    max_depth: Annotated[int, Field(ge=1, le=16)] = 4
    """Depth of each tree."""
    max_rounds: Annotated[int, Field(ge=1)] = 2000
    """Most boosting rounds (trees); early stopping usually ends sooner."""
    early_stopping_rounds: Annotated[int, Field(ge=1)] = 100
    """Rounds without improvement on the validation share before boosting stops."""
    min_child_weight: Annotated[float, Field(ge=0)] = 1.0
    """Least hessian (about rows * p(1-p)) in a leaf: larger values make coarser, steadier trees."""
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Share of rows each tree sees."""
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Share of features each tree sees."""
    reg_lambda: Annotated[float, Field(ge=0)] = 1.0
    """L2 penalty on leaf weights (XGBoost's ``lambda``)."""
    reg_alpha: Annotated[float, Field(ge=0)] = 0.0
    """L1 penalty on leaf weights (XGBoost's ``alpha``)."""
    gamma: Annotated[float, Field(ge=0)] = 0.0
    """Least loss reduction a split must bring (XGBoost's ``gamma``)."""
    validation_share: Annotated[float, Field(gt=0, lt=1)] = 0.1
    """Share of the training part held out (stratified) for early stopping."""


class TargetDef(_Strict):
    """The label column of the training data and which of its values mean default."""

    column: str
    """The label column of the training data."""
    positive: list[int | str]
    """Its values that mean default (e.g. ``[1]``, or ``["bad"]``)."""


class FeatureSpec(_Strict):
    """A validated feature spec."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")]
    """The spec's name (lower case): with ``version``, what a model records it was trained on."""
    version: Annotated[int, Field(ge=1)]
    """Raise it when inputs or features change meaning."""
    description: str = ""
    """What the data is, for people."""
    target: TargetDef
    """The label (training only)."""
    dates: list[str] = Field(default_factory=list)
    """Columns of the application data holding dates, read as (fractional) days since 1970-01-01."""
    inputs: dict[str, InputDef]
    """The raw inputs a request sends (or the store provides), by name."""
    features: list[FeatureDef]
    """The derived features, in the model's vector order; operands name inputs first, then
    earlier features."""
    entity: EntityDef | None = None
    """Entity features from history tables (alternative data), served from the online store."""
    monitoring: MonitoringDef = Field(default_factory=MonitoringDef)
    """Drift checks of the served model (not part of the plan or its schema hash)."""
    model: ModelDef = Field(default_factory=ModelDef)
    """XGBoost's hyper-parameters (not part of the plan or its schema hash)."""

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if not self.inputs:
            raise ValueError("at least one input is needed")
        if not any(f.output for f in self.features):
            raise ValueError("at least one output feature is needed")
        outputs = {f.name for f in self.features if f.output}
        unknown = sorted(set(self.monitoring.features) - outputs)
        if unknown:
            raise ValueError(f"monitoring.features names no output feature: {unknown}")
        return self

    def plan(self) -> dict[str, Any]:
        """The normalised plan the Rust kernels compile (descriptions and reasons left out).
        Raises ``SpecError`` while a ``frequency_rank`` feature is not fitted."""
        unfitted = [f.name for f in self.features if f.op == "frequency_rank"]
        if unfitted:
            raise SpecError(
                f"{self.name}: frequency_rank feature(s) {', '.join(unfitted)} are learned at "
                "training time: fit the spec on training data (FeatureSpec.fitted), or load "
                "the spec a model bundle carries"
            )
        inputs = []
        for name, d in self.inputs.items():
            lo, hi = d.range if d.range is not None else (None, None)
            if d.impute is None:
                missing: dict[str, Any] = {"strategy": "nan"}
            elif isinstance(d.impute, str):
                missing = {"strategy": "category", "value": d.impute}
            else:
                missing = {"strategy": "constant", "value": float(d.impute)}
            kind = d.type
            inputs.append(
                {
                    "name": name,
                    "kind": kind,
                    "required": d.required,
                    "min": lo,
                    "max": hi,
                    "missing_codes": [float(c) for c in d.missing_codes],
                    "missing": missing,
                }
            )
        features = []
        for f in self.features:
            op: dict[str, Any] = {"kind": f.op}
            if f.op == "ratio":
                op |= {"numerator": f.numerator, "denominator": f.denominator, "on_zero": f.on_zero}
            elif f.op == "difference":
                op |= {"left": f.left, "right": f.right, "scale": f.scale}
            else:
                op["input"] = f.input
            if f.op == "clip":
                op |= {"min": f.min, "max": f.max}
            elif f.op == "bucketize":
                op["boundaries"] = f.boundaries
            elif f.op == "ordinal":
                op |= {"mapping": f.mapping, "unknown": f.unknown}
            elif f.op == "one_hot":
                op |= {"categories": f.categories, "unknown": f.unknown}
            if f.case_fold:  # absent when false: specs without it keep their schema hash
                op["case_fold"] = True
            features.append({"name": f.name, "op": op, "output": f.output})
        entity = self.entity.model_dump(mode="json") if self.entity is not None else None
        return {
            "name": self.name,
            "version": self.version,
            "inputs": inputs,
            "features": features,
            "entity": entity,
        }

    def fitted(self, columns: Mapping[str, Sequence[str | None]]) -> FeatureSpec:
        """This spec with every ``frequency_rank`` feature learned from ``columns`` (input name
        -> the training part's values): an ``ordinal`` feature whose mapping codes the
        ``max_categories`` most frequent categories with at least ``min_count`` rows 1, 2, ...
        (most frequent first; ties by name), every other category reading as missing. With
        ``case_fold`` the counts are of the kernels' case-folded values. What a model bundle
        stores, so serving applies the same map."""
        if not any(f.op == "frequency_rank" for f in self.features):
            return self
        from feature_kernels._core import fold_case  # the kernels' rule, not a Python copy

        features = []
        for f in self.features:
            if f.op != "frequency_rank":
                features.append(f)
                continue
            assert f.input is not None
            counts: dict[str, int] = {}
            values = columns[f.input]
            for value in fold_case(list(values)) if f.case_fold else values:
                if value is not None:
                    counts[value] = counts.get(value, 0) + 1
            kept = sorted(
                ((c, n) for c, n in counts.items() if n >= f.min_count),
                key=lambda cn: (-cn[1], cn[0]),
            )[: f.max_categories]
            features.append(
                FeatureDef(
                    name=f.name,
                    op="ordinal",
                    input=f.input,
                    mapping={c: float(rank) for rank, (c, _) in enumerate(kept, start=1)},
                    unknown="missing",
                    case_fold=f.case_fold,
                    reason=f.reason,
                    output=f.output,
                )
            )
        return self.model_copy(update={"features": features})

    def to_yaml(self) -> str:
        """The spec as YAML (defaults left out): what ``load_spec`` reads back unchanged."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def plan_json(self) -> str:
        """``plan()`` as compact JSON."""
        return json.dumps(self.plan(), separators=(",", ":"), allow_nan=False)

    def output_features(self) -> list[tuple[str, FeatureDef]]:
        """(model column name, defining feature) in vector order; one-hot features expand."""
        out: list[tuple[str, FeatureDef]] = []
        for f in self.features:
            if not f.output:
                continue
            if f.op == "one_hot":
                out.extend((f"{f.name}={c}", f) for c in f.categories or [])
            else:
                out.append((f.name, f))
        return out

    def entity_inputs(self) -> list[str]:
        """Inputs served from the online store."""
        return [n for n, d in self.inputs.items() if d.source == "entity"]

    def store_namespace(self) -> str:
        """Online-store namespace of this spec's entity features: name + version."""
        return f"{self.name}.v{self.version}"

    def column_of(self, input_name: str) -> str:
        """The training-data column of an input."""
        return self.inputs[input_name].column or input_name


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<root>"


def _cross_check(spec: FeatureSpec) -> list[str]:
    """Checks across keys: operands exist, have the right type and come before their use."""
    problems: list[str] = []
    for name, d in spec.inputs.items():
        problems.extend(f"inputs.{name}.{key}: {msg}" for key, msg in d.problems())
    for i, f in enumerate(spec.features):
        problems.extend(f"features[{i}].{key}: {msg}" for key, msg in f.problems())
    problems.extend(_entity_problems(spec))
    numeric = {n for n, d in spec.inputs.items() if d.type != "categorical"}
    categorical = {n for n, d in spec.inputs.items() if d.type == "categorical"}
    derived: set[str] = set()
    problems.extend(_repeated_names("features", [f.name for f in spec.features]))
    for i, f in enumerate(spec.features):
        key = f"features[{i}]"
        for field in ("input", "numerator", "denominator", "left", "right"):
            ref = getattr(f, field)
            if ref is None:
                continue
            if f.op == "missing_indicator" and ref in categorical:
                continue  # a categorical input may be checked for presence
            if f.op in ("ordinal", "one_hot", "frequency_rank"):
                if ref not in categorical:
                    problems.append(f"{key}.{field}: {ref!r} is not a categorical input")
            elif ref in categorical:
                problems.append(
                    f"{key}.{field}: {ref!r} is categorical; op {f.op!r} needs a number"
                )
            elif ref not in numeric and ref not in derived:  # inputs win over features
                problems.append(f"{key}.{field}: {ref!r} is not an input or an earlier feature")
        if f.op == "one_hot":
            derived.discard(f.name)  # one-hot columns cannot feed numeric operations
        else:
            derived.add(f.name)
    return problems


def _repeated_names(where: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"{where}[{i}].name: {name!r} is already defined")
        seen.add(name)
    return problems


def _entity_problems(spec: FeatureSpec) -> list[str]:
    declared = set(spec.entity_inputs())
    if spec.entity is None:
        return [f"inputs.{n}.source: 'entity' needs an 'entity' section" for n in sorted(declared)]
    e = spec.entity
    problems: list[str] = []
    if e.as_of not in spec.dates:
        problems.append(f"entity.as_of: {e.as_of!r} must be listed in 'dates'")
    problems.extend(_repeated_names("entity.features", [f.name for f in e.features]))
    seen = {f.name for f in e.features}
    for i, f in enumerate(e.features):
        key = f"entity.features[{i}]"
        if f.name not in declared:
            problems.append(f"{key}.name: {f.name!r} is not an input with source: entity")
        table = e.tables.get(f.table)
        if table is None:
            problems.append(f"{key}.table: {f.table!r} is not in entity.tables")
            continue
        if f.agg != "count" and f.column is None:
            problems.append(f"{key}.column: agg {f.agg!r} needs a column")
        if f.agg == "attribute" and table.time is not None:
            problems.append(f"{key}.agg: 'attribute' reads a table without 'time'")
        if f.agg != "attribute" and table.time is None:
            problems.append(f"{key}.agg: {f.agg!r} needs an event table (with 'time')")
        if f.window_days is not None and table.time is None:
            problems.append(f"{key}.window_days: needs an event table (with 'time')")
    for name in sorted(declared - seen):
        problems.append(f"inputs.{name}.source: no entity.features entry computes {name!r}")
    for tname, t in e.tables.items():
        if t.time is not None and t.time not in t.dates:
            problems.append(f"entity.tables.{tname}.time: {t.time!r} must be listed in 'dates'")
        for dname, d in t.derive.items():
            for side in ("start", "end"):
                if getattr(d, side) not in t.dates:
                    problems.append(
                        f"entity.tables.{tname}.derive.{dname}.{side}: must be listed in 'dates'"
                    )
    return problems


def parse_spec(data: Mapping[str, Any], source: str = "<spec>") -> FeatureSpec:
    """Validate a spec given as a mapping. ``source`` names it in error messages."""
    try:
        spec = FeatureSpec.model_validate(data)
    except ValidationError as e:
        lines = [
            f"{source}: {_loc(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        raise SpecError("\n".join(lines)) from None
    problems = _cross_check(spec)
    if problems:
        raise SpecError("\n".join(f"{source}: {p}" for p in problems))
    return spec


def load_spec(path: str | Path) -> FeatureSpec:
    """Read and validate a YAML spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{p}: cannot read spec file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: <root>: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p}: <root>: a spec must be a mapping")
    return parse_spec(data, str(p))
