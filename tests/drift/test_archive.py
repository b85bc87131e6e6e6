"""The prediction-log archiver against a real redis-server and real files: several writers'
records archived and read back, outcome matching across them, restart safety (a crash between
the Parquet write and the acknowledgement), incremental local archiving with torn tails,
rejected lines, day partitions, and the CLIs (``python -m drift archive``, ``training
outcomes`` into the stream)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pytest
import redis

from credit_core.archive import LogStream, ParquetArchive
from credit_core.archiver import GROUP, StreamArchiver, archive_segments
from credit_core.evaluation import (
    OUTCOME_SCHEMA,
    PREDICTION_SCHEMA,
    EvaluationLog,
    Kind,
    OutcomeRecord,
    PredictionRecord,
    encode_line,
    matched,
)
from tests.conftest import ROOT
from tests.minio_server import MinioServer
from tests.redis_server import RedisServer

DAY = 86_400.0
T0 = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC).timestamp()


class Crash(Exception):
    """Stands for the archiver dying between its Parquet write and its acknowledgement."""


def _pred(
    request_id: str,
    ts: float,
    *,
    applicant_id: str = "",
    variant: str = "champion",
    pd: float = 0.1,
    served: bool = True,
    **extra: object,
) -> PredictionRecord:
    return PredictionRecord(
        ts,
        request_id,
        applicant_id,
        "m",
        variant,
        "1",
        pd,
        served,
        **extra,  # type: ignore[arg-type]
    )


def _line(record: PredictionRecord | OutcomeRecord) -> bytes:
    return encode_line(record).rstrip(b"\n")


@pytest.fixture
def stream(redis_url: str) -> Iterator[LogStream]:
    s = LogStream(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:log")
    yield s
    s.close()


def _xadd(stream: LogStream, kind: Kind, lines: Sequence[bytes]) -> list[str]:
    """What one server's data plane does: XADD key MAXLEN ~ N * r <line>."""
    client = stream.client()
    return [
        client.xadd(stream.key(kind), {"r": line}, maxlen=stream.max_len, approximate=True).decode()
        for line in lines
    ]


def _pending(stream: LogStream, kind: Kind) -> int:
    return int(stream.client().xpending(stream.key(kind), GROUP)["pending"])


def _parts(archive: Path, kind: str) -> list[Path]:
    return sorted((archive / kind).glob("date=*/*.parquet"))


def _raw_rows(archive: Path, kind: str) -> int:
    """Rows in the part files, before the readers' deduplication."""
    return sum(pl.read_parquet(p).height for p in _parts(archive, kind))


