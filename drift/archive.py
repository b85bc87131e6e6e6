"""The archiver's run loop: one source (Redis Streams or local segments) into the archive."""

from __future__ import annotations

import logging
import threading

from credit_core.archiver import PassStats, StreamArchiver, archive_segments
from credit_core.errors import CreditError
from drift.settings import DriftSettings

__all__ = ["run"]

log = logging.getLogger("drift.archive")


def run(settings: DriftSettings, *, once: bool, stop: threading.Event | None = None) -> PassStats:
    """Archive until ``stop`` is set (a batch under way is finished), or, with ``once``, until
    the source has nothing left. Errors of a round (Redis or the archive unreachable) are
    logged and the round is retried after ``archive_idle_seconds``; with ``once`` they raise."""
    stop = stop or threading.Event()
    archive = settings.archive()
    stream = settings.log_stream()
    total = PassStats()
    if stream is None:
        source = f"segments in {settings.evaluation_path()}"
        archiver = None
    else:
        archiver = StreamArchiver(
            stream,
            archive,
            consumer=settings.archive_consumer,
            batch_size=settings.archive_batch_size,
            claim_idle_seconds=settings.archive_claim_idle_seconds,
        )
        source = f"streams {stream.key('predictions')}, {stream.key('outcomes')} at {stream.url}"
        source += f" (group archiver, consumer {archiver.consumer})"
    log.info("archiving %s into %s", source, archive.url)
    try:
        while True:
            try:
                if archiver is None:
                    done = archive_segments(
                        settings.evaluation_path(), archive, batch_size=settings.archive_batch_size
                    )
                else:
                    done = archiver.drain_all(stop=stop.is_set)
            except (CreditError, OSError) as e:
                if once:
                    raise
                log.error(
                    "archive round failed, retrying in %.1f s: %s", settings.archive_idle_seconds, e
                )
                done = PassStats()
            total += done
            if done.archived or done.rejected:
                log.info(
                    "archived %d record(s), rejected %d, %d file(s)",
                    done.archived,
                    done.rejected,
                    done.files,
                )
            if once or stop.is_set():
                break
            if not (done.archived or done.rejected):
                stop.wait(settings.archive_idle_seconds)
                if stop.is_set():
                    break
    finally:
        if stream is not None:
            stream.close()
    return total
