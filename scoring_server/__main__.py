"""``python -m scoring_server``: the composition root. Settings are built here, once; the
control plane (Python) and the data plane (Rust, in the same process) start from them."""

from __future__ import annotations

import logging
import os
import sys

from feature_kernels import init_logging
from scoring_server.settings import ServerSettings


def main() -> int:
    settings = ServerSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s control[{os.getpid()}] %(name)s %(message)s",
        stream=sys.stderr,
    )
    init_logging(settings.log_level)
    from scoring_server.control import ControlPlane

    return ControlPlane.create(settings).run()


if __name__ == "__main__":
    code = main()
    # The data plane has stopped and written its logs: leave now, without waiting for the
    # interpreter to tear down native threads (nothing is left to run).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