def test_two_servers_records_are_archived_read_back_and_matched(
    stream: LogStream, tmp_path: Path
) -> None:
    # server A (host-a, pid 11) and server B (host-b, pid 22) share the stream; B explains
    a = [
        _pred(f"a{i}", T0 + i, applicant_id=f"app-a{i}", pd=0.01 * (i + 1), score=600 + i,
              decision="approve", features=(1.5, math.nan, 0.25))
        for i in range(30)
    ]  # fmt: skip
    b = [
        _pred(f"b{i}", T0 + i + 0.5, applicant_id=f"app-b{i}", pd=0.02 * (i + 1), score=500,
              decision="review", reasons=("R1", "R2"), degraded=i % 2 == 0, imputed=("x",))
        for i in range(30)
    ]  # fmt: skip
    for i in range(30):  # interleaved, as two replicas write
        _xadd(stream, "predictions", [_line(a[i]), _line(b[i])])
    # outcomes reported to either server: by request id, and by applicant id
    _xadd(stream, "outcomes", [_line(OutcomeRecord(T0 + DAY, "a3", "", True))])
    _xadd(stream, "outcomes", [_line(OutcomeRecord(T0 + DAY, "", "app-b4", False))])
    _xadd(stream, "outcomes", [_line(OutcomeRecord(T0 + DAY, "b7", "", True))])

    archive = ParquetArchive(tmp_path / "archive")
    archiver = StreamArchiver(stream, archive, consumer="arch-1", batch_size=7)
    stats = archiver.drain_all()
    assert (stats.archived, stats.rejected) == (63, 0)
    assert _pending(stream, "predictions") == 0  # everything acknowledged

    log = EvaluationLog(tmp_path / "unused", archive, stream=stream)
    got = log.read_predictions()
    assert got.schema == PREDICTION_SCHEMA
    assert sorted(got["request_id"]) == sorted([r.request_id for r in a + b])
    expected = pl.DataFrame(
        [{f: getattr(r, f) for f in r.__slots__} for r in sorted(a + b, key=lambda r: r.ts)],
        schema=PREDICTION_SCHEMA,
    ).with_columns(  # NaN is logged as null
        pl.col("features").list.eval(pl.element().fill_nan(None))
    )
    assert got.to_dicts() == expected.to_dicts()  # every field, bit-exact floats
    assert got.filter(pl.col("request_id") == "a0")["features"].to_list() == [[1.5, None, 0.25]]
    assert log.read_outcomes().schema == OUTCOME_SCHEMA

    m = matched(log, "m")
    assert sorted(m.select("request_id", "defaulted", "matched_by").rows()) == [
        ("a3", True, "request_id"),
        ("b4", False, "applicant_id"),
        ("b7", True, "request_id"),
    ]

    # nothing new: a second pass writes nothing; new entries go to new parts
    assert archiver.drain_all().archived == 0
    _xadd(stream, "predictions", [_line(_pred("late", T0 + 99))])
    assert archiver.drain_all().archived == 1
    assert "late" in log.read_predictions()["request_id"].to_list()


def test_crash_between_write_and_ack_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        stream = LogStream(server.url, prefix="altscore:log")
        lines = [_line(_pred(f"r{i:03d}", T0 + i)) for i in range(25)]
        _xadd(stream, "predictions", lines)
        archive = ParquetArchive(tmp_path / "archive")
        calls: list[int] = []

        def crash_on_second_batch(kind: Kind, ids: Sequence[str]) -> None:
            calls.append(len(ids))
            if len(calls) == 2:
                raise Crash

        first = StreamArchiver(
            stream, archive, consumer="dead", batch_size=10, after_write=crash_on_second_batch
        )
        with pytest.raises(Crash):
            first.drain("predictions")
        assert _pending(stream, "predictions") == 10  # written to Parquet, never acknowledged
        assert _raw_rows(archive.root, "predictions") == 20  # type: ignore[arg-type]

        # the same consumer restarts: its pending entries first, rewritten to the same file
        again = StreamArchiver(stream, archive, consumer="dead", batch_size=10)
        assert again.drain("predictions").archived == 15
        assert _pending(stream, "predictions") == 0
        assert _raw_rows(archive.root, "predictions") == 25  # type: ignore[arg-type]
        log = EvaluationLog(tmp_path / "unused", archive, stream=stream)
        assert log.read_predictions()["request_id"].to_list() == [f"r{i:03d}" for i in range(25)]

        # another consumer takes over a dead one's entries (XAUTOCLAIM), with other batches:
        # the parts overlap, and readers still return every record once
        more = [_line(_pred(f"s{i:03d}", T0 + 100 + i)) for i in range(12)]
        _xadd(stream, "predictions", more)
        dying = StreamArchiver(
            stream,
            archive,
            consumer="dying",
            batch_size=12,
            after_write=lambda kind, ids: (_ for _ in ()).throw(Crash()),
        )
        with pytest.raises(Crash):
            dying.drain("predictions")
        heir = StreamArchiver(stream, archive, consumer="heir", batch_size=5, claim_idle_seconds=0)
        assert heir.drain("predictions").archived == 12
        assert _pending(stream, "predictions") == 0
        assert _raw_rows(archive.root, "predictions") == 25 + 24  # type: ignore[arg-type]
        got = log.read_predictions()["request_id"].to_list()
        assert got == [f"r{i:03d}" for i in range(25)] + [f"s{i:03d}" for i in range(12)]

        # Redis itself restarts (empty: persistence is off): the group is created again
        server.restart()
        stream.close()
        _xadd(stream, "predictions", [_line(_pred("after-restart", T0 + 500))])
        fresh = StreamArchiver(stream, archive, consumer="heir", batch_size=5)
        assert fresh.drain("predictions").archived == 1
        assert log.read_predictions().height == 38
        stream.close()


