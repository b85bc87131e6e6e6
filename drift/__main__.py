"""``python -m drift archive [--once]``: move the prediction log into the Parquet archive.

Runs until SIGTERM or SIGINT (the batch under way is finished, then it exits 0); ``--once``
archives what the source holds now and exits. Exit codes: 0 done, 2 failed.
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
    try:
        stats = run(settings, once=ns.once, stop=stop)
    except (CreditError, OSError) as e:
        logging.getLogger("drift").error("archive failed: %s", e)
        return 2
    print(f"archived {stats.archived} rejected {stats.rejected} files {stats.files}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
