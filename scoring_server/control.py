"""The control plane: one process, Python beside the Rust data plane.

``python -m scoring_server`` runs ``ControlPlane.run``, which

- starts the data plane (``feature_kernels.DataPlane``: tonic on its own runtime, every core):
  the gRPC port is bound at once and ``/metrics`` served; the port takes connections once the
  first registry poll is done (its champion loaded, or known to be absent: then health answers
  NOT_SERVING and scoring calls UNAVAILABLE);
- polls MLflow every ``registry_poll_seconds`` for the ``champion`` and ``challenger`` aliases
  and the routing tags, downloads and compiles each new version (a child process), runs the
  gates (schema, parity of every predictor, TreeSHAP additivity), and hands what passed to the
  data plane, which swaps it in atomically (calls in flight finish on their model). A version
  that fails a gate is refused (metric + log line saying why); the previous one keeps serving;
  an unreachable registry keeps what is served;
- exits non-zero when the data plane's server has failed, so a supervisor restarts the process
  (a process that answers health but not calls is never left behind);
- on SIGTERM / SIGINT: health NOT_SERVING, no new calls, calls in flight get the grace period,
  the logs are written, exit 0.

Only this process talks to MLflow, and nothing here runs per request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from credit_core import ModelNotReady, ModelRef, ModelRejectedError, RegistryError, Routing
from credit_core.bundle import ENTITY_ID
from credit_core.feature_store import rows_from_records
from credit_core.registry import MlflowRegistry, routing_from_tags
from feature_kernels import DataPlane
from scoring_server.loader import EntityLookup, LoadedModel, ModelLoader
from scoring_server.settings import ServerSettings

__all__ = ["CHALLENGER", "CHAMPION", "ControlPlane", "start_data_plane"]

log = logging.getLogger("scoring_server.control")

CHAMPION = "champion"
CHALLENGER = "challenger"
_CHECK_SECONDS = 0.5
"""How often the data plane's health is checked between registry polls."""


def start_data_plane(settings: ServerSettings) -> DataPlane:
    """The data plane of ``settings`` (ports bound; raises ``OSError`` when one cannot be)."""
    return DataPlane(
        host=settings.host,
        grpc_port=settings.grpc_port,
        metrics_host=settings.host,
        metrics_port=settings.metrics_port,
        threads=settings.data_plane_threads,
        max_message_bytes=settings.max_message_bytes,
        max_batch=settings.max_batch_size,
        stream_batch_max=settings.stream_batch_max,
        stream_batch_wait=settings.stream_batch_wait_seconds,
        stream_queue=settings.stream_queue_size,
        stream_id_window=settings.stream_id_window,
        store_url=settings.redis_url,
        store_cluster=settings.redis_cluster,
        store_timeout=settings.feature_store_timeout_seconds,
        policy=settings.policy().rule,
        predictor=settings.predictor,
        evaluation_dir=settings.evaluation_dir(),
        log_predictions=settings.log_predictions,
        log_max_bytes=settings.evaluation_max_bytes,
        log_max_age=None
        if settings.evaluation_retention_days is None
        else settings.evaluation_retention_days * 86400,
        shutdown_grace=settings.shutdown_grace_seconds,
        tls_cert=settings.tls_cert_file,
        tls_key=settings.tls_key_file,
        tls_client_ca=settings.tls_client_ca_file,
        handshake_timeout=settings.tls_handshake_timeout_seconds,
        outcome_writers=settings.outcome_writers,
        outcome_tokens_file=settings.outcome_tokens_file,
        keepalive=settings.keepalive_seconds,
        max_concurrent_streams=settings.max_concurrent_streams,
        max_in_flight=settings.max_in_flight_calls,
        max_open_streams=settings.max_open_streams,
        retry_pushback=settings.retry_pushback_ms / 1000,
        max_header_list_bytes=settings.max_header_list_bytes,
        max_pending_reset_streams=settings.max_pending_reset_streams,
        max_local_error_resets=settings.max_local_error_resets,
        tcp_keepalive=settings.tcp_keepalive_seconds,
        max_connection_age=settings.max_connection_age_seconds,
        call_timeout=settings.call_timeout_seconds,
        max_connections=settings.max_connections,
        log_stream=None
        if settings.log_redis_url is None
        else (settings.log_redis_url, settings.log_stream_prefix, settings.log_stream_max_len),
    )


