"""The archiver: moves prediction-log records from their source into the Parquet archive
(layout: :mod:`credit_core.archive`). ``python -m drift archive`` runs it; ``compare``,
``promote`` and ``outcomes`` run one local pass (through ``EvaluationLog``).

Delivery is at least once, and every write is idempotent:

- **Redis Streams** (:class:`StreamArchiver`): consumer group ``archiver`` (created at id 0 with
  ``MKSTREAM``), consumer ``<host>-<pid>``. Each round reads this consumer's pending entries
  first (id ``0``: what a crash left unacknowledged), then claims other consumers' entries idle
  longer than ``claim_idle_seconds`` (``XAUTOCLAIM``: a dead archiver's), then reads new ones
  (``>``). A batch is written to Parquet, made durable, and only then acknowledged (``XACK``).
- **Local segments** (:func:`archive_segments`): the byte offset archived in each segment file
  is kept in ``_state/segments.parquet`` in the archive (rewritten atomically after each batch).
  Only whole lines are archived; a torn tail waits until it is completed.

A crash between the Parquet write and the acknowledgement (or the state rewrite) means the batch
is archived again: to the same file name when it is the same id range, and where ranges differ,
readers keep one row per ``log_id``. A line that does not parse is not skipped silently: it is
written to ``rejected/<kind>/`` with its id and the reason, counted, logged, and acknowledged,
so one bad record never blocks the log.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl
from redis.exceptions import RedisError, ResponseError

from credit_core.archive import FIELD, LOG_ID, LogStream, ParquetArchive
from credit_core.evaluation import KINDS, EvaluationLogError, Kind, parse_lines

__all__ = [
    "GROUP",
    "PassStats",
    "StreamArchiver",
    "archive_segments",
    "default_consumer",
    "write_batch",
]

log = logging.getLogger(__name__)

GROUP: Final = "archiver"
STATE_FILE: Final = "_state/segments.parquet"
REJECTED_SCHEMA: Final = pl.Schema(
    {LOG_ID: pl.String, "reason": pl.String, "line": pl.String, "archived_at": pl.Float64}
)
# Days Polars and Python can name: years 1 to 9999 (unix seconds).
_MIN_TS: Final = -62_135_596_800.0
_MAX_TS: Final = 253_402_300_800.0

AfterWrite = Callable[[Kind, Sequence[str]], None]
"""Called with a batch's ids after its Parquet files are durable and before they are
acknowledged (or the local state moves on): where tests inject a crash."""


@dataclass
class PassStats:
    """What an archive pass did."""

    archived: int = 0
    """Records written to the archive."""
    rejected: int = 0
    """Lines written to ``rejected/`` (did not parse, or the entry had no record)."""
    files: int = 0
    """Parquet files written (parts and rejected files)."""

    def __iadd__(self, other: PassStats) -> PassStats:
        self.archived += other.archived
        self.rejected += other.rejected
        self.files += other.files
        return self


def default_consumer() -> str:
    """This process's consumer name: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _part_name(first: str, last: str) -> str:
    return f"part-{first}_{last}.parquet".replace(":", "@").replace("/", "_")


