"""The composition root's parts put together: metrics, registry, loader, service, gRPC server."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from credit_core import FeatureStoreError, ModelNotReady, ModelRejectedError, RegistryError
from credit_core.bundle import ENTITY_ID
from credit_core.feature_store import InMemoryFeatureStore, rows_from_records, store_from_url
from credit_core.registry import MlflowRegistry
from scoring_server.grpc.server import GrpcServer, create_server
from scoring_server.loader import LoadedModel, ModelLoader
from scoring_server.metrics import ServerMetrics
from scoring_server.service import ScoringService
from scoring_server.settings import ServerSettings

__all__ = ["ScoringApp"]

log = logging.getLogger(__name__)

CHAMPION = "champion"

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
    """Starts serving at once (health NOT_SERVING, calls UNAVAILABLE) and loads the champion in
    the background; health turns SERVING when a model passed every gate."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.registry = MlflowRegistry(settings.tracking_uri())
        self.loader = ModelLoader(
            self.registry,
            model_name=settings.model_name,
            state_dir=settings.state_dir,
            parity_tolerance=settings.parity_tolerance,
            parallel_units=settings.compile_parallel_units,
        )
        self.store = store_from_url(settings.redis_url)
        self.service = ScoringService(
            settings.policy(),
            max_batch_size=settings.max_batch_size,
            metrics=self.metrics,
            store=self.store,
            store_timeout=settings.feature_store_timeout_seconds,
        )
        self.grpc_port = 0
        self.metrics_port = 0
        self._server: GrpcServer | None = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        server = await create_server(self.settings, self.service, self.metrics)
        await server.start()
        self._server = server
        self.grpc_port = server.port
        log.info(
            "serving gRPC on %s:%d, metrics on http://%s:%d/metrics (health NOT_SERVING until a "
            "model is loaded)",
            self.settings.host,
            self.grpc_port,
            self.settings.host,
            self.metrics_port,
        )
        self._loading = asyncio.create_task(self._load_champion())

    async def _load_champion(self) -> None:
        rejected: str | None = None
        while True:
            try:
                version = await _in_daemon_thread(lambda: self.loader.resolve(CHAMPION))
                if version.version != rejected:
                    model = await _in_daemon_thread(lambda: self.loader.load(CHAMPION))
                    embedded = self.store
                    if isinstance(embedded, InMemoryFeatureStore):
                        await _in_daemon_thread(partial(fill_embedded_store, embedded, model))
                    await self._warm_up_store(model)
                    self.service.set_model(model)
                    self.metrics.model_loads.labels("loaded").inc()
                    if self._server is not None:
                        await self._server.health.set_serving(True)
                    log.info("health SERVING: %s v%s", model.ref.name, model.ref.version)
                    return
            except (ModelNotReady, RegistryError) as e:
                self.metrics.model_loads.labels("unavailable").inc()
                log.warning(
                    "no model yet: %s (retrying in %.0f s)", e, self.settings.registry_poll_seconds
                )
            except ModelRejectedError as e:
                self.metrics.model_loads.labels("rejected").inc()
                rejected = version.version  # not retried until the alias moves
                log.error("model refused: %s; waiting for another version", e)
            await asyncio.sleep(self.settings.registry_poll_seconds)

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
        """Stop accepting, let in-flight calls finish within the grace period."""
        if self._loading is not None:
            self._loading.cancel()
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_seconds)
        log.info("stopped")