def read_routing(tags: Mapping[str, str], model_name: str) -> Routing:
    """The model's routing from its tags; a bad value is logged and means ``off`` (the
    challenger never gets traffic by accident)."""
    try:
        return routing_from_tags(tags)
    except ValueError as e:
        log.error("routing tags of %s ignored (challenger gets no traffic): %s", model_name, e)
        return Routing()


def _release_memory() -> None:
    """Hand memory freed by a load (downloads, gates) back to the OS: the process stays small."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to trim
            pass


@dataclass
class ControlPlane:
    settings: ServerSettings
    plane: DataPlane
    registry: MlflowRegistry
    loader: ModelLoader
    served: dict[str, LoadedModel | None] = field(default_factory=dict)
    routing: Routing = field(default_factory=Routing)
    refused: dict[str, str] = field(default_factory=dict)
    """alias -> version refused last (not retried until the alias moves)."""
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, settings: ServerSettings) -> ControlPlane:
        try:
            plane = start_data_plane(settings)
        except OSError as e:
            raise SystemExit(f"cannot bind gRPC or metrics: {e}") from e
        registry = MlflowRegistry(settings.tracking_uri())
        loader = ModelLoader(
            registry,
            model_name=settings.model_name,
            state_dir=settings.state_dir,
            parity_tolerance=settings.parity_tolerance,
            parallel_units=settings.compile_parallel_units,
            reason_codes=settings.reason_codes,
            additivity_tolerance=settings.additivity_tolerance,
            predictor=settings.predictor,
        )
        return cls(settings, plane, registry, loader)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        s = self.settings
        if s.tls_cert_file is None and s.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "gRPC on %s without TLS: set ALTSCORE_TLS_CERT_FILE and ALTSCORE_TLS_KEY_FILE",
                s.host,
            )
        try:
            self._poll()
            self.plane.serve()
            log.info(
                "serving gRPC on %s:%d (%s), metrics on http://%s:%d/metrics%s",
                s.host,
                self.plane.grpc_port,
                "TLS" if s.tls_cert_file else "plaintext",
                s.host,
                self.plane.metrics_port,
                "" if self.served.get(CHAMPION) else " (health NOT_SERVING until a model loads)",
            )
            return self._watch()
        finally:
            log.info("draining")
            self.plane.shutdown(s.shutdown_grace_seconds)
            log.info("stopped")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def _watch(self) -> int:
        waited = 0.0
        while not self.stop.wait(_CHECK_SECONDS):
            if not self.plane.running:
                log.error("the data plane stopped serving: exiting so the process is replaced")
                return 1
            waited += _CHECK_SECONDS
            if waited >= self.settings.registry_poll_seconds:
                waited = 0.0
                try:
                    self._poll()
                except Exception:  # the watcher must survive anything one poll hits
                    log.exception("registry poll failed; retrying")
        log.info("signal received")
        return 0

    def _poll(self) -> bool:
        """Check the registry once; returns True when what is served changed."""
        name = self.loader.model_name
        try:
            state = self.registry.model_state(name)  # one read: aliases and routing tags
        except (RegistryError, ModelNotReady) as e:
            log.warning("registry not reachable, serving what is loaded: %s", e)
            return False
        routing = read_routing(state.tags, name)
        champion = self._gated(CHAMPION, state.aliases.get(CHAMPION), required=True)
        challenger = (
            self._gated(CHALLENGER, state.aliases.get(CHALLENGER), required=False)
            if routing.mode != "off"
            else None
        )
        wanted = {CHAMPION: champion, CHALLENGER: challenger}
        if wanted == self.served and routing == self.routing:
            return False
        self.served, self.routing = wanted, routing
        self.plane.set_models(
            None if champion is None else champion.serving,
            None if challenger is None else challenger.serving,
            routing.mode,
            routing.challenger_share,
        )
        for alias, model in wanted.items():
            if model is None:
                self.plane.clear_parity(alias)
            else:
                self.plane.set_parity(alias, model.parity_max_abs_diff)
        if champion is not None:
            self.plane.set_compile_seconds(champion.compiled.compile_seconds)
            log.info(
                "serving %s v%s%s",
                name,
                champion.ref.version,
                f", challenger v{challenger.ref.version} ({routing.mode})" if challenger else "",
                extra={
                    "model_name": name,
                    "model_version": champion.ref.version,
                    "challenger_version": challenger.ref.version if challenger else None,
                    "routing": routing.mode,
                },
            )
        _release_memory()
        return True

    def _gated(self, alias: str, seen: str | None, *, required: bool) -> LoadedModel | None:
        """What to serve under ``alias``: a new version that passed every gate, else the one
        already serving. ``seen``: the version the poll's read found under ``alias``; while it
        is the one serving (or the one refused), the registry is not asked again."""
        serving = self.served.get(alias)
        if seen is not None and serving is not None and serving.ref.version == seen:
            return serving
        if seen is not None and self.refused.get(alias) == seen:
            return serving
        try:
            version, bundle_dir = self.loader.fetch(alias)
        except ModelNotReady as e:
            if required:
                self.plane.count_model_load("unavailable")
                log.warning("no %s: %s", alias, e)
                return serving  # a champion alias removed by mistake does not stop serving
            return None  # no challenger alias: no challenger
        except RegistryError as e:
            self.plane.count_model_load("unavailable")
            log.warning("registry error on %s, serving what is loaded: %s", alias, e)
            return serving
        if serving is not None and serving.ref.version == version.version:
            return serving
        if self.refused.get(alias) == version.version:
            return serving
        try:
            model = self.loader.load_bundle(
                bundle_dir, ModelRef(self.loader.model_name, version.version, alias)
            )
        except ModelRejectedError as e:
            self.refused[alias] = version.version
            self.plane.count_model_load("rejected")
            keeping = f"v{serving.ref.version} keeps serving" if serving else "nothing to serve"
            log.error(
                "model refused: %s v%s: %s; %s",
                alias,
                version.version,
                e,
                keeping,
                extra={
                    "model_name": self.loader.model_name,
                    "model_version": version.version,
                    "variant": alias,
                },
            )
            return serving
        self._prepare_store(model)
        self.plane.count_model_load("loaded")
        return model

    def _prepare_store(self, model: LoadedModel) -> None:
        """The embedded store gets the model's entity snapshot; a Redis connection is opened
        before the first request needs it."""
        entity = model.entity
        if entity is None:
            return
        if self.plane.embedded_store:
            path = model.bundle.entities_path
            if path is None:
                log.warning(
                    "%s v%s has entity inputs but no snapshot: every applicant is new",
                    model.ref.name,
                    model.ref.version,
                )
                return
            written = self.plane.publish_embedded(
                entity.namespace, f"model-{model.ref.version}", _snapshot_rows(path, entity)
            )
            log.info("embedded feature store: %d entities for %s", written, entity.namespace)
            return
        problem = self.plane.warm_up_store(entity.namespace, 2.0)
        if problem is None:
            log.info("feature store ready for %s", entity.namespace)
        else:
            log.warning("feature store not ready yet (requests will retry): %s", problem)


def _snapshot_rows(path: Path, entity: EntityLookup) -> list[tuple[str, dict[str, float | str]]]:
    import polars as pl

    records = pl.read_parquet(path).iter_rows(named=True)
    return list(rows_from_records(records, id_field=ENTITY_ID, categorical=entity.categorical))