def write_batch(
    archive: ParquetArchive,
    kind: Kind,
    ids: Sequence[str],
    lines: Sequence[bytes | None],
    *,
    tokens: Sequence[str] | None = None,
) -> PassStats:
    """Archive one batch: ``lines[i]`` is the record with id ``ids[i]`` (None: the entry holds
    no record). Valid records go to their day's part file, named by the batch's id range
    within that day (``tokens``, when given, stand for the ids in file names); the rest to one
    rejected file. Returns what was written; every file is durable when it returns."""
    if len(ids) != len(lines) or not ids:
        raise ValueError("a batch needs as many ids as lines, and at least one")
    names = list(tokens) if tokens is not None else list(ids)
    present = [i for i, line in enumerate(lines) if line is not None]
    frame, bad = parse_lines([lines[i] for i in present], kind)  # type: ignore[misc]
    rejected: list[tuple[int, str]] = [
        (i, "the entry holds no record (no field 'r', or trimmed before it was archived)")
        for i, line in enumerate(lines)
        if line is None
    ]
    rejected += [(present[j], reason) for j, reason in bad]
    good = sorted(set(present) - {present[j] for j, _ in bad})
    frame = frame.with_columns(
        pl.Series(LOG_ID, [ids[i] for i in good], dtype=pl.String),
        pl.Series("_token", [names[i] for i in good], dtype=pl.String),
        pl.Series("_index", good, dtype=pl.Int64),
    )
    in_range = frame["ts"].is_between(_MIN_TS, _MAX_TS, closed="left")
    if not in_range.all():
        rejected += [
            (i, f"ts {ts!r} is outside the years 1-9999")
            for i, ts in frame.filter(~in_range).select("_index", "ts").iter_rows()
        ]
        frame = frame.filter(in_range)
    stats = PassStats()
    if frame.height:
        day = (
            pl.from_epoch((pl.col("ts") * 1_000_000).floor().cast(pl.Int64), time_unit="us")
            .dt.date()
            .cast(pl.String)
        )
        for (date,), part in (
            frame.with_columns(_date=day)
            .partition_by("_date", as_dict=True, maintain_order=True)
            .items()
        ):
            tokens_in = part["_token"]
            name = _part_name(str(tokens_in[0]), str(tokens_in[-1]))
            archive.write(f"{kind}/date={date}/{name}", part.drop("_date", "_token", "_index"))
            stats.files += 1
        stats.archived = frame.height
    if rejected:
        rejected.sort()
        archive.write(
            f"rejected/{kind}/{_part_name(names[0], names[-1])}",
            pl.DataFrame(
                {
                    LOG_ID: [ids[i] for i, _ in rejected],
                    "reason": [r for _, r in rejected],
                    "line": [
                        None if lines[i] is None else lines[i].decode(errors="backslashreplace")  # type: ignore[union-attr]
                        for i, _ in rejected
                    ],
                    "archived_at": [time.time()] * len(rejected),
                },
                schema=REJECTED_SCHEMA,
            ),
        )
        stats.files += 1
        stats.rejected = len(rejected)
        first_id, first_reason = ids[rejected[0][0]], rejected[0][1]
        log.warning(
            "archiver: %d %s line(s) rejected, kept in %s (first: %s: %s)",
            len(rejected),
            kind,
            archive.location(f"rejected/{kind}/"),
            first_id,
            first_reason,
        )
    return stats


# --- local segments ------------------------------------------------------------------------


def _load_state(archive: ParquetArchive) -> dict[str, int]:
    frame = archive.read_file(STATE_FILE)
    if frame is None:
        return {}
    return dict(zip(frame["segment"].to_list(), frame["offset"].to_list(), strict=True))


def _save_state(archive: ParquetArchive, state: dict[str, int]) -> None:
    names = sorted(state)
    archive.write(
        STATE_FILE,
        pl.DataFrame(
            {"segment": names, "offset": [state[n] for n in names]},
            schema={"segment": pl.String, "offset": pl.Int64},
        ),
    )


