"""``python -m drift archive [--once]``: move the prediction log into the Parquet archive.
``python -m drift run [--once]``: check the champion's closed windows for drift
(:mod:`drift.monitor`), serving gauges on ``ALTSCORE_DRIFT_METRICS_PORT``.

Both run until SIGTERM or SIGINT (the batch or window under way is finished, then they exit 0);
``--once`` does what there is now and exits. Exit codes: 0 done, 2 failed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from credit_core.errors import CreditError
from drift.archive import run
from drift.settings import DriftSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drift")
    sub = parser.add_subparsers(dest="command", required=True)
    arc = sub.add_parser("archive", help="move the prediction log into the Parquet archive")
    arc.add_argument("--once", action="store_true", help="archive what is there, then exit")
    mon = sub.add_parser("run", help="check the champion's closed windows for drift")
    mon.add_argument("--once", action="store_true", help="check the closed windows, then exit")
    ns = parser.parse_args(argv)
    settings = DriftSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("drift").info(
            "%s: finishing the batch under way", signal.Signals(signum).name
        )
        stop.set()

    if not ns.once:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    if ns.command == "run":
        return _monitor(settings, once=ns.once, stop=stop)
    try:
        stats = run(settings, once=ns.once, stop=stop)
    except (CreditError, OSError) as e:
        logging.getLogger("drift").error("archive failed: %s", e)
        return 2
    print(f"archived {stats.archived} rejected {stats.rejected} files {stats.files}")
    return 0


def _monitor(settings: DriftSettings, *, once: bool, stop: threading.Event) -> int:
    import json

    from prometheus_client import start_http_server

    from drift.monitor import DriftWorker

    log = logging.getLogger("drift")
    worker = DriftWorker(settings)
    if once:
        try:
            results = worker.run_once()
        except (CreditError, OSError, ValueError) as e:
            log.error("drift check failed: %s", e)
            return 2
        worker.reap(wait=True)
        for r in results:
            print(json.dumps({"window": r.index, "rows": r.rows, "drifted": r.drifted,
                              "estimated_auc": r.estimated_auc, "signal": r.signal}))  # fmt: skip
        return 0
    start_http_server(
        settings.drift_metrics_port, settings.drift_metrics_host, registry=worker.registry
    )
    log.info(
        "drift worker for %s: /metrics on %s:%d, every %.0f s",
        settings.model_name,
        settings.drift_metrics_host,
        settings.drift_metrics_port,
        settings.drift_interval_seconds,
    )
    while not stop.is_set():
        try:
            worker.run_once()
        except (CreditError, OSError, ValueError) as e:
            log.error("drift check failed, retrying: %s", e)
        worker.reap()
        stop.wait(settings.drift_interval_seconds)
    worker.reap(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
