"""A serving worker's parts put together: metrics, loader, service, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from credit_core import CreditError, FeatureStoreError, ModelRef
from credit_core.bundle import ENTITY_ID
from credit_core.evaluation import EvaluationLog
from credit_core.feature_store import InMemoryFeatureStore, rows_from_records, store_from_url
from scoring_server.grpc.front_end import NativeFrontEnd
from scoring_server.grpc.server import GrpcServer, create_server
from scoring_server.loader import LoadedModel, ModelLoader
from scoring_server.manifest import ManifestFollower, ServingManifest, Variant
from scoring_server.metrics import ServerMetrics
from scoring_server.service import ScoringService, Variants
from scoring_server.settings import ServerSettings

__all__ = ["ScoringApp"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _in_daemon_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run blocking work (registry calls, compilation) off the event loop in a daemon thread, so a
    SIGTERM during a long compile never waits for it (asyncio.to_thread's executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = fn(), None
        except BaseException as e:
            result, error = None, e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while we worked: nobody waits for the answer
            pass

    threading.Thread(target=target, name="model-loader", daemon=True).start()
    return future


def fill_embedded_store(store: InMemoryFeatureStore, model: LoadedModel) -> int:
    """The embedded store of a laptop run gets the entity snapshot stored with the model."""
    entity = model.entity
    path = model.bundle.entities_path
    if entity is None or path is None:
        return 0
    import polars as pl

    rows = rows_from_records(
        pl.read_parquet(path).iter_rows(named=True),
        id_field=ENTITY_ID,
        categorical=entity.categorical,
    )
    version = f"model-{model.ref.version}"
    written = store.publish(entity.namespace, version, rows, ttl_seconds=None)
    store.activate(entity.namespace, version)
    log.info("embedded feature store: %d entities for %s", written, entity.namespace)
    return written


class ScoringApp:
    """One serving worker. Starts serving at once (health NOT_SERVING, calls UNAVAILABLE) and
    follows the serving manifest the control process publishes: each new version is loaded from
    local disk (compiled-library cache, parity gate again) off the event loop, then swapped in
    atomically; health turns SERVING when a champion is loaded. A version that fails to load
    here is logged and the previous one keeps serving."""

    def __init__(self, settings: ServerSettings, manifest_path: Path) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.loader = ModelLoader(
            None,
            model_name=settings.model_name,
            state_dir=settings.state_dir,
            parity_tolerance=settings.parity_tolerance,
            parallel_units=settings.compile_parallel_units,
            reason_codes=settings.reason_codes,
            additivity_tolerance=settings.additivity_tolerance,
        )
        self.store = store_from_url(settings.redis_url)
        self.evaluation = EvaluationLog(settings.evaluation_dir())
        self.predictions = (
            self.evaluation.predictions_writer() if settings.log_predictions else None
        )
        self.outcomes = self.evaluation.outcomes_writer()
        self.service = ScoringService(
            settings.policy(),
            max_batch_size=settings.max_batch_size,
            metrics=self.metrics,
            store=self.store,
            store_timeout=settings.feature_store_timeout_seconds,
            predictions=self.predictions,
            outcomes=self.outcomes,
        )
        self.front: NativeFrontEnd | None = (
            NativeFrontEnd(
                self.metrics,
                self.predictions,
                max_message_bytes=settings.max_message_bytes,
                threads=settings.front_end_threads,
            )
            if settings.native_front_end
            else None
        )
        self.follower = ManifestFollower(manifest_path)
        self.grpc_port = 0
        self._server: GrpcServer | None = None
        self._following: asyncio.Task[None] | None = None
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        """(alias, version) -> model, for the versions in the current manifest."""

    async def start(self) -> None:
        front = self.front
        address = front.backend_address if front is not None else None
        server = await create_server(self.settings, self.service, self.metrics, address)
        await server.start()
        self._server = server
        if front is None:
            self.grpc_port = server.port
        else:
            self.grpc_port = front.start(self.settings.host, self.settings.grpc_port)
            log.info(
                "native front end on %s:%d; what it does not answer goes to %s",
                self.settings.host,
                self.grpc_port,
                front.backend_address,
            )
        self._following = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            try:
                manifest = self.follower.changed()
                if manifest is not None:
                    await self._apply(manifest)
            except Exception:  # a bad manifest or load must not stop the worker from serving
                log.exception("serving manifest not applied; the current models keep serving")
            await asyncio.sleep(self.settings.manifest_poll_seconds)

    async def _apply(self, manifest: ServingManifest) -> None:
        wanted = {"champion": manifest.champion, "challenger": manifest.challenger}
        loaded: dict[str, LoadedModel | None] = {}
        for alias, variant in wanted.items():
            loaded[alias] = None if variant is None else await self._model(alias, variant)
        champion = loaded["champion"]
        if champion is None:
            return
        challenger = loaded["challenger"]
        self._loaded = {(m.ref.variant, m.ref.version): m for m in (champion, challenger) if m}
        self.service.set_variants(Variants(champion, challenger, manifest.routing))
        if self.front is not None:
            self.front.follow(self.service)
        if self._server is not None:
            await self._server.health.set_serving(True)
        log.info(
            "serving %s v%s%s (manifest %d)",
            champion.ref.name,
            champion.ref.version,
            f", challenger v{challenger.ref.version} ({manifest.routing.mode})"
            if challenger
            else "",
            manifest.generation,
        )

    async def _model(self, alias: str, variant: Variant) -> LoadedModel | None:
        """The loaded model for ``variant``: the one already serving, or a fresh load; on a
        failed load, what serves now under ``alias`` (or None)."""
        key = (alias, variant.version)
        if key in self._loaded:
            return self._loaded[key]
        ref = ModelRef(self.settings.model_name, variant.version, alias)
        try:
            model = await _in_daemon_thread(
                partial(self.loader.load_bundle, Path(variant.bundle_dir), ref)
            )
        except CreditError as e:
            self.metrics.model_loads.labels("rejected").inc()
            log.error("model refused in this worker: %s v%s: %s", alias, variant.version, e)
            current = [m for (a, _), m in self._loaded.items() if a == alias]
            return current[0] if current else None
        embedded = self.store
        if isinstance(embedded, InMemoryFeatureStore):
            await _in_daemon_thread(partial(fill_embedded_store, embedded, model))
        await self._warm_up_store(model)
        return model

    async def _warm_up_store(self, model: LoadedModel) -> None:
        """Open the feature-store connection before the first request needs it (a first connect
        can take longer than the per-request budget)."""
        if model.entity is None:
            return
        try:
            await self.store.get_many(model.entity.namespace, ["warm-up"], timeout=2.0)
            log.info("feature store ready: %r", self.store)
        except FeatureStoreError as e:
            log.warning("feature store not reachable yet (requests will retry): %s", e)

    async def stop(self) -> None:
        """Stop accepting, let in-flight calls finish within the grace period, flush the logs."""
        if self._following is not None:
            self._following.cancel()
        grace = self.settings.shutdown_grace_seconds
        if self._server is not None:
            await self._server.health.shutdown()
        if self.front is not None:  # its calls in flight may still need the backend: first
            await asyncio.to_thread(self.front.stop, grace)
        if self._server is not None:
            await self._server.stop(grace)
        for writer in (self.predictions, self.outcomes):
            if writer is not None:
                writer.close()
        log.info("stopped")
