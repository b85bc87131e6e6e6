"""Where the shared prediction log lives: the Redis Streams the data plane appends to, and the
Parquet archive the archiver (:mod:`credit_core.archiver`, ``python -m drift archive``) drains
them into.

Streams: ``<prefix>:predictions`` and ``<prefix>:outcomes`` (default prefix ``altscore:log``).
Each entry has one field ``r``: one JSON line of the evaluation-log format
(:mod:`credit_core.evaluation`) without its newline, added with ``XADD key MAXLEN ~ N * r line``.

Archive layout (a local folder, or an object-store URL such as ``s3://bucket/prefix`` that
Polars reaches with ``storage_options``)::

    predictions/date=YYYY-MM-DD/part-<first id>_<last id>.parquet   one row per record
    outcomes/date=YYYY-MM-DD/part-<first id>_<last id>.parquet
    rejected/<kind>/part-<first id>_<last id>.parquet    lines that did not parse: log_id, reason
    _state/segments.parquet                              local source: bytes archived per segment

The day is the UTC day of the record's ``ts``. Every row carries ``log_id``, the record's id in
its source: the stream entry id, or ``<segment file name>:<byte offset of the line>``. The part
name comes from the id range, so a batch archived again (the archiver delivers at least once)
overwrites its own file; where batches overlap anyway, readers keep one row per ``log_id``.
A local folder is written atomically (temporary file, ``fsync``, rename, ``fsync`` of the
folder); an object store's PUT is atomic by itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import polars as pl

from credit_core.domain import LOG_STREAM_MAX_LEN, LOG_STREAM_PREFIX
from credit_core.evaluation import SCHEMAS, Kind, with_defaults

if TYPE_CHECKING:
    import redis

__all__ = ["DEFAULT_STREAM_PREFIX", "LOG_ID", "LogStream", "ParquetArchive"]

DEFAULT_STREAM_PREFIX: Final = LOG_STREAM_PREFIX
LOG_ID: Final = "log_id"
FIELD: Final = b"r"


class LogStream:
    """The Redis Streams of the shared prediction log. Records are added by the data plane's
    writer (``feature_kernels.LogWriter``, also behind
    :meth:`credit_core.evaluation.EvaluationLog.outcomes_writer`); redis-py here reads them."""

    def __init__(
        self, url: str, prefix: str = DEFAULT_STREAM_PREFIX, max_len: int = LOG_STREAM_MAX_LEN
    ) -> None:
        if not url:
            raise ValueError("a log stream needs a Redis URL")
        if max_len < 1:
            raise ValueError("max_len must be positive")
        self.url = url
        self.prefix = prefix
        self.max_len = max_len
        self._client: redis.Redis | None = None

    def key(self, kind: Kind) -> str:
        return f"{self.prefix}:{kind}"

    def client(self) -> redis.Redis:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.url, socket_timeout=10, socket_connect_timeout=5
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class ParquetArchive:
    """The Parquet archive at ``url``: a folder path, or an object-store URL (``s3://...``)
    reached through Polars with ``storage_options`` (endpoint, keys, region...)."""

    def __init__(self, url: str | Path, storage_options: Mapping[str, str] | None = None) -> None:
        text = str(url)
        if not text:
            raise ValueError("the archive needs a folder or a URL")
        self.remote = _is_remote(text)
        self.url = text.rstrip("/") if self.remote else text.removeprefix("file://")
        self.root = None if self.remote else Path(self.url)
        self.storage_options = dict(storage_options) if storage_options else None

    def __repr__(self) -> str:
        return f"ParquetArchive({self.url!r})"

    def location(self, relative: str) -> str:
        if self.root is not None:
            return str(self.root / relative)
        return f"{self.url}/{relative}"

    # --- writing -------------------------------------------------------------------------

    def write(self, relative: str, frame: pl.DataFrame) -> None:
        """Write ``frame`` at ``relative`` (replacing any file there), durably: a local file is
        written to a temporary name, synced and renamed, then its folder synced."""
        if self.root is None:
            # Object store: one PUT, visible whole or not at all, durable when it returns.
            frame.write_parquet(self.location(relative), storage_options=self.storage_options)
            return
        target = self.root / relative
        created = not target.parent.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            with tmp.open("wb") as f:
                frame.write_parquet(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        if created:
            _fsync_dir(target.parent.parent)

    def read_file(self, relative: str) -> pl.DataFrame | None:
        """The Parquet file at ``relative``, or None when there is none."""
        if self.root is not None:
            path = self.root / relative
            return pl.read_parquet(path) if path.is_file() else None
        try:
            return pl.read_parquet(self.location(relative), storage_options=self.storage_options)
        except FileNotFoundError:
            return None
        except OSError as e:  # object_store reports a missing object as "... not found ... 404"
            if "not found" in str(e).lower():
                return None
            raise

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the local-segment state for one pass (a lock file in a local
        archive; nothing on an object store, where two passes at once only repeat work)."""
        if self.root is None:
            yield
            return
        path = self.root / "_state" / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- reading -------------------------------------------------------------------------

    def files(self, kind: str) -> list[str] | str | None:
        """The part files of ``kind``: a sorted list for a folder (None when there are none),
        a glob for an object store."""
        if self.root is None:
            return f"{self.url}/{kind}/date=*/*.parquet"
        found = sorted(str(p) for p in (self.root / kind).glob("date=*/*.parquet"))
        return found or None

    def scan(self, kind: Kind) -> pl.LazyFrame | None:
        """Every archived record of ``kind`` with its ``log_id``, one row per ``log_id``,
        ordered by ``ts`` (ties: archive order). None when nothing is archived (folder)."""
        files = self.files(kind)
        if files is None:
            return None
        schema = pl.Schema([*SCHEMAS[kind].items(), (LOG_ID, pl.String())])
        return (
            pl.scan_parquet(
                files,
                hive_partitioning=False,
                schema=schema,
                missing_columns="insert",  # parts written before a field existed
                extra_columns="ignore",
                storage_options=self.storage_options,
            )
            .unique(LOG_ID, keep="first", maintain_order=True)
            .sort("ts", maintain_order=True)
        )

    def read(self, kind: Kind) -> pl.DataFrame:
        """Every archived record of ``kind`` in its schema (:data:`credit_core.evaluation.SCHEMAS`),
        deduplicated on ``log_id``, ordered by ``ts``."""
        schema = SCHEMAS[kind]
        lazy = self.scan(kind)
        if lazy is None:
            return pl.DataFrame(schema=schema)
        try:
            frame = lazy.collect()
        except (FileNotFoundError, pl.exceptions.ComputeError) as e:
            # An object store with no part yet: the glob expands to nothing.
            if self.remote and ("empty" in str(e) or isinstance(e, FileNotFoundError)):
                return pl.DataFrame(schema=schema)
            raise
        return with_defaults(frame.select(schema.names()), kind)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
