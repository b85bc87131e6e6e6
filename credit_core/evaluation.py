"""The evaluation log: what each variant predicted, and the default outcomes observed later.

Files, all under one directory (default ``<state_dir>/evaluation/``: :func:`default_directory`)::

    predictions-<host>-<pid>-<start_ns>-<seq>.jsonl   one PredictionRecord a line (JSON)
    outcomes-<host>-<pid>-<start_ns>-<seq>.jsonl      one OutcomeRecord a line (JSON)

Several writers at once: every writer owns its segment files. The name carries the host, the
process id and the writer's start time, and a segment is created with ``O_EXCL``, so two writers
(two server processes, or two writers in one process) never share a file and need no lock between
them. A writer only appends, and starts the next segment (``seq`` + 1) once the current one holds
``max_segment_bytes``. The log is append-only: nothing here deletes or rewrites a segment.

Reading while writing: a writer appends whole lines, each ending in ``\\n``. A reader takes every
file up to its last ``\\n`` and ignores the rest, which is a line still being written or the torn
tail a crash left behind (a writer never appends to a segment after a failed write: it moves on
to a new one). A complete line that does not parse is corruption and raises
:class:`EvaluationLogError` naming the file and line.

The shared log and its archive: with ``ALTSCORE_LOG_REDIS_URL`` the data plane appends the same
lines to Redis Streams instead; ``python -m drift archive`` moves either source into a Parquet
archive (:mod:`credit_core.archive`, :mod:`credit_core.archiver`), which :class:`EvaluationLog`
reads when it is given one. Prediction lines written before ``score`` ... ``features`` existed
read with :data:`PREDICTION_DEFAULTS`.

Cost on the caller: the writer is the data plane's own (``feature_kernels.LogWriter``, Rust),
so the server and this module write the one format with one implementation.
:meth:`EvaluationWriter.write` encodes the records and appends them to an in-memory buffer (no
I/O); :meth:`EvaluationWriter.write_encoded` buffers lines already encoded in this format. A
background thread appends the buffer with plain blocking writes when ``flush_records`` records are
buffered or ``flush_seconds`` have passed since the oldest buffered record; the data goes to the
OS page cache (no ``fsync`` unless ``fsync=True``), so it survives a crash of the process but not
of the machine. :meth:`flush` and :meth:`close` do the same work on the caller's thread
(blocking). Records are lost only on a hard kill (up to one buffer), or when more than
``max_pending`` records wait because the disk keeps failing: those are dropped, counted in
``dropped`` and logged. ``close()`` writes everything buffered, or raises.

Matching outcomes to predictions (:func:`matched`):

1. Predictions: one per ``(model_name, request_id, variant)``; if a request id was logged twice
   for a variant (a client reusing an id), the latest prediction counts.
2. An outcome with a ``request_id`` matches every prediction of that request (both variants in
   shadow mode). It never falls back to its ``applicant_id``: an unknown request id matches
   nothing, so a wrong id cannot put a label on somebody else's prediction.
3. An outcome with only an ``applicant_id`` matches that applicant's latest request (the request
   whose latest prediction is the latest) at or before ``observed_at``, or the latest request
   overall when ``observed_at`` is not given; it matches every prediction of that request.
   Predictions logged with an empty applicant id are never matched this way.
4. When several outcomes reach the same request, an outcome given by request id wins over one
   given by applicant id; among equals the first reported (smallest ``ts``) stands, unless
   outcomes marked ``correction`` reached it: then the latest correction stands (its sender is
   in ``corrected_by``). A later report that is not a correction never changes an outcome
   (the server refuses one that contradicts, ``FAILED_PRECONDITION``; this rule covers what was
   written around that check: imported files, two servers racing).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import polars as pl

from credit_core.errors import CreditError
from feature_kernels import LogWriteError, LogWriter, outcome_line, prediction_line

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

    from credit_core.archive import LogStream, ParquetArchive

__all__ = [
    "KINDS",
    "MATCHED_SCHEMA",
    "OUTCOME_SCHEMA",
    "PREDICTION_DEFAULTS",
    "PREDICTION_SCHEMA",
    "SCHEMAS",
    "VARIANTS",
    "EvaluationLog",
    "EvaluationLogError",
    "EvaluationWriter",
    "OutcomeFileError",
    "OutcomeFileProblem",
    "OutcomeRecord",
    "PredictionRecord",
    "check_line",
    "default_directory",
    "describe_file_problem",
    "encode_line",
    "import_outcomes",
    "matched",
    "parse_lines",
    "read_outcome_file",
    "with_defaults",
]

log = logging.getLogger(__name__)

Variant = Literal["champion", "challenger"]
VARIANTS: Final = ("champion", "challenger")

_PREDICTION_FIELDS: dict[str, PolarsDataType] = {
    "ts": pl.Float64,
    "request_id": pl.String,
    "applicant_id": pl.String,
    "model_name": pl.String,
    "variant": pl.String,
    "model_version": pl.String,
    "predictor": pl.String,
    "pd": pl.Float64,
    "served": pl.Boolean,
    "score": pl.Int64,
    "decision": pl.String,
    "reasons": pl.List(pl.String),
    "degraded": pl.Boolean,
    "imputed": pl.List(pl.String),
    "features": pl.List(pl.Float64),
}
PREDICTION_SCHEMA: Final = pl.Schema(_PREDICTION_FIELDS)
PREDICTION_DEFAULTS: Final[dict[str, object]] = {
    "predictor": "",
    "score": 0,
    "decision": "",
    "reasons": [],
    "degraded": False,
    "imputed": [],
    "features": [],
}
"""Fields added after the first logs were written: a line without them reads with these."""
OUTCOME_SCHEMA: Final = pl.Schema(
    {
        "ts": pl.Float64,
        "request_id": pl.String,
        "applicant_id": pl.String,
        "defaulted": pl.Boolean,
        "observed_at": pl.Float64,
        "correction": pl.Boolean,
        "reporter": pl.String,
    }
)
_NULLABLE: Final = frozenset({"observed_at"})
_DEFAULTS: Final[dict[str, dict[str, object]]] = {
    "predictions": PREDICTION_DEFAULTS,
    "outcomes": {"correction": False, "reporter": ""},
}
Kind = Literal["predictions", "outcomes"]
KINDS: Final[tuple[Kind, ...]] = ("predictions", "outcomes")
SCHEMAS: Final[dict[str, pl.Schema]] = {
    "predictions": PREDICTION_SCHEMA,
    "outcomes": OUTCOME_SCHEMA,
}
MATCHED_SCHEMA: Final = pl.Schema(
    {
        "request_id": pl.String,
        "applicant_id": pl.String,
        "variant": pl.String,
        "model_name": pl.String,
        "model_version": pl.String,
        "pd": pl.Float64,
        "served": pl.Boolean,
        "ts": pl.Float64,
        "defaulted": pl.Boolean,
        "matched_by": pl.String,
        "corrected_by": pl.String,
    }
)


class EvaluationLogError(CreditError):
    """The evaluation log could not be written, or a segment holds a line that does not parse."""


def default_directory(state_dir: Path) -> Path:
    """Where servers and the training CLI keep the log unless told otherwise."""
    return state_dir / "evaluation"


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One variant's prediction for one request.

    ``served`` is True when this is the answer the caller got, False for a shadow prediction.
    ``ts`` is unix time in seconds. ``score`` and ``decision`` are what the policy made of ``pd``;
    ``reasons`` the reason codes (empty unless the request asked for an explanation);
    ``degraded`` is True when the answer was made without the feature store;
    ``imputed`` names the inputs the missing-value policy filled because the feature store
    lacked them; ``features`` is the model's input vector as served (after enrichment and the
    spec's transforms, in the model's feature order; NaN = missing, logged as ``null``; the data
    plane computes in ``f32`` and logs each value's shortest ``f32`` form); ``predictor`` the
    implementation that computed ``pd`` (``native`` | ``tl2cgen``; empty in lines written
    before it was logged). Lists are stored as tuples.
    """

    ts: float
    request_id: str
    applicant_id: str
    model_name: str
    variant: Variant
    model_version: str
    pd: float
    served: bool
    score: int = 0
    decision: str = ""
    reasons: tuple[str, ...] = ()
    degraded: bool = False
    imputed: tuple[str, ...] = ()
    features: tuple[float, ...] = ()
    predictor: str = "native"

    def __post_init__(self) -> None:
        if not _is_number(self.ts):
            raise ValueError(f"ts must be a finite unix time, got {self.ts!r}")
        for name in ("request_id", "model_name", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.applicant_id, str):
            raise ValueError(f"applicant_id must be a string, got {self.applicant_id!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not _is_number(self.pd) or not 0.0 <= self.pd <= 1.0:
            raise ValueError(f"pd must be a probability in [0, 1], got {self.pd!r}")
        for name in ("served", "degraded"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.score, int) or isinstance(self.score, bool):
            raise ValueError(f"score must be an int, got {self.score!r}")
        for name in ("decision", "predictor"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("reasons", "imputed"):
            value = getattr(self, name)
            if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        features = self.features
        if not isinstance(features, tuple | list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and not math.isinf(v)
            for v in features
        ):
            raise ValueError(f"features must be finite numbers or NaN (missing), got {features!r}")
        object.__setattr__(self, "features", tuple(float(v) for v in features))


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """An observed outcome: did the applicant default. At least one id is required; see the
    module docstring for how it is matched. ``ts`` (when reported) and ``observed_at`` (when the
    outcome was observed, optional) are unix times in seconds."""

    ts: float
    request_id: str
    applicant_id: str
    defaulted: bool
    observed_at: float | None = None
    correction: bool = False
    """It replaces the outcome recorded before for its request (see :func:`matched`)."""
    reporter: str = ""
    """Who reported it: the server's name of the caller, or the file it was imported from."""

    def __post_init__(self) -> None:
        if not _is_number(self.ts):
            raise ValueError(f"ts must be a finite unix time, got {self.ts!r}")
        if not isinstance(self.request_id, str) or not isinstance(self.applicant_id, str):
            raise ValueError("request_id and applicant_id must be strings")
        if not self.request_id and not self.applicant_id:
            raise ValueError("an outcome needs a request_id or an applicant_id")
        if not isinstance(self.defaulted, bool):
            raise ValueError(f"defaulted must be a bool, got {self.defaulted!r}")
        if self.observed_at is not None and not _is_number(self.observed_at):
            raise ValueError(f"observed_at must be a finite unix time, got {self.observed_at!r}")


R = TypeVar("R", PredictionRecord, OutcomeRecord)


def encode_line(record: PredictionRecord | OutcomeRecord) -> bytes:
    """One record's JSON line, as the data plane writes it (``json.dumps`` of the fields; a NaN
    feature is ``null``)."""
    if isinstance(record, PredictionRecord):
        r = record
        return prediction_line(
            r.ts, r.request_id, r.applicant_id, r.model_name, r.variant, r.model_version, r.pd,
            r.served, r.score, r.decision, list(r.reasons), r.degraded, list(r.imputed),
            list(r.features), r.predictor,
        )  # fmt: skip
    o = record
    return outcome_line(
        o.ts, o.request_id, o.applicant_id, o.defaulted, o.observed_at, o.correction, o.reporter
    )


class EvaluationWriter(Generic[R]):
    """Buffered appender of one record kind to this writer's own segment files in
    ``directory``, or (``stream`` = ``(redis_url, key, max_len)``) to the shared log's Redis
    Stream: the data plane's writer either way (one ``MULTI``/``EXEC`` of ``XADD`` commands per
    flush).

    Use it as a context manager or call :meth:`close`; see the module docstring for the costs.
    Thread-safe. Create it in the process that uses it (not before a fork).
    """

    def __init__(
        self,
        directory: Path,
        kind: str,
        record_type: type[R],
        *,
        flush_records: int = 512,
        flush_seconds: float = 1.0,
        max_segment_bytes: int = 64 << 20,
        max_pending: int = 200_000,
        fsync: bool = False,
        stream: tuple[str, str, int] | None = None,
    ) -> None:
        if flush_records < 1 or max_pending < flush_records:
            raise ValueError("need 1 <= flush_records <= max_pending")
        if not flush_seconds > 0 or max_segment_bytes < 1:
            raise ValueError("flush_seconds and max_segment_bytes must be positive")
        self.directory = directory
        self.kind = kind
        self._type: type[R] = record_type
        self._native = LogWriter(
            None if stream is not None else directory,
            kind,
            flush_records=flush_records,
            flush_seconds=flush_seconds,
            max_segment_bytes=max_segment_bytes,
            max_pending=max_pending,
            fsync=fsync,
            stream=stream,
        )

    @property
    def dropped(self) -> int:
        """Records dropped because ``max_pending`` were already waiting (the disk kept failing)."""
        return self._native.dropped

    @property
    def written(self) -> int:
        """Records appended to segment files so far."""
        return self._native.written

    @property
    def segment(self) -> Path | None:
        """The segment file being appended to (None before the first flush)."""
        segment = self._native.segment
        return None if segment is None else Path(segment)

    def write(self, records: Sequence[R]) -> None:
        """Buffer ``records``; cheap, no I/O. Those that do not fit under ``max_pending`` are
        dropped and counted. Raises ``TypeError`` for a wrong record type and
        :class:`EvaluationLogError` after ``close()``."""
        for r in records:
            if type(r) is not self._type:
                raise TypeError(f"{self.kind} writer takes {self._type.__name__}, got {r!r}")
        if records:
            self._write(b"".join(encode_line(r) for r in records), len(records), whole=False)

    def write_encoded(self, lines: bytes, count: int) -> None:
        """Buffer ``count`` records already encoded as this log's JSON lines. All or none of
        them: when they do not fit under ``max_pending`` they are dropped and counted."""
        if count != lines.count(b"\n") or (lines and not lines.endswith(b"\n")):
            raise ValueError(f"{self.kind} writer: expected {count} whole lines")
        if count:
            self._write(lines, count, whole=True)

    def _write(self, lines: bytes, count: int, *, whole: bool) -> None:
        try:
            self._native.write(lines, count, whole)
        except RuntimeError as e:
            raise EvaluationLogError(str(e)) from e

    def flush(self) -> None:
        """Append everything buffered now, on the caller's thread. Raises
        :class:`EvaluationLogError` when the file system fails; the records not written stay
        buffered (none is written twice)."""
        try:
            self._native.flush()
        except LogWriteError as e:
            raise EvaluationLogError(str(e.args[0])) from e

    def close(self) -> None:
        """Stop the background thread and write what is buffered. Idempotent."""
        try:
            self._native.close()
        except LogWriteError as e:
            raise EvaluationLogError(str(e.args[0])) from e

    def __enter__(self) -> EvaluationWriter[R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EvaluationLog:
    """The evaluation log: writers of segment files for servers, readers for ``compare``.

    Where the readers look:

    - ``archive`` None: straight at the segment files in ``directory`` (this machine's segments
      only; a complete line that does not parse raises :class:`EvaluationLogError`).
    - ``archive`` given, ``stream`` None: the local segments in ``directory`` are the source.
      Each read first runs one archive pass over them (the archiver's own code,
      :func:`credit_core.archiver.archive_segments`), then reads the Parquet archive, so what a
      server just wrote is seen. A line that does not parse goes to the archive's ``rejected/``.
    - ``archive`` and ``stream`` given: the Redis Streams are the source, drained into the
      archive by ``python -m drift archive``; reads see what it has archived, from every
      replica. :func:`import_outcomes` appends to the outcomes stream.

    Archive reads are deduplicated on ``log_id`` (the archiver delivers at least once).
    """

    def __init__(
        self,
        directory: Path,
        archive: ParquetArchive | None = None,
        *,
        stream: LogStream | None = None,
    ) -> None:
        if stream is not None and archive is None:
            raise ValueError("a stream-backed log is read from its archive: give the archive")
        self.directory = directory
        self.archive = archive
        self.stream = stream

    def predictions_writer(self, **options: Any) -> EvaluationWriter[PredictionRecord]:
        """A writer of predictions (to the stream when the log has one); ``options`` are
        :class:`EvaluationWriter`'s keywords."""
        return EvaluationWriter(
            self.directory, "predictions", PredictionRecord, stream=self._target("predictions"),
            **options,
        )  # fmt: skip

    def outcomes_writer(self, **options: Any) -> EvaluationWriter[OutcomeRecord]:
        """A writer of outcomes (to the stream when the log has one); ``options`` are
        :class:`EvaluationWriter`'s keywords."""
        return EvaluationWriter(
            self.directory, "outcomes", OutcomeRecord, stream=self._target("outcomes"), **options
        )

    def _target(self, kind: Kind) -> tuple[str, str, int] | None:
        s = self.stream
        return None if s is None else (s.url, s.key(kind), s.max_len)

    def read_predictions(self) -> pl.DataFrame:
        """Every prediction, ordered by ``ts`` (:data:`PREDICTION_SCHEMA`)."""
        return self._read("predictions")

    def read_outcomes(self) -> pl.DataFrame:
        """Every outcome, ordered by ``ts`` (:data:`OUTCOME_SCHEMA`)."""
        return self._read("outcomes")

    def segments(self, kind: Kind) -> list[Path]:
        return sorted(self.directory.glob(f"{kind}-*.jsonl"))

    def _read(self, kind: Kind) -> pl.DataFrame:
        if self.archive is None:
            return self._read_segments(kind)
        if self.stream is None:
            from credit_core.archiver import archive_segments

            archive_segments(self.directory, self.archive, kinds=(kind,))
        return self.archive.read(kind)

    def _read_segments(self, kind: Kind) -> pl.DataFrame:
        schema = SCHEMAS[kind]
        frames = []
        for path in self.segments(kind):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # removed by a retention job since the listing
                continue
            end = data.rfind(b"\n") + 1  # the rest is a line being written, or a torn tail
            if end:
                frames.append(_parse(path, data[:end], kind))
        if not frames:
            return pl.DataFrame(schema=schema)
        return pl.concat(frames).sort("ts", maintain_order=True)


def with_defaults(frame: pl.DataFrame, kind: Kind) -> pl.DataFrame:
    """``frame`` with the null cells of the fields added later (:data:`PREDICTION_DEFAULTS`)
    filled, in the schema's column order."""
    schema = SCHEMAS[kind]
    fills = [
        pl.col(name).fill_null(pl.lit(value, dtype=schema[name]))
        for name, value in _DEFAULTS[kind].items()
    ]
    return frame.with_columns(fills).select(schema.names()) if fills else frame


def _parse(path: Path, data: bytes, kind: Kind) -> pl.DataFrame:
    schema = SCHEMAS[kind]
    optional = _NULLABLE | _DEFAULTS[kind].keys()
    required = [c for c in schema.names() if c not in optional]
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=schema)
    except pl.exceptions.PolarsError as e:
        _locate(path, data, kind)
        raise EvaluationLogError(f"{path}: unreadable: {e}") from e
    if frame.select(pl.any_horizontal(pl.col(required).is_null()).any()).item():
        _locate(path, data, kind)
        raise EvaluationLogError(f"{path}: a line lacks a required field")
    return with_defaults(frame, kind)


def _json_ok(value: object, dtype: PolarsDataType) -> bool:
    if dtype == pl.Boolean:
        return isinstance(value, bool)
    if dtype == pl.String:
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if dtype == pl.Int64:
        return isinstance(value, int) and -(2**63) <= value < 2**63
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        return isinstance(value, list) and all(
            (v is None and inner == pl.Float64) or _json_ok(v, inner) for v in value
        )
    return isinstance(value, int | float) and math.isfinite(value)


def check_line(line: bytes, kind: Kind) -> str | None:
    """Why one log line is not a valid record of ``kind`` (None: it is): not JSON, not an
    object, or a field missing or of the wrong type. Fields added later may be absent."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    optional = _DEFAULTS[kind]
    for name, dtype in SCHEMAS[kind].items():
        value = obj.get(name)
        if value is None and (name in _NULLABLE or name in optional):
            continue
        if not _json_ok(value, dtype):
            return f"field {name!r} is {value!r}, expected {dtype}"
    return None


def parse_lines(lines: Sequence[bytes], kind: Kind) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """The valid lines of ``lines`` (each one JSON record, no newline) as a frame of ``kind``'s
    schema, defaults filled, in order; and ``(index, reason)`` of every invalid one."""
    good: list[bytes] = []
    bad: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        reason = check_line(line, kind)
        if reason is None:
            good.append(line)
        else:
            bad.append((i, reason))
    schema = SCHEMAS[kind]
    if not good:
        return pl.DataFrame(schema=schema), bad
    frame = pl.read_ndjson(io.BytesIO(b"\n".join(good)), schema=schema)
    return with_defaults(frame, kind), bad


def _locate(path: Path, data: bytes, kind: Kind) -> None:
    """Raise :class:`EvaluationLogError` naming the first bad line of ``data``."""
    for number, line in enumerate(data.splitlines(), start=1):
        reason = check_line(line, kind)
        if reason is not None:
            raise EvaluationLogError(f"{path}:{number}: {reason}")


def _standing(outcomes: pl.DataFrame, key: str, ts: str) -> pl.DataFrame:
    """The outcome that stands for each ``key``: its latest correction, else its first report
    (rule 4 of the module docstring); ``corrected_by`` names a correction's reporter."""
    correction = pl.col("correction").fill_null(False)
    return (
        outcomes.with_columns(
            _corr=correction,
            _order=pl.when(correction).then(-pl.col(ts)).otherwise(pl.col(ts)),
            corrected_by=pl.when(correction)
            .then(pl.col("reporter").fill_null(""))
            .otherwise(pl.lit("")),
        )
        .sort(["_corr", "_order"], descending=[True, False], maintain_order=True)
        .unique(key, keep="first", maintain_order=True)
        .drop("_corr", "_order")
    )


def matched(log: EvaluationLog, model_name: str | None = None) -> pl.DataFrame:
    """Predictions that have an outcome: one row per ``(request_id, variant)`` with ``pd``,
    ``served``, ``defaulted``, ``matched_by`` (``request_id`` | ``applicant_id``) and
    ``corrected_by`` (who sent the correction that stands; empty: the first report), by the rule
    in the module docstring. ``model_name`` keeps only that model's predictions."""
    preds = log.read_predictions().select(
        "request_id", "applicant_id", "variant", "model_name", "model_version", "pd", "served", "ts"
    )
    if model_name is not None:
        preds = preds.filter(pl.col("model_name") == model_name)
    key = ["model_name", "request_id", "variant"]
    preds = preds.unique(key, keep="last", maintain_order=True)
    outcomes = log.read_outcomes()

    by_request = _standing(outcomes.filter(pl.col("request_id") != ""), "request_id", "ts").select(
        "request_id", "defaulted", "corrected_by"
    )
    first = preds.join(by_request, on="request_id", how="inner").with_columns(
        matched_by=pl.lit("request_id")
    )

    requests = (
        preds.filter(pl.col("applicant_id") != "")
        .group_by("request_id")
        .agg(pl.col("applicant_id").first(), pl.col("ts").max())
        .sort("ts", "request_id")
    )
    by_applicant = (
        outcomes.filter((pl.col("request_id") == "") & (pl.col("applicant_id") != ""))
        .with_columns(
            outcome_ts=pl.col("ts"),
            at=pl.col("observed_at").fill_null(math.inf),
        )
        .sort("at")
        .join_asof(
            requests.rename({"ts": "request_ts"}),
            left_on="at",
            right_on="request_ts",
            by="applicant_id",
            strategy="backward",
            check_sortedness=False,  # sorted above; polars cannot check within ``by`` groups
        )
        .filter(pl.col("request_id_right").is_not_null())
        .join(by_request, left_on="request_id_right", right_on="request_id", how="anti")
    )
    by_applicant = _standing(by_applicant, "request_id_right", "outcome_ts").select(
        pl.col("request_id_right").alias("request_id"), "defaulted", "corrected_by"
    )
    second = preds.join(by_applicant, on="request_id", how="inner").with_columns(
        matched_by=pl.lit("applicant_id")
    )
    return (
        pl.concat([first, second])
        .select(MATCHED_SCHEMA.names())
        .cast(MATCHED_SCHEMA)
        .sort("ts", "request_id", "variant")
    )


@dataclass(frozen=True, slots=True)
class OutcomeFileProblem:
    """One problem in an outcome file. ``row`` counts data rows from 1 (0: the whole file);
    ``column`` is None when no single column is at fault."""

    row: int
    column: str | None
    message: str


class OutcomeFileError(ValueError):
    """An outcome file failed validation; nothing of it was recorded."""

    def __init__(self, path: Path, problems: Sequence[OutcomeFileProblem], *, csv: bool) -> None:
        self.path = path
        self.problems = list(problems)
        shown = [_describe(path, p, csv=csv) for p in self.problems[:20]]
        more = len(self.problems) - len(shown)
        text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(f"{len(self.problems)} problem(s) in {path}:\n  {text}")


def _describe(path: Path, p: OutcomeFileProblem, *, csv: bool) -> str:
    return describe_file_problem(path, p.row, p.column, p.message, csv=csv)


def describe_file_problem(
    path: Path, row: int, column: str | None, message: str, *, csv: bool
) -> str:
    """One problem of a data file, as every command reports it: ``path, row R (line L), column
    'c': message``. ``row``: the data row from 1 (0: the file as a whole); a CSV's line number
    counts its header."""
    where = [str(path)]
    if row:
        where.append(f"row {row}" + (f" (line {row + 1})" if csv else ""))
    if column is not None:
        where.append(f"column {column!r}")
    return f"{', '.join(where)}: {message}"


_TRUE: Final = frozenset({"1", "1.0", "true"})
_FALSE: Final = frozenset({"0", "0.0", "false"})
_ID_COLUMNS: Final = ("request_id", "applicant_id")


def _as_text(series: pl.Series) -> list[str | None]:
    """Column values as text: strings as they are, booleans ``true``/``false``, numbers in
    Python's notation, dates and datetimes as unix seconds."""
    if series.dtype == pl.Date:
        series = series.cast(pl.Datetime("ms"))
    if isinstance(series.dtype, pl.Datetime):
        tz = series.dtype.time_zone
        utc = series.dt.replace_time_zone("UTC") if tz is None else series
        return [None if v is None else repr(v / 1000) for v in utc.dt.epoch("ms").to_list()]
    if series.dtype == pl.Boolean:
        return [None if v is None else ("true" if v else "false") for v in series.to_list()]
    if series.dtype.is_numeric():
        return [None if v is None else repr(v) for v in series.to_list()]
    return series.cast(pl.String).to_list()


def _unix_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def read_outcome_file(path: Path, *, now: float | None = None) -> list[OutcomeRecord]:
    """Read and validate a labelled file (CSV, or Parquet by the ``.parquet`` suffix).

    Columns: ``request_id`` and/or ``applicant_id`` (each row needs one of them non-empty),
    ``defaulted`` (``0``/``1`` or ``true``/``false``, any case; Parquet booleans and integers
    too) and optionally ``observed_at`` (unix seconds, an ISO-8601 date or datetime, UTC when it
    has no zone; Parquet dates and datetimes too). Other columns are ignored. A request id may
    appear once. Every problem is collected and raised as one :class:`OutcomeFileError` naming
    file, row and column. ``now`` is the records' ``ts`` (default: the current time). The
    records are reported by ``file <name>`` and are not corrections: an outcome already recorded
    for a request stands (:func:`matched`).
    """
    is_csv = path.suffix.lower() != ".parquet"

    def fail(*problems: OutcomeFileProblem) -> OutcomeFileError:
        return OutcomeFileError(path, problems, csv=is_csv)

    if not path.is_file():
        raise fail(OutcomeFileProblem(0, None, "no such file"))
    try:
        if is_csv:
            frame = pl.read_csv(path, infer_schema=False, null_values=[""])
        else:
            frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        kind = "CSV" if is_csv else "Parquet"
        raise fail(OutcomeFileProblem(0, None, f"not a readable {kind} file: {e}")) from e
    ids = [c for c in _ID_COLUMNS if c in frame.columns]
    header: list[OutcomeFileProblem] = []
    if not ids:
        header.append(OutcomeFileProblem(0, None, "needs a request_id or applicant_id column"))
    if "defaulted" not in frame.columns:
        header.append(OutcomeFileProblem(0, "defaulted", "column is missing"))
    if header:
        raise fail(*header)
    if frame.height == 0:
        raise fail(OutcomeFileProblem(0, None, "has no rows"))

    columns: dict[str, list[str | None]] = {}
    problems: list[OutcomeFileProblem] = []
    for name in (*ids, "defaulted", "observed_at"):
        if name not in frame.columns:
            continue
        series = frame.get_column(name)
        if name in _ID_COLUMNS and not (
            series.dtype == pl.String or series.dtype.is_integer() or series.dtype == pl.Null
        ):
            problems.append(OutcomeFileProblem(0, name, f"ids must be text, not {series.dtype}"))
            continue
        columns[name] = _as_text(series)
    if problems:
        raise fail(*problems)

    ts = time.time() if now is None else now
    empty: list[str | None] = [None] * frame.height
    request_ids, applicant_ids = (
        columns.get("request_id", empty),
        columns.get("applicant_id", empty),
    )
    seen: dict[str, int] = {}
    records: list[OutcomeRecord] = []
    for i, (rid, aid, label, seen_at) in enumerate(
        zip(
            request_ids,
            applicant_ids,
            columns["defaulted"],
            columns.get("observed_at", empty),
            strict=True,
        ),
        start=1,
    ):
        rid, aid = (rid or "").strip(), (aid or "").strip()
        bad = len(problems)
        if not rid and not aid:
            problems.append(OutcomeFileProblem(i, "/".join(ids), "no request_id or applicant_id"))
        if rid:
            if rid in seen:
                problems.append(
                    OutcomeFileProblem(i, "request_id", f"{rid!r} already given in row {seen[rid]}")
                )
            else:
                seen[rid] = i
        token = (label or "").strip().lower()
        if token not in _TRUE and token not in _FALSE:
            problems.append(
                OutcomeFileProblem(i, "defaulted", f"{label!r} is not 0/1 or true/false")
            )
        observed: float | None = None
        if seen_at is not None and seen_at.strip():
            try:
                observed = _unix_time(seen_at.strip())
            except ValueError:
                problems.append(
                    OutcomeFileProblem(
                        i, "observed_at", f"{seen_at!r} is not unix seconds or an ISO-8601 date"
                    )
                )
        if len(problems) == bad:
            records.append(
                OutcomeRecord(ts, rid, aid, token in _TRUE, observed, reporter=f"file {path.name}")
            )
    if problems:
        raise fail(*problems)
    return records


def import_outcomes(log: EvaluationLog, path: Path) -> int:
    """Validate the labelled file at ``path`` (see :func:`read_outcome_file`) and, only when all
    of it is valid, record it in ``log``: in its outcomes stream when it has one (all or
    nothing), else in a segment file of its directory. Returns the number of outcomes recorded."""
    records = read_outcome_file(path)
    if log.stream is not None and len(records) > log.stream.max_len:
        raise EvaluationLogError(
            f"{len(records)} outcomes exceed the stream's cap of {log.stream.max_len}: "
            "they would trim each other before the archiver reads them"
        )
    with log.outcomes_writer(flush_records=len(records), max_pending=len(records)) as writer:
        writer.write(records)
    return len(records)
