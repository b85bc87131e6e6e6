"""``python -m scoring_server``: the composition root. Settings are built here, once; the
control plane (Python) and the data plane (Rust, in the same process) start from them."""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

from feature_kernels import init_logging
from scoring_server.settings import ServerSettings


def _log_handler(log_format: str) -> logging.Handler:
    """stderr, as text or one JSON object per line with the data plane's keys (see
    ``feature_kernels/src/logger.rs``); fields given as ``extra=`` are added to the object."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"process": "control", "pid": os.getpid()},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s control[{os.getpid()}] %(name)s %(message)s"
            )
        )
    return handler


def token(argv: list[str]) -> int:
    """``python -m scoring_server token [--name NAME]``: a new bearer token for
    ``ReportOutcome``. The token goes to stdout (hand it to the caller); the line for
    ``ALTSCORE_OUTCOME_TOKENS_FILE`` (its SHA-256, never the token) goes to stderr."""
    import argparse
    import hashlib
    import secrets

    parser = argparse.ArgumentParser(
        prog="python -m scoring_server token", description=token.__doc__
    )
    parser.add_argument("--name", default="", help="who holds it (shown in the server's log)")
    args = parser.parse_args(argv)
    if "#" in args.name or "\n" in args.name:
        parser.error("--name may not contain '#' or a line break")
    value = secrets.token_urlsafe(32)
    digest = hashlib.sha256(value.encode()).hexdigest()
    print(value)
    print(f"{digest} {args.name}".rstrip(), file=sys.stderr)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["token"]:
        return token(sys.argv[2:])
    settings = ServerSettings()
    # The registry is polled every few seconds and a failed poll keeps the last good model:
    # MLflow's own HTTP retries (7, exponential backoff, 120 s timeouts) would hold the first
    # poll, the port and a SIGTERM for minutes while MLflow is away. Operators may override.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.basicConfig(
        level=settings.log_level.upper(), handlers=[_log_handler(settings.log_format)]
    )
    if settings.log_format == "json":
        # Every line one JSON object: MLflow's loggers (its own text handler by default) and
        # Python warnings go through the handler above too.
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        logging.captureWarnings(True)
    init_logging(settings.log_level, json=settings.log_format == "json")
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
