"""Merging feature-store values into a request (pure: no store, no model)."""

from __future__ import annotations

from scoring_server.loader import EntityLookup
from scoring_server.service import ScoringRequest, _merge

LOOKUP = EntityLookup(
    namespace="demo.v1",
    inputs=("visits", "segment", "limit"),
    overridable=frozenset({"limit"}),
    categorical=frozenset({"segment"}),
    optional=True,
)


def _req(
    numeric: dict[str, float], categorical: dict[str, str], applicant: str = "a1"
) -> ScoringRequest:
    return ScoringRequest("r1", applicant, numeric, categorical)


def test_stored_values_fill_entity_inputs() -> None:
    p = _merge(LOOKUP, _req({"amount": 5.0}, {}), {"visits": 3.0, "segment": "gold"}, False)
    assert p.numeric == {"amount": 5.0, "visits": 3.0}
    assert p.categorical == {"segment": "gold"}
    assert p.defaulted == ("limit",)
    assert p.violations == []
    assert not p.degraded


def test_request_overrides_only_where_the_spec_allows() -> None:
    stored = {"visits": 3.0, "segment": "gold", "limit": 100.0}
    p = _merge(LOOKUP, _req({"limit": 250.0, "visits": 9.0}, {"segment": "x"}), stored, False)
    assert p.numeric["limit"] == 250.0  # overridable: the request wins
    assert set(p.violations) == {
        ("applicant.numeric.visits", "comes from the feature store; a request may not set it"),
        ("applicant.categorical.segment", "comes from the feature store; a request may not set it"),
    }


def test_unknown_entity_and_degraded_default_everything() -> None:
    p = _merge(LOOKUP, _req({}, {}), None, True)
    assert p.defaulted == ("visits", "segment", "limit")
    assert p.degraded
    missing_id = _merge(LOOKUP, _req({}, {}, applicant=""), None, False)
    assert missing_id.violations[0][0] == "applicant.applicant_id"