def archive_segments(
    directory: Path,
    archive: ParquetArchive,
    *,
    kinds: Sequence[Kind] = KINDS,
    batch_size: int = 50_000,
    after_write: AfterWrite | None = None,
) -> PassStats:
    """One pass over the segment files of ``directory``: archive every whole line past the
    offset recorded for its segment, in batches of at most ``batch_size`` lines, moving the
    offset after each batch is durable. A missing directory is an empty log."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    stats = PassStats()
    with archive.lock():
        state = _load_state(archive)
        before = dict(state)
        for kind in kinds:
            for path in sorted(directory.glob(f"{kind}-*.jsonl")):
                stats += _archive_segment(path, kind, archive, state, batch_size, after_write)
        gone = [
            name
            for name in state
            if name.startswith(tuple(f"{k}-" for k in kinds)) and not (directory / name).exists()
        ]
        for name in gone:  # removed by a retention job: nothing left to archive
            del state[name]
        if gone or state != before:
            _save_state(archive, state)
    return stats


def _archive_segment(
    path: Path,
    kind: Kind,
    archive: ParquetArchive,
    state: dict[str, int],
    batch_size: int,
    after_write: AfterWrite | None,
) -> PassStats:
    stats = PassStats()
    offset = state.get(path.name, 0)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                log.warning(
                    "archiver: %s is shorter (%d bytes) than what was archived of it (%d): "
                    "a segment is append-only, so it is left alone",
                    path,
                    size,
                    offset,
                )
                return stats
            f.seek(offset)
            data = f.read(size - offset)
    except FileNotFoundError:  # removed by a retention job since the listing
        return stats
    end = data.rfind(b"\n") + 1  # the rest is a line being written, or a torn tail
    ids: list[str] = []
    tokens: list[str] = []
    lines: list[bytes | None] = []
    position = offset
    for line in data[:end].split(b"\n")[:-1]:
        ids.append(f"{path.name}:{position}")
        tokens.append(f"{path.stem}@{position:015d}")  # zero-padded: names sort in log order
        lines.append(line)
        position += len(line) + 1
        if len(lines) == batch_size:
            stats += _commit_segment_batch(
                archive, kind, path, ids, tokens, lines, position, state, after_write
            )
            ids, tokens, lines = [], [], []
    if lines:
        stats += _commit_segment_batch(
            archive, kind, path, ids, tokens, lines, position, state, after_write
        )
    return stats


def _commit_segment_batch(
    archive: ParquetArchive,
    kind: Kind,
    path: Path,
    ids: list[str],
    tokens: list[str],
    lines: list[bytes | None],
    end: int,
    state: dict[str, int],
    after_write: AfterWrite | None,
) -> PassStats:
    stats = write_batch(archive, kind, ids, lines, tokens=tokens)
    if after_write is not None:
        after_write(kind, ids)
    state[path.name] = end
    _save_state(archive, state)
    return stats


# --- Redis Streams -------------------------------------------------------------------------


class StreamArchiver:
    """Drains the prediction-log streams into the archive (see the module docstring)."""

    def __init__(
        self,
        stream: LogStream,
        archive: ParquetArchive,
        *,
        consumer: str | None = None,
        batch_size: int = 1000,
        claim_idle_seconds: float = 60.0,
        after_write: AfterWrite | None = None,
    ) -> None:
        if batch_size < 1 or claim_idle_seconds < 0:
            raise ValueError("batch_size must be positive, claim_idle_seconds not negative")
        self.stream = stream
        self.archive = archive
        self.consumer = consumer or default_consumer()
        self.batch_size = batch_size
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.after_write = after_write
        self._groups: set[str] = set()

    def _ensure_group(self, key: str) -> None:
        if key in self._groups:
            return
        try:
            self.stream.client().xgroup_create(key, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._groups.add(key)

    def drain(self, kind: Kind, *, stop: Callable[[], bool] = lambda: False) -> PassStats:
        """Archive what ``kind``'s stream holds for this consumer now: its pending entries,
        entries claimed from idle consumers, then new entries until none is left (or ``stop()``
        turns true; a batch under way is finished). Raises :class:`EvaluationLogError` when
        Redis fails (nothing unwritten is acknowledged)."""
        key = self.stream.key(kind)
        stats = PassStats()
        try:
            self._ensure_group(key)
            client = self.stream.client()
            while not stop():  # 1. this consumer's pending entries (left by a crash)
                entries = _entries(
                    client.xreadgroup(GROUP, self.consumer, {key: "0"}, count=self.batch_size)
                )
                if not entries:
                    break
                stats += self._commit(kind, key, entries)
            start: bytes | str = "0-0"
            while not stop():  # 2. entries of consumers idle for too long
                reply: Any = client.xautoclaim(
                    key,
                    GROUP,
                    self.consumer,
                    min_idle_time=self.claim_idle_ms,
                    start_id=start,
                    count=self.batch_size,
                )
                start, claimed = reply[0], reply[1]
                if claimed:
                    stats += self._commit(kind, key, claimed)
                if start in (b"0-0", "0-0"):
                    break
            while not stop():  # 3. new entries
                entries = _entries(
                    client.xreadgroup(GROUP, self.consumer, {key: ">"}, count=self.batch_size)
                )
                if not entries:
                    break
                stats += self._commit(kind, key, entries)
        except RedisError as e:
            raise EvaluationLogError(f"archiver: {key} at {self.stream.url}: {e}") from e
        return stats

    def drain_all(self, *, stop: Callable[[], bool] = lambda: False) -> PassStats:
        stats = PassStats()
        for kind in KINDS:
            stats += self.drain(kind, stop=stop)
        return stats

    def _commit(self, kind: Kind, key: str, entries: list[Any]) -> PassStats:
        ids = [_text(entry_id) for entry_id, _ in entries]
        lines: list[bytes | None] = [fields.get(FIELD) if fields else None for _, fields in entries]
        stats = write_batch(self.archive, kind, ids, lines)
        if self.after_write is not None:
            self.after_write(kind, ids)
        self.stream.client().xack(key, GROUP, *ids)
        return stats


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[Any]:
    """The entries of an ``XREADGROUP`` reply on one stream."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return list(next(iter(reply.values()))[0]) if reply else []
    return list(reply[0][1])
