"""The control process: watches the registry, gates models, runs the serving workers.

``python -m scoring_server`` starts this process. It

- reserves the gRPC port and starts ``workers`` serving processes on it (``SO_REUSEPORT``: the
  kernel spreads connections over them), restarting any that dies;
- polls MLflow every ``registry_poll_seconds`` for the ``champion`` and ``challenger`` aliases and
  the routing tags, downloads and compiles each new version off the serving path, runs the
  parity gate, and publishes what passed in the serving manifest the workers follow. A version
  that fails a gate is refused (metric + log line saying why); the previous one keeps serving;
- serves ``/metrics`` for all processes (Prometheus multiprocess mode);
- on SIGTERM / SIGINT, sends SIGTERM to every worker (each drains its in-flight calls) and exits
  when they have.

Only this process imports MLflow; workers stay small (see ``benchmarks/RESULTS.md`` for RSS).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from credit_core import ModelNotReady, ModelRef, ModelRejectedError, RegistryError, Routing
from credit_core.registry import MlflowRegistry
from scoring_server.loader import ModelLoader
from scoring_server.manifest import ServingManifest, Variant
from scoring_server.metrics import ServerMetrics, serve_multiprocess
from scoring_server.settings import ServerSettings

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ControlProcess",
    "ModelWatcher",
]

log = logging.getLogger("scoring_server.control")

CHAMPION = "champion"
CHALLENGER = "challenger"
_RESTART_BACKOFF_SECONDS = 1.0


def read_routing(registry: MlflowRegistry, model_name: str) -> Routing:
    """The model's routing tags; a bad value is logged and means ``off`` (the challenger never
    gets traffic by accident)."""
    try:
        return registry.routing(model_name)
    except ValueError as e:
        log.error("routing tags of %s ignored (challenger gets no traffic): %s", model_name, e)
        return Routing()


@dataclass
class ModelWatcher:
    """One poll of the registry turned into a serving manifest; refused versions are remembered
    so they are not retried until their alias moves to another version."""

    loader: ModelLoader
    registry: MlflowRegistry
    metrics: ServerMetrics
    manifest_path: Path
    generation: int = 0
    current: dict[str, Variant | None] = field(default_factory=dict)
    routing: Routing = field(default_factory=Routing)
    refused: dict[str, str] = field(default_factory=dict)
    """alias -> version refused last."""

    def poll(self) -> bool:
        """Check the registry once; returns True when a new manifest was published."""
        name = self.loader.model_name
        try:
            routing = read_routing(self.registry, name)
        except (RegistryError, ModelNotReady) as e:
            log.warning("registry not reachable, serving what is loaded: %s", e)
            return False
        champion = self._gated(CHAMPION, required=True)
        challenger = self._gated(CHALLENGER, required=False) if routing.mode != "off" else None
        wanted = {CHAMPION: champion, CHALLENGER: challenger}
        if wanted == self.current and routing == self.routing:
            return False
        self.current, self.routing = wanted, routing
        self.generation += 1
        ServingManifest(name, self.generation, champion, challenger, routing).write(
            self.manifest_path
        )
        log.info(
            "serving manifest %d: champion %s, challenger %s, routing %s share %.3f",
            self.generation,
            f"v{champion.version}" if champion else "none",
            f"v{challenger.version}" if challenger else "none",
            routing.mode,
            routing.challenger_share,
        )
        return True

    def _gated(self, alias: str, *, required: bool) -> Variant | None:
        """The variant to serve for ``alias``: the new version if it passed every gate, else the
        one already serving."""
        serving = self.current.get(alias)
        try:
            version, bundle_dir = self.loader.fetch(alias)
        except ModelNotReady as e:
            if required:
                self.metrics.model_loads.labels("unavailable").inc()
                log.warning("no %s: %s", alias, e)
                return serving  # a champion alias removed by mistake does not stop serving
            return None  # no challenger alias: no challenger
        except RegistryError as e:
            self.metrics.model_loads.labels("unavailable").inc()
            log.warning("registry error on %s, serving what is loaded: %s", alias, e)
            return serving
        if serving is not None and serving.version == version.version:
            return serving
        if self.refused.get(alias) == version.version:
            return serving
        try:
            model = self.loader.load_bundle(
                bundle_dir, ModelRef(self.loader.model_name, version.version, alias)
            )
        except ModelRejectedError as e:
            self.refused[alias] = version.version
            self.metrics.model_loads.labels("rejected").inc()
            keeping = f"v{serving.version} keeps serving" if serving else "nothing to serve"
            log.error(
                "model refused: %s v%s (%s): %s; %s", alias, version.version, alias, e, keeping
            )
            return serving
        model.runtime.unload()  # gated here; the workers load their own copy from the cache
        self.metrics.model_loads.labels("loaded").inc()
        self.metrics.compile_seconds.set(model.runtime.compile_seconds)
        return Variant(version.version, str(bundle_dir))


class ControlProcess:
    def __init__(self, settings: ServerSettings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.manifest_path = run_dir / "manifest.json"
        self.metrics = ServerMetrics()
        self.registry = MlflowRegistry(settings.tracking_uri())
        self.watcher = ModelWatcher(
            ModelLoader(
                self.registry,
                model_name=settings.model_name,
                state_dir=settings.state_dir,
                parity_tolerance=settings.parity_tolerance,
                parallel_units=settings.compile_parallel_units,
                reason_codes=settings.reason_codes,
                additivity_tolerance=settings.additivity_tolerance,
            ),
            self.registry,
            self.metrics,
            self.manifest_path,
        )
        self._stop = threading.Event()
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._port_guard: socket.socket | None = None
        self.grpc_port = 0

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.grpc_port = self._reserve_port()
        metrics_port = serve_multiprocess(self.settings.host, self.settings.metrics_port)
        for index in range(self.settings.workers):
            self._spawn(index)
        log.info(
            "serving gRPC on %s:%d with %d worker process(es), metrics on http://%s:%d/metrics "
            "(health NOT_SERVING until a model is loaded)",
            self.settings.host,
            self.grpc_port,
            self.settings.workers,
            self.settings.host,
            metrics_port,
        )
        watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        watcher.start()
        self._supervise()
        log.info("signal received: draining")
        self._stop_workers()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _reserve_port(self) -> int:
        """Find the port and hold it for the workers. A plain bind first, so a port another
        server already listens on fails here (with SO_REUSEPORT alone a second server would
        silently share it); then a bound, never listening, SO_REUSEPORT socket keeps it ours
        while workers start and restart (port 0 becomes one concrete port they all share)."""
        host, port = self.settings.host, self.settings.grpc_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((host, port))
                port = int(probe.getsockname()[1])
            guard = socket.socket(family, socket.SOCK_STREAM)
            guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            guard.bind((host, port))
        except OSError as e:
            raise SystemExit(f"cannot bind gRPC on {host}:{self.settings.grpc_port}: {e}") from e
        self._port_guard = guard
        return port

    def _spawn(self, index: int) -> None:
        env = {
            **os.environ,
            "ALTSCORE_WORKER_INDEX": str(index),
            "ALTSCORE_GRPC_PORT": str(self.grpc_port),
            "ALTSCORE_MANIFEST_PATH": str(self.manifest_path),
        }
        proc = subprocess.Popen([sys.executable, "-m", "scoring_server"], env=env)
        self._workers[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.watcher.poll()
            except Exception:  # the watcher must survive anything one poll hits
                log.exception("registry poll failed; retrying")
            self._stop.wait(self.settings.registry_poll_seconds)

    def _supervise(self) -> None:
        from prometheus_client import multiprocess

        while not self._stop.wait(0.5):
            for index, proc in list(self._workers.items()):
                code = proc.poll()
                if code is None or self._stop.is_set():
                    continue
                self.metrics.worker_restarts.inc()
                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                log.error("worker %d (pid %d) exited with %s; restarting", index, proc.pid, code)
                time.sleep(_RESTART_BACKOFF_SECONDS)
                self._spawn(index)

    def _stop_workers(self) -> None:
        for proc in self._workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 10.0
        for index, proc in self._workers.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killed", index, proc.pid)
                proc.kill()
                proc.wait()
        if self._port_guard is not None:
            self._port_guard.close()
