"""``observe_many``: observations counted by the native front end land in a histogram exactly
as one ``observe`` each would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scoring_server.metrics import LATENCY_BUCKETS, ServerMetrics, observe_many


def test_observe_many_equals_observing_one_by_one() -> None:
    values = [0.00005, 0.0001, 0.0003, 0.002, 0.002, 0.04, 3.0, 7.5]
    one, many = ServerMetrics(CollectorRegistry()), ServerMetrics(CollectorRegistry())
    for v in values:
        one.latency.labels("Score").observe(v)
    bounds = [*LATENCY_BUCKETS, float("inf")]
    counts = [0] * len(bounds)
    for v in values:
        counts[next(i for i, b in enumerate(bounds) if v <= b)] += 1
    observe_many(many.latency.labels("Score"), counts, sum(values))

    def histogram_lines(m: ServerMetrics) -> list[str]:
        text = generate_latest(m.registry).decode()
        return [
            line
            for line in text.splitlines()
            if line.startswith("credit_scoring_request_duration_seconds_")
            and "_created" not in line
        ]

    assert histogram_lines(many) == histogram_lines(one)
    with pytest.raises(ValueError, match="bucket counts"):
        observe_many(many.latency.labels("Score"), counts[:-1], 0.0)
