"""The worker's native gRPC front end (``feature_kernels.FrontEnd``, Rust, its own threads).

It listens on the public port and answers ``Score`` / ``ScoreBatch`` calls that need nothing
but the request's own features (``ScoringService.direct_model``) without Python: the same
decoder, kernels, evaluator and encoder as the servicer's native path, so the same bytes. Every
other call, and every message with anything wrong in it, goes unchanged to this worker's
grpc.aio server on a private abstract Unix socket, which stays the one implementation of errors,
feature-store lookups, challenger routing, explanations, streams, health and reflection.

What the front end did is buffered natively; a thread here carries it every 0.25 s (or sooner)
into the evaluation log (its prediction lines, already encoded in the log's format) and into
the Prometheus metrics (requests, latency, applicants), so the metrics and the log hold every
call whichever side answered it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading

from credit_core.evaluation import EvaluationWriter, PredictionRecord
from feature_kernels import FrontEnd
from scoring_server.grpc.converters import variant_code
from scoring_server.metrics import LATENCY_BUCKETS, ServerMetrics, observe_many
from scoring_server.service import ScoringService

__all__ = ["NativeFrontEnd"]

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 0.25


class NativeFrontEnd:
    """Start it after the backend server (``backend_address``) is listening; ``follow`` the
    service after every model change; ``stop`` before stopping the backend."""

    def __init__(
        self,
        metrics: ServerMetrics,
        predictions: EvaluationWriter[PredictionRecord] | None,
        *,
        max_message_bytes: int,
        threads: int,
    ) -> None:
        name = f"altscore-{os.getpid()}-{secrets.token_hex(8)}"
        self.backend_address = f"unix-abstract:{name}"
        """Where the worker's grpc.aio server must listen (private to this worker)."""
        self.metrics = metrics
        self.predictions = predictions
        self._front = FrontEnd(
            backend=name,
            max_message_bytes=max_message_bytes,
            log_predictions=predictions is not None,
            latency_bounds=[*LATENCY_BUCKETS, float("inf")],
            threads=threads,
        )
        self._stopping = threading.Event()
        self._carrier = threading.Thread(target=self._carry, name="front-end-records", daemon=True)

    def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` (shared with the other workers) and serve; returns the port."""
        bound = self._front.start(host, port)
        self._carrier.start()
        return bound

    def follow(self, service: ScoringService) -> None:
        """Answer directly with the service's direct model, or with none (everything through
        Python) when it has none."""
        model = service.direct_model()
        ensemble = model.runtime.ensemble if model is not None else None
        if model is None or ensemble is None:
            self._front.serve_nothing_directly()
            return
        ref, policy = model.ref, service.policy
        self._front.serve_directly(
            model.pipeline.plan,
            ensemble,
            model_name=ref.name,
            model_version=ref.version,
            variant="challenger" if ref.variant == "challenger" else "champion",
            variant_code=variant_code(ref.variant),
            offset=policy.offset,
            factor=policy.factor,
            approve_below=policy.approve_below,
            decline_from=policy.decline_from,
            max_batch=service.max_batch_size,
        )

    @property
    def serving_directly(self) -> bool:
        return self._front.serving_directly

    def _carry(self) -> None:
        while not self._stopping.is_set():
            try:
                self._deliver(_DRAIN_SECONDS)
            except Exception:  # keep carrying: a failed write is retried by the writer itself
                log.exception("front end records not delivered")

    def _deliver(self, wait: float) -> None:
        lines, count, calls, applicants = self._front.drain(wait)
        if count and self.predictions is not None:
            self.predictions.write_encoded(lines, count)
        m = self.metrics
        for rpc, code, n, buckets, total in calls:
            m.requests.labels(rpc, code).inc(n)
            if code == "OK":
                m.direct_answers.labels(rpc).inc(n)
            observe_many(m.latency.labels(rpc), buckets, total)
        for version, variant, n in applicants:
            m.applicants.labels(version, variant).inc(n)

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, GOAWAY every connection, give calls in flight ``grace_seconds`` (the
        backend must still be serving for the ones it answers), then hand over the last records.
        Blocking: call it off the event loop."""
        self._front.stop(grace_seconds)
        self._stopping.set()
        if self._carrier.is_alive():
            self._carrier.join()
        self._deliver(0.0)