def test_malformed_entries_are_rejected_and_do_not_block(stream: LogStream, tmp_path: Path) -> None:
    good = [_line(_pred(f"g{i}", T0 + i)) for i in range(3)]
    ids = _xadd(
        stream,
        "predictions",
        [good[0], b"{not json", good[1], b'{"ts":1.0,"request_id":"r9"}', good[2]],
    )
    stream.client().xadd(stream.key("predictions"), {"other": "field"})  # no field r
    _xadd(stream, "predictions", [_line(_pred("far", 1e13)).replace(b"1e13", b"1e300")])
    archive = ParquetArchive(tmp_path / "archive")
    stats = StreamArchiver(stream, archive, consumer="c", batch_size=100).drain("predictions")
    assert (stats.archived, stats.rejected) == (3, 4)
    assert _pending(stream, "predictions") == 0  # the bad ones are acknowledged too
    log = EvaluationLog(tmp_path / "unused", archive, stream=stream)
    assert log.read_predictions()["request_id"].to_list() == ["g0", "g1", "g2"]
    (rejected_file,) = (tmp_path / "archive" / "rejected" / "predictions").glob("*.parquet")
    rejected = pl.read_parquet(rejected_file)
    reasons = dict(zip(rejected["log_id"], rejected["reason"], strict=True))
    assert reasons[ids[1]].startswith("not JSON")
    assert reasons[ids[3]].startswith("field 'applicant_id'")
    assert len(reasons) == 4
    assert any("no record" in r for r in reasons.values())
    assert any("outside the years" in r for r in reasons.values())
    assert rejected.filter(pl.col("log_id") == ids[1])["line"].item() == "{not json"


def test_records_are_partitioned_by_utc_day(stream: LogStream, tmp_path: Path) -> None:
    midnight = dt.datetime(2024, 5, 2, tzinfo=dt.UTC).timestamp()
    times = [midnight - 0.001, midnight, midnight + DAY - 1, midnight + 3 * DAY, -0.5]
    _xadd(stream, "predictions", [_line(_pred(f"r{i}", t)) for i, t in enumerate(times)])
    _xadd(stream, "outcomes", [_line(OutcomeRecord(midnight, "r0", "", True))])
    archive = tmp_path / "archive"
    StreamArchiver(stream, ParquetArchive(archive), consumer="c").drain_all()
    by_day = {
        p.parent.name: sorted(pl.read_parquet(p)["request_id"])
        for p in _parts(archive, "predictions")
    }
    assert by_day == {
        "date=1969-12-31": ["r4"],
        "date=2024-05-01": ["r0"],
        "date=2024-05-02": ["r1", "r2"],
        "date=2024-05-05": ["r3"],
    }
    assert [p.parent.name for p in _parts(archive, "outcomes")] == ["date=2024-05-02"]
    part = pl.read_parquet(_parts(archive, "predictions")[1])
    assert part.columns == [*PREDICTION_SCHEMA.names(), "log_id"]


def _append(segment: Path, data: bytes) -> None:
    with segment.open("ab") as f:
        f.write(data)


