"""``python -m scoring_server``: the composition root. Settings are built here, once."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from scoring_server.app import ScoringApp
from scoring_server.settings import ServerSettings


async def _run(settings: ServerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = ScoringApp(settings)
    await app.start()
    await stop.wait()
    logging.getLogger("scoring_server").info("signal received: draining")
    await app.stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    settings = ServerSettings()
    asyncio.run(_run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
