"""Distribution drift between two samples, measured with Evidently: one ``ValueDrift`` per
column (its method and threshold), the one implementation the drift worker (served windows
against the model's reference sample) and the training report (holdout against the training
part) share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DriftScores", "value_drift"]


@dataclass(frozen=True)
class DriftScores:
    scores: dict[str, float]
    """Per column: the test's value (a p-value or a distance, per its method)."""
    drifted: dict[str, bool]
    """Per column: the test failed (drift at its threshold)."""
    snapshot: Any
    """Evidently's snapshot (``.save_html``, ``.dict()``)."""


def value_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    tests: Mapping[str, tuple[str, float]],
) -> DriftScores:
    """Evidently's ``ValueDrift`` of every column of ``tests`` (``column -> (method,
    threshold)``) in ``current`` against ``reference``; numeric columns, NaN = missing."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(tests)
    report = Report(
        [ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in tests.items()],
        include_tests=True,
    )
    definition = DataDefinition(numerical_columns=columns)
    snapshot = report.run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    found = snapshot.dict()
    scores = {str(x["config"]["column"]): float(x["value"]) for x in found["metrics"]}
    drifted = {
        str(t["metric_config"]["params"]["column"]): t["status"] == "FAIL" for t in found["tests"]
    }
    return DriftScores(scores, drifted, snapshot)
