"""Prometheus metrics of the scoring server.

Served processes write their values to files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the
control process before anything imports ``prometheus_client``); the control process serves the
sum over all of them on one ``/metrics`` port. Without that variable (in-process use, benchmarks)
values live in memory as usual.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ServerMetrics", "observe_many", "serve_multiprocess"]

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


def observe_many(histogram: Histogram, bucket_counts: Sequence[int], total: float) -> None:
    """Add observations counted elsewhere (the native front end) to a labelled histogram child:
    ``bucket_counts[i]`` values fell in bucket ``i`` (``LATENCY_BUCKETS`` then +Inf, not
    cumulative), ``total`` is their sum. prometheus_client has no public call for this; its
    ``observe`` does exactly these increments one value at a time."""
    buckets = histogram._buckets  # one value per upper bound, incremented as observe() does
    if len(bucket_counts) != len(buckets):
        raise ValueError(f"{len(bucket_counts)} bucket counts for {len(buckets)} buckets")
    for value, n in zip(buckets, bucket_counts, strict=True):
        if n:
            value.inc(n)
    histogram._sum.inc(total)


class ServerMetrics:
    """Names follow ``credit_scoring_<what>_<unit>``; labels are low-cardinality only."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "credit_scoring_requests",
            "Scoring requests by RPC and gRPC status code (stream messages count one each).",
            ["rpc", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "credit_scoring_request_duration_seconds",
            "Server time per request (per message for streams).",
            ["rpc"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.direct_answers = Counter(
            "credit_scoring_direct_answers",
            "Calls the native front end answered itself, without Python (included in "
            "credit_scoring_requests_total).",
            ["rpc"],
            registry=self.registry,
        )
        self.applicants = Counter(
            "credit_scoring_applicants_scored",
            "Applicants scored, by model version and variant.",
            ["model_version", "variant"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "credit_scoring_model_info",
            "1 for the model being served, labelled with its identity.",
            ["model_name", "model_version", "variant", "schema_hash"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.model_loads = Counter(
            "credit_scoring_model_loads",
            "Model load attempts by outcome (loaded, rejected, unavailable).",
            ["outcome"],
            registry=self.registry,
        )
        self.compile_seconds = Gauge(
            "credit_scoring_model_compile_seconds",
            "Seconds the served model took to compile (from the cache record on a cache hit).",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.parity_diff = Gauge(
            "credit_scoring_model_parity_max_abs_diff",
            "Largest |compiled - XGBoost| PD on the reference sample of the served model.",
            ["variant"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.shadow_failures = Counter(
            "credit_scoring_shadow_failures",
            "Shadow (challenger) scorings that failed; the champion's answer was still given.",
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "credit_scoring_worker_restarts",
            "Serving worker processes that died and were restarted by the control process.",
            registry=self.registry,
        )

        self.store_failures = Counter(
            "credit_scoring_feature_store_failures",
            "Feature-store lookups that failed or timed out.",
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "credit_scoring_feature_store_lookup_duration_seconds",
            "Time of one feature-store lookup (one round trip per request or micro-batch).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "credit_scoring_degraded_answers",
            "Answers given without feature-store values because the store failed.",
            registry=self.registry,
        )

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])


def serve_multiprocess(host: str, port: int) -> int:
    """Serve the sum of every process's metrics (multiprocess mode); returns the bound port."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_address[1])