def test_local_segments_are_archived_incrementally(tmp_path: Path) -> None:
    ev, archive_dir = tmp_path / "evaluation", tmp_path / "archive"
    archive = ParquetArchive(archive_dir)
    log = EvaluationLog(ev, archive)  # the laptop default: segments, archived on read
    with log.predictions_writer() as w:  # the data plane's own segment writer
        w.write([_pred(f"r{i}", T0 + i) for i in range(5)])
    (segment,) = log.segments("predictions")
    assert log.read_predictions()["request_id"].to_list() == [f"r{i}" for i in range(5)]
    assert _raw_rows(archive_dir, "predictions") == 5

    # more lines and a torn tail: only the whole new lines are archived
    whole = encode_line(_pred("r5", T0 + 5)) + encode_line(_pred("r6", T0 + 6))
    torn = encode_line(_pred("r7", T0 + 7))
    _append(segment, whole + torn[:20])
    stats = archive_segments(ev, archive)
    assert stats.archived == 2
    assert _raw_rows(archive_dir, "predictions") == 7  # nothing archived twice
    assert log.read_predictions()["request_id"].to_list() == [f"r{i}" for i in range(7)]

    _append(segment, torn[20:])  # the tail completed
    assert archive_segments(ev, archive).archived == 1
    assert archive_segments(ev, archive).archived == 0
    state = pl.read_parquet(archive_dir / "_state" / "segments.parquet")
    assert state.rows() == [(segment.name, segment.stat().st_size)]
    ids = sorted(pl.read_parquet(_parts(archive_dir, "predictions"))["log_id"])
    assert ids[0] == f"{segment.name}:0"
    assert len(ids) == 8

    # a bad line in a segment is rejected, the lines after it are archived
    _append(segment, b"garbage\n" + encode_line(_pred("r8", T0 + 8)))
    stats = archive_segments(ev, archive)
    assert (stats.archived, stats.rejected) == (1, 1)
    assert log.read_predictions()["request_id"].to_list()[-1] == "r8"

    # a crash after the Parquet write, before the state moved on: archived again, read once
    _append(segment, encode_line(_pred("r9", T0 + 9)))

    def crash(kind: Kind, ids: Sequence[str]) -> None:
        raise Crash

    with pytest.raises(Crash):
        archive_segments(ev, archive, after_write=crash)
    assert archive_segments(ev, archive).archived == 1
    assert log.read_predictions()["request_id"].to_list() == [f"r{i}" for i in range(10)]


def test_old_lines_without_the_new_fields_read_with_defaults(tmp_path: Path) -> None:
    ev = tmp_path / "evaluation"
    ev.mkdir()
    old = {"ts": T0, "request_id": "old", "applicant_id": "", "model_name": "m",
           "variant": "champion", "model_version": "1", "pd": 0.5, "served": True}  # fmt: skip
    (ev / "predictions-h-1-1-0.jsonl").write_text(json.dumps(old) + "\n")
    for log in (EvaluationLog(ev), EvaluationLog(ev, ParquetArchive(tmp_path / "archive"))):
        (row,) = log.read_predictions().to_dicts()
        assert row == {**old, "predictor": "", "score": 0, "decision": "", "reasons": [],
                       "degraded": False, "imputed": [], "features": []}  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTSCORE_")}
    return {**env, **extra}


