"""``python -m scoring_server``: the composition root. Settings are built here, once.

Without ``ALTSCORE_WORKER_INDEX`` this is the control process (registry watcher, worker
supervisor, /metrics); the control process starts each worker as ``python -m scoring_server``
with that variable set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from scoring_server.settings import ServerSettings


async def _run_worker(settings: ServerSettings) -> None:
    from scoring_server.app import ScoringApp

    if settings.manifest_path is None:
        raise SystemExit("a worker needs ALTSCORE_MANIFEST_PATH (set by the control process)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = ScoringApp(settings, settings.manifest_path)
    await app.start()
    await stop.wait()
    logging.getLogger("scoring_server").info("worker %d: draining", settings.worker_index)
    await app.stop()


def _prepare_run_dir(settings: ServerSettings) -> Path:
    """This server's scratch directory (manifest, metrics files), fresh for every start. Sets
    ``PROMETHEUS_MULTIPROC_DIR``, which must happen before ``prometheus_client`` is imported."""
    run_dir = (settings.state_dir / "run" / str(os.getpid())).resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "metrics").mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    return run_dir


def main() -> int:
    settings = ServerSettings()
    role = "control" if settings.worker_index is None else f"worker-{settings.worker_index}"
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {role}[{os.getpid()}] %(name)s %(message)s",
        stream=sys.stderr,
    )
    if settings.worker_index is not None:
        asyncio.run(_run_worker(settings))
        return 0
    run_dir = _prepare_run_dir(settings)  # before anything imports prometheus_client
    from scoring_server.control import ControlProcess

    return ControlProcess(settings, run_dir).run()


if __name__ == "__main__":
    sys.exit(main())
