"""The feature-spec reference (``specs/README.md``), generated from the pydantic schema in
:mod:`feature_kernels.spec`: every section and key with its type, default and meaning (the
fields' docstrings), and every feature op with an example. ``python -m feature_kernels.specdoc``
rewrites the file; a test fails when the file differs from what the schema gives, when a key
has no docstring, or when an op has no entry here."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from feature_kernels.spec import (
    DeriveDef,
    DriftTestDef,
    EntityDef,
    EntityFeatureDef,
    FeatureDef,
    FeatureSpec,
    HistoryTable,
    InputDef,
    ModelDef,
    MonitoringDef,
    TargetDef,
)

__all__ = ["OPS", "SECTIONS", "reference"]

OPS: dict[str, tuple[str, str]] = {
    "value": (
        "The operand as it is (missing stays missing).",
        "{name: age, op: value, input: age, monotone: decreasing, reason: Younger applicant}",
    ),
    "clip": (
        "The operand clamped to [`min`, `max`] (either side optional).",
        "{name: utilisation, op: clip, input: revolving_utilization, max: 10, ...}",
    ),
    "log1p": (
        "`ln(1 + max(x, 0))`: compresses long tails; negative values count as 0.",
        "{name: debt_ratio_log, op: log1p, input: debt_ratio, ...}",
    ),
    "ratio": (
        "`numerator / denominator`; a zero denominator gives `on_zero` (missing when absent).",
        "{name: income_per_person, op: ratio, numerator: monthly_income, "
        "denominator: household, on_zero: 0, ...}",
    ),
    "bucketize": (
        "The number of `boundaries` at or below the value (0 .. len).",
        "{name: duration_band, op: bucketize, input: duration_months, "
        "boundaries: [12, 24, 36], ...}",
    ),
    "missing_indicator": (
        "1 when the operand is missing, else 0 (keeps the signal that a code was reported).",
        "{name: past_due_code_reported, op: missing_indicator, input: past_due_30_59, ...}",
    ),
    "difference": (
        "`(left - right) * scale` (e.g. two dates in days, in years with scale 1/365.25).",
        "{name: account_age_years, op: difference, left: application_date, "
        "right: opened_date, scale: 0.0027379, ...}",
    ),
    "ordinal": (
        "A category's number from `mapping` (an order the model may treat as monotone).",
        "{name: checking_account, op: ordinal, input: checking, "
        "mapping: {'none': 0, '< 0': 1, '>= 200': 3}, unknown: missing, ...}",
    ),
    "one_hot": (
        "One 0/1 column per listed category (`name=category`); cannot be monotone.",
        "{name: purpose, op: one_hot, input: purpose, categories: [car, education], "
        "unknown: missing, ...}",
    ),
    "frequency_rank": (
        "A free-text category's frequency rank, learned from the training part: the "
        "`max_categories` most frequent (with at least `min_count` rows) get 1, 2, ... and "
        "every other category reads as missing. Training replaces it by the `ordinal` feature "
        "it learned, and the model bundle stores that spec, so serving applies the same map.",
        "{name: residential_city_rank, op: frequency_rank, input: residential_city, "
        "max_categories: 100, min_count: 20, ...}",
    ),
}
"""op -> (what it computes, an example feature)."""

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("the spec (top level)", FeatureSpec),
    ("`target`", TargetDef),
    ("`inputs.<name>`", InputDef),
    ("`features[]`", FeatureDef),
    ("`entity`", EntityDef),
    ("`entity.tables.<name>`", HistoryTable),
    ("`entity.tables.<name>.derive.<column>`", DeriveDef),
    ("`entity.features[]`", EntityFeatureDef),
    ("`monitoring`", MonitoringDef),
    ("`monitoring.features.<name>` and `monitoring.prediction`", DriftTestDef),
    ("`model`", ModelDef),
]
"""Every part of the schema, in the order the reference presents them."""


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" \\| null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = ", ".join(_type(a) for a in args if a is not Ellipsis)
        return f"list of {inner}" if origin is list else f"[{inner}]"
    if origin is dict:
        return f"map of {_type(args[0])} -> {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "(its defaults)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined or field.default is None:
        return "none"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"  # as YAML writes it
    if field.default == "":
        return '`""`'
    return f"`{field.default}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference() -> str:
    """The reference as Markdown."""
    out = [
        "# Feature spec reference",
        "",
        "Generated from `feature_kernels/python/feature_kernels/spec.py` by "
        "`python -m feature_kernels.specdoc`; a test fails when this file is out of date. "
        "A bad spec fails to load with the file, the key and the problem "
        "(`specs/x.yaml: features[3].boundaries: ...`). The schema hash covers the inputs and "
        "features only (`monitoring` and `model` can change without retraining's refusal).",
        "",
    ]
    for title, model in SECTIONS:
        out += [f"## {title}", "", _cell(model.__doc__ or ""), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            out.append(
                f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
                f"{_cell(field.description or '')} |"
            )
        out.append("")
    out += ["## Feature ops", "", "| op | computes | example |", "|---|---|---|"]
    for op, (what, example) in OPS.items():
        out.append(f"| `{op}` | {_cell(what)} | `{example}` |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path("specs/README.md")
    target.write_text(reference())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