def test_cli_archives_once_and_outcomes_go_to_the_stream(redis_url: str, tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:log"
    env = _env(
        ALTSCORE_STATE_DIR=str(tmp_path / "state"),
        ALTSCORE_LOG_REDIS_URL=redis_url,
        ALTSCORE_LOG_STREAM_PREFIX=prefix,
    )
    stream = LogStream(redis_url, prefix)
    _xadd(stream, "predictions", [_line(_pred(f"r{i}", T0 + i)) for i in range(4)])
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,defaulted\nr0,1\nr1,0\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,defaulted\nr2,maybe\n")
    run = [sys.executable, "-m", "training", "outcomes", "--file"]
    done = subprocess.run([*run, str(bad)], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 2
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(f"{prefix}:outcomes") == 0  # nothing of an invalid file
    done = subprocess.run([*run, str(labels)], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"recorded 2 outcomes from {labels} in {prefix}:outcomes" in done.stdout.decode()
    assert client.xlen(f"{prefix}:outcomes") == 2
    assert (tmp_path / "state" / "evaluation").exists() is False  # no local segment

    archive = [sys.executable, "-m", "drift", "archive", "--once"]
    done = subprocess.run(archive, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "archived 6 rejected 0" in done.stdout.decode()
    log = EvaluationLog(
        tmp_path / "unused", ParquetArchive(tmp_path / "state" / "archive"), stream=stream
    )
    assert sorted(matched(log)["request_id"]) == ["r0", "r1"]
    stream.close()


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    """The daemon on local segments: archives what appears, exits 0 on SIGTERM."""
    state = tmp_path / "state"
    ev = state / "evaluation"
    ev.mkdir(parents=True)
    segment = ev / "predictions-h-1-1-0.jsonl"
    segment.write_bytes(encode_line(_pred("r0", T0)))
    env = _env(ALTSCORE_STATE_DIR=str(state), ALTSCORE_ARCHIVE_IDLE_SECONDS="0.05")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drift", "archive"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        _append(segment, encode_line(_pred("r1", T0 + 1)))
        while _raw_rows(state / "archive", "predictions") < 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"archived 2 rejected 0" in out


def test_object_store_archive_on_a_real_minio(redis_url: str, tmp_path: Path) -> None:
    """The archive as ``s3://bucket/prefix`` on MinIO (what compose runs): empty reads, the
    daemon's CLI writing day parts there, a crash between the PUT and the acknowledgement
    rewriting the same object, and ``compare``'s reader and outcome matching over it."""
    with MinioServer(bucket="archive") as minio:
        url = "s3://archive/altscore/log"
        archive = ParquetArchive(url, minio.storage_options())
        assert archive.remote
        assert archive.read("predictions").is_empty()  # nothing archived yet: empty, no error
        # the drift worker's state file: absent, then written and read back
        assert archive.read_file("_state/drift-m.parquet") is None
        archive.write("_state/drift-m.parquet", pl.DataFrame({"window": [1]}))
        assert archive.read_file("_state/drift-m.parquet")["window"].to_list() == [1]  # type: ignore[index]

        stream = LogStream(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:log")
        _xadd(stream, "predictions", [_line(_pred(f"r{i}", T0 + i * DAY / 4)) for i in range(8)])
        _xadd(stream, "outcomes", [_line(OutcomeRecord(T0 + 9 * DAY, "r5", "", True))])
        # one batch PUT, then the archiver dies before XACK
        dying = StreamArchiver(
            stream, archive, consumer="dying", batch_size=8,
            after_write=lambda kind, ids: (_ for _ in ()).throw(Crash()),
        )  # fmt: skip
        with pytest.raises(Crash):
            dying.drain("predictions")
        written = minio.keys("altscore/log/predictions/")
        assert [k.split("/")[3] for k in written] == [
            "date=2024-05-01",
            "date=2024-05-02",
            "date=2024-05-03",
        ]

        env = _env(
            ALTSCORE_STATE_DIR=str(tmp_path / "state"),
            ALTSCORE_LOG_REDIS_URL=redis_url,
            ALTSCORE_LOG_STREAM_PREFIX=stream.prefix,
            ALTSCORE_ARCHIVE_URL=url,
            ALTSCORE_ARCHIVE_STORAGE_OPTIONS=json.dumps(minio.storage_options()),
            ALTSCORE_ARCHIVE_CONSUMER="dying",  # the same consumer restarts: pending first
        )
        done = subprocess.run(
            [sys.executable, "-m", "drift", "archive", "--once"],
            cwd=ROOT, env=env, capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "archived 9 rejected 0" in done.stdout.decode()
        assert _pending(stream, "predictions") == 0
        # the re-archived batch replaced the same objects: nothing doubled, even in raw parts
        assert minio.keys("altscore/log/predictions/") == written
        assert not (tmp_path / "state" / "archive").exists()  # nothing went to a local folder

        log = EvaluationLog(tmp_path / "unused", archive, stream=stream)
        assert log.read_predictions()["request_id"].to_list() == [f"r{i}" for i in range(8)]
        assert matched(log, "m").select("request_id", "defaulted").rows() == [("r5", True)]
        stream.close()
