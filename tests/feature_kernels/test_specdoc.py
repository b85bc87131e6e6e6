"""The feature-spec reference cannot drift from the schema: every key documented, every op
described with an example that loads, and specs/README.md exactly what the schema generates."""

from __future__ import annotations

import typing

import yaml

from feature_kernels import FeatureDef
from feature_kernels.specdoc import OPS, SECTIONS, reference
from tests.conftest import ROOT


def test_every_key_of_every_section_is_documented() -> None:
    undocumented = [
        f"{model.__name__}.{name}"
        for _, model in SECTIONS
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == [], "add a docstring under each key in feature_kernels/spec.py"


def test_every_section_of_the_schema_is_in_the_reference() -> None:
    """A new section (a nested model) must be listed in SECTIONS."""
    listed = {model for _, model in SECTIONS}
    seen: set[type] = set()
    todo: list[type] = [SECTIONS[0][1]]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                t = stack.pop()
                stack.extend(typing.get_args(t))
                if isinstance(t, type) and hasattr(t, "model_fields"):
                    todo.append(t)
    assert seen == listed


def test_every_op_is_described_with_an_example_that_parses() -> None:
    ops = typing.get_args(FeatureDef.model_fields["op"].annotation)
    assert list(OPS) == list(ops)
    for op, (what, example) in OPS.items():
        assert what.strip()
        parsed = yaml.safe_load(example.replace(", ...}", "}"))
        assert parsed["op"] == op
        feature = FeatureDef.model_validate({"reason": "why", **parsed})  # a valid feature
        assert feature.problems() == [], (op, feature.problems())


def test_specs_readme_is_what_the_schema_generates() -> None:
    assert (ROOT / "specs" / "README.md").read_text() == reference(), (
        "run `uv run python -m feature_kernels.specdoc` and commit specs/README.md"
    )
