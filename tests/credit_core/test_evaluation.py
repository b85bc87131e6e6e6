"""The evaluation log on real files: writers and readers (several processes at once, torn
lines, rotation, flush rules, a failing disk), the bulk outcome import and the matching rule."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from credit_core.evaluation import (
    OUTCOME_SCHEMA,
    PREDICTION_SCHEMA,
    EvaluationLog,
    EvaluationLogError,
    OutcomeFileError,
    OutcomeRecord,
    PredictionRecord,
    encode_line,
    import_outcomes,
    matched,
    read_outcome_file,
)
from tests.conftest import ROOT


def _pred(
    request_id: str,
    *,
    ts: float = 100.0,
    applicant_id: str = "",
    variant: str = "champion",
    pd: float = 0.1,
    served: bool = True,
    version: str = "1",
    model: str = "m",
) -> PredictionRecord:
    return PredictionRecord(ts, request_id, applicant_id, model, variant, version, pd, served)  # type: ignore[arg-type]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _lines(path: Path) -> int:
    return sum(1 for p in path.glob("*.jsonl") for _ in p.read_bytes().splitlines())


def test_round_trip_is_exact(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path / "ev")
    preds = [
        _pred("r1", ts=1.7e9 + 0.123456, applicant_id="a1", pd=0.1 + 0.2),
        _pred(
            "r1", ts=1.7e9 + 0.5, applicant_id="a1", variant="challenger", pd=1 / 3, served=False
        ),
        _pred("r2", ts=1.7e9 + 1, pd=0.0, version="12"),
        _pred("r3", ts=1.7e9 + 2, applicant_id="é ü", pd=1.0),
    ]
    outcomes = [
        OutcomeRecord(1.8e9, "r1", "", True),
        OutcomeRecord(1.8e9 + 1, "", "a1", False, observed_at=1.75e9),
    ]
    with log.predictions_writer() as w:
        w.write(preds)
    with log.outcomes_writer() as w:
        w.write(outcomes)
    got = log.read_predictions()
    assert got.schema == PREDICTION_SCHEMA
    expected = pl.DataFrame(
        [{f: getattr(r, f) for f in r.__slots__} for r in preds], schema=PREDICTION_SCHEMA
    )
    assert_frame_equal(got, expected)
    assert got["pd"].to_list() == [0.1 + 0.2, 1 / 3, 0.0, 1.0]  # bit-exact floats
    out = log.read_outcomes()
    assert out.schema == OUTCOME_SCHEMA
    assert out.rows() == [
        (1.8e9, "r1", "", True, None, False, ""),
        (1.8e9 + 1, "", "a1", False, 1.75e9, False, ""),
    ]


def test_empty_or_missing_log_reads_as_typed_empty_frames(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path / "never-written")
    assert log.read_predictions().schema == PREDICTION_SCHEMA
    assert log.read_predictions().height == 0
    assert log.read_outcomes().schema == OUTCOME_SCHEMA
    m = matched(log)
    assert m.height == 0
    assert {"request_id", "variant", "pd", "served", "defaulted"} <= set(m.columns)


def test_records_are_validated() -> None:
    with pytest.raises(ValueError, match="request_id or an applicant_id"):
        OutcomeRecord(1.0, "", "", True)
    with pytest.raises(ValueError, match="defaulted must be a bool"):
        OutcomeRecord(1.0, "r", "", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="observed_at"):
        OutcomeRecord(1.0, "r", "", True, observed_at=float("nan"))
    with pytest.raises(ValueError, match="variant"):
        _pred("r", variant="shadow")
    with pytest.raises(ValueError, match="pd must be"):
        _pred("r", pd=1.5)
    with pytest.raises(ValueError, match="pd must be"):
        _pred("r", pd=float("nan"))
    with pytest.raises(ValueError, match="request_id must be"):
        _pred("")
    with pytest.raises(ValueError, match="ts must be"):
        _pred("r", ts=float("inf"))


def test_writer_rejects_wrong_records_and_writes_after_close(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path)
    w = log.predictions_writer()
    with pytest.raises(TypeError, match="PredictionRecord"):
        w.write([OutcomeRecord(1.0, "r", "", True)])  # type: ignore[list-item]
    w.write([_pred("r1")])
    w.close()
    w.close()  # idempotent
    with pytest.raises(EvaluationLogError, match="closed"):
        w.write([_pred("r2")])
    assert log.read_predictions()["request_id"].to_list() == ["r1"]


def test_flush_by_count_by_time_and_on_close(tmp_path: Path) -> None:
    by_count = tmp_path / "count"
    w = EvaluationLog(by_count).predictions_writer(flush_records=5, flush_seconds=3600)
    w.write([_pred(f"c{i}") for i in range(4)])
    time.sleep(0.2)
    assert _lines(by_count) == 0  # below the count, long before the deadline: still buffered
    w.write([_pred("c4")])
    _wait_for(lambda: _lines(by_count) == 5)  # the background thread flushed
    w.write([_pred("c5"), _pred("c6")])
    w.close()
    assert _lines(by_count) == 7

    by_time = tmp_path / "time"
    t = EvaluationLog(by_time).outcomes_writer(flush_records=1000, flush_seconds=0.2)
    t0 = time.monotonic()
    t.write([OutcomeRecord(1.0, "r1", "", True)])
    _wait_for(lambda: _lines(by_time) == 1)
    assert time.monotonic() - t0 >= 0.15
    t.close()
    assert t.written == 1


def test_segments_rotate_by_size(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path)
    with log.predictions_writer(max_segment_bytes=600) as w:
        for i in range(0, 60, 5):
            w.write([_pred(f"r{j:03d}", ts=float(j)) for j in range(i, i + 5)])
            w.flush()  # a batch goes to one segment; the next batch starts a new one when full
    segments = log.segments("predictions")
    assert len(segments) >= 5
    assert all(s.stat().st_size < 600 + 5 * 200 for s in segments)
    assert log.read_predictions()["request_id"].to_list() == [f"r{i:03d}" for i in range(60)]


def test_torn_last_line_is_ignored_and_corruption_is_located(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path)
    with log.predictions_writer() as w:
        w.write([_pred("r1"), _pred("r2"), _pred("r3")])
    (segment,) = log.segments("predictions")
    whole = segment.read_bytes()
    with segment.open("ab") as f:  # a writer caught mid-line (or a crash)
        f.write(whole.splitlines(keepends=True)[0][:-9])
    assert log.read_predictions()["request_id"].to_list() == ["r1", "r2", "r3"]
    with segment.open("ab") as f:  # a complete line without its newline is not complete yet
        f.write(b"\n" + whole.splitlines()[0])
    with pytest.raises(EvaluationLogError, match=rf"{segment.name}:4: not JSON"):
        log.read_predictions()
    segment.write_bytes(whole + b'{"ts":1.0,"request_id":"r9"}\n')
    with pytest.raises(EvaluationLogError, match=rf"{segment.name}:4: field 'applicant_id'"):
        log.read_predictions()


def test_reader_sees_a_prefix_while_a_writer_appends(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path)
    seen = []
    with log.predictions_writer(flush_records=7, flush_seconds=0.01) as w:
        for i in range(400):
            w.write([_pred(f"r{i:04d}", ts=float(i))])
            if i % 25 == 0:
                seen.append(log.read_predictions()["request_id"].to_list())
    final = log.read_predictions()["request_id"].to_list()
    assert final == [f"r{i:04d}" for i in range(400)]
    assert all(s == final[: len(s)] for s in seen)  # every read was a clean prefix


def test_failing_directory_keeps_records_then_recovers(tmp_path: Path) -> None:
    blocked = tmp_path / "ev"
    blocked.write_text("a file where the log directory should be")
    w = EvaluationLog(blocked).predictions_writer(flush_records=1000, max_pending=1000)
    w.write([_pred(f"r{i}") for i in range(10)])
    with pytest.raises(EvaluationLogError, match="after 0 of 10 records"):
        w.flush()
    w.write([_pred(f"x{i}") for i in range(995)])  # 1005 > max_pending: 5 dropped, counted
    assert w.dropped == 5
    blocked.unlink()
    w.close()
    got = EvaluationLog(blocked).read_predictions()["request_id"].to_list()
    assert got == [f"r{i}" for i in range(10)] + [f"x{i}" for i in range(990)]
    assert w.written == 1000


_WRITER_SCRIPT = """
import sys, time
from pathlib import Path
from credit_core.evaluation import EvaluationLog, PredictionRecord

directory, worker, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
with EvaluationLog(directory).predictions_writer(flush_records=50, max_segment_bytes=16_384) as w:
    for i in range(n):
        if i % 50 == 0:
            time.sleep(0.01)  # keep writing long enough for the reader to meet partial files
        w.write([PredictionRecord(time.time(), f"w{worker}-{i:05d}", f"a{i}", "m", "champion",
                                  "1", i / n, True)])
"""


def test_several_processes_write_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "ev"
    workers, n = 3, 3000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, str(directory), str(k), str(n)], cwd=ROOT
        )
        for k in range(workers)
    ]
    reads = []
    while any(p.poll() is None for p in procs):
        reads.append(EvaluationLog(directory).read_predictions().height)  # never an error
        time.sleep(0.01)
    assert [p.returncode for p in procs] == [0] * workers
    assert reads == sorted(reads)
    assert any(0 < r < workers * n for r in reads)  # read while being written
    got = EvaluationLog(directory).read_predictions()
    assert got.height == workers * n
    assert sorted(got["request_id"].to_list()) == sorted(
        f"w{k}-{i:05d}" for k in range(workers) for i in range(n)
    )
    segments = EvaluationLog(directory).segments("predictions")
    assert {int(s.name.split("-")[2]) for s in segments} == {p.pid for p in procs}
    assert len(segments) > workers  # rotated by size


# --- bulk import -------------------------------------------------------------------------


def test_import_csv_and_parquet(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path / "ev")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "request_id,applicant_id,defaulted,observed_at,note\n"
        "r1,,1,,x\n"
        "r2,a2,false,,\n"
        ",a3,TRUE,2024-03-01,\n"
        ",a4, 0 ,1700000000.5,\n"
    )
    assert import_outcomes(log, csv) == 4
    out = log.read_outcomes()
    assert out.select("request_id", "applicant_id", "defaulted", "observed_at").rows() == [
        ("r1", "", True, None),
        ("r2", "a2", False, None),
        ("", "a3", True, dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()),
        ("", "a4", False, 1700000000.5),
    ]
    parquet = tmp_path / "labels.parquet"
    pl.DataFrame(
        {
            "applicant_id": ["b1", "b2"],
            "defaulted": [True, False],
            "observed_at": [dt.datetime(2024, 1, 2, 3, 4, 5), None],
        }
    ).write_parquet(parquet)
    assert import_outcomes(log, parquet) == 2
    tail = log.read_outcomes().filter(pl.col("applicant_id").is_in(["b1", "b2"]))
    assert tail.select("applicant_id", "defaulted", "observed_at").rows() == [
        ("b1", True, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()),
        ("b2", False, None),
    ]
    ints = tmp_path / "ints.parquet"
    pl.DataFrame({"request_id": [7, 8], "defaulted": [0, 1]}).write_parquet(ints)
    records = read_outcome_file(ints, now=5.0)
    by = "file ints.parquet"
    assert records == [
        OutcomeRecord(5.0, "7", "", False, reporter=by),
        OutcomeRecord(5.0, "8", "", True, reporter=by),
    ]


def test_import_reports_every_bad_row_and_records_nothing(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path / "ev")
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "request_id,applicant_id,defaulted,observed_at\n"
        "r1,,1,\n"
        "r2,,yes,\n"
        ",,0,\n"
        "r4,,0,yesterday\n"
        "r1,,0,\n"
        ",a6,,\n"
    )
    with pytest.raises(OutcomeFileError) as info:
        import_outcomes(log, csv)
    got = [(p.row, p.column) for p in info.value.problems]
    assert got == [
        (2, "defaulted"),
        (3, "request_id/applicant_id"),
        (4, "observed_at"),
        (5, "request_id"),
        (6, "defaulted"),
    ]
    text = str(info.value)
    assert f"{csv}, row 2 (line 3), column 'defaulted': 'yes' is not 0/1 or true/false" in text
    assert "'r1' already given in row 1" in text
    assert "None is not 0/1" in text
    assert not (tmp_path / "ev").exists()  # validated before anything was written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("applicant,defaulted\nx,1\n", "needs a request_id or applicant_id column"),
        ("request_id,label\nr1,1\n", "column 'defaulted': column is missing"),
        ("request_id,defaulted\n", "has no rows"),
    ],
)
def test_import_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text(content)
    with pytest.raises(OutcomeFileError, match=message):
        import_outcomes(EvaluationLog(tmp_path / "ev"), csv)
    assert not (tmp_path / "ev").exists()


def test_import_rejects_unreadable_and_mistyped_files(tmp_path: Path) -> None:
    with pytest.raises(OutcomeFileError, match="no such file"):
        read_outcome_file(tmp_path / "missing.csv")
    garbage = tmp_path / "labels.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(OutcomeFileError, match="not a readable Parquet file"):
        read_outcome_file(garbage)
    floats = tmp_path / "floats.parquet"
    pl.DataFrame({"request_id": [1.5], "defaulted": [1]}).write_parquet(floats)
    with pytest.raises(OutcomeFileError, match="column 'request_id': ids must be text"):
        read_outcome_file(floats)


# --- matching ----------------------------------------------------------------------------


def _matching_log(tmp_path: Path) -> EvaluationLog:
    log = EvaluationLog(tmp_path)
    preds = [
        # shadow request: both variants, one outcome by request id
        _pred("r1", ts=100, applicant_id="a1", pd=0.11),
        _pred("r1", ts=100.001, applicant_id="a1", variant="challenger", pd=0.12, served=False),
        # applicant a2 applied three times; the outcome was observed at 250
        _pred("r2", ts=100, applicant_id="a2", pd=0.21),
        _pred("r3", ts=200, applicant_id="a2", pd=0.22),
        _pred("r3", ts=200.5, applicant_id="a2", variant="challenger", pd=0.23, served=False),
        _pred("r4", ts=300, applicant_id="a2", pd=0.24),
        # a3: no observed_at -> latest request overall
        _pred("r5", ts=100, applicant_id="a3", pd=0.31),
        _pred("r6", ts=200, applicant_id="a3", variant="challenger", pd=0.32),
        # a4: only a prediction after the observation -> nothing
        _pred("r7", ts=100, applicant_id="a4", pd=0.41),
        # a5: request-id outcome beats applicant outcome on the same request
        _pred("r8", ts=100, applicant_id="a5", pd=0.51),
        # a6: outcome with an unknown request id does not fall back to the applicant
        _pred("r9", ts=100, applicant_id="a6", pd=0.61),
        # r10: reported twice, the first stands; r13: corrected twice, the latest correction
        # stands; r12: logged twice, the latest prediction counts
        _pred("r10", ts=100, pd=0.71),
        _pred("r13", ts=100, pd=0.72),
        _pred("r12", ts=100, pd=0.80),
        _pred("r12", ts=150, pd=0.81),
        # another model's prediction for a matched request id
        _pred("r1", ts=100, applicant_id="a1", pd=0.99, model="other"),
        # an unmatched prediction
        _pred("r11", ts=100, applicant_id="", pd=0.9),
    ]
    outcomes = [
        OutcomeRecord(1000, "r1", "", True),
        OutcomeRecord(1000, "", "a2", False, observed_at=250),
        OutcomeRecord(1000, "", "a3", True),
        OutcomeRecord(1000, "", "a4", True, observed_at=50),
        OutcomeRecord(1000, "r8", "", True),
        OutcomeRecord(1001, "", "a5", False),
        OutcomeRecord(1000, "r-unknown", "a6", True),
        OutcomeRecord(1000, "r10", "", True),
        OutcomeRecord(1002, "r10", "", False),
        OutcomeRecord(1000, "r13", "", True),
        OutcomeRecord(1001, "r13", "", False, correction=True, reporter="certificate ops"),
        OutcomeRecord(1003, "r13", "", True, correction=True, reporter="token batch"),
        OutcomeRecord(1004, "r13", "", False),
        OutcomeRecord(1000, "r12", "", True),
    ]
    with log.predictions_writer() as w:
        w.write(preds)
    with log.outcomes_writer() as w:
        w.write(outcomes)
    return log


def test_matching_rules(tmp_path: Path) -> None:
    got = matched(_matching_log(tmp_path), model_name="m")
    rows = {
        (r["request_id"], r["variant"]): (r["pd"], r["served"], r["defaulted"], r["matched_by"])
        for r in got.iter_rows(named=True)
    }
    corrected = dict(
        got.filter(pl.col("corrected_by") != "").select("request_id", "corrected_by").rows()
    )
    assert corrected == {"r13": "token batch"}
    assert rows == {
        ("r1", "champion"): (0.11, True, True, "request_id"),
        ("r1", "challenger"): (0.12, False, True, "request_id"),
        ("r3", "champion"): (0.22, True, False, "applicant_id"),
        ("r3", "challenger"): (0.23, False, False, "applicant_id"),
        ("r6", "challenger"): (0.32, True, True, "applicant_id"),
        ("r8", "champion"): (0.51, True, True, "request_id"),
        ("r10", "champion"): (0.71, True, True, "request_id"),
        ("r13", "champion"): (0.72, True, True, "request_id"),
        ("r12", "champion"): (0.81, True, True, "request_id"),
    }
    assert got.height == len(rows)  # one row per (request, variant)


def test_matching_without_model_filter_keeps_every_model(tmp_path: Path) -> None:
    got = matched(_matching_log(tmp_path))
    r1 = got.filter(pl.col("request_id") == "r1").sort("model_name", "variant")
    assert r1.select("model_name", "variant", "pd").rows() == [
        ("m", "challenger", 0.12),
        ("m", "champion", 0.11),
        ("other", "champion", 0.99),
    ]


@given(
    # Every finite float, not only plausible times: the float formatter's exponent forms too.
    ts=st.floats(allow_nan=False, allow_infinity=False),
    ids=st.lists(st.text(min_size=1), min_size=3, max_size=3),
    applicant=st.text(),
    pd=st.floats(0, 1),
    served=st.booleans(),
    variant=st.sampled_from(["champion", "challenger"]),
)
def test_prediction_lines_are_what_json_dumps_writes(
    ts: float, ids: list[str], applicant: str, pd: float, served: bool, variant: str
) -> None:
    """The data plane's line encoder (read through the binding) equals json.dumps of the
    fields: the log is plain JSON lines any tool reads."""
    record = PredictionRecord(ts, ids[0], applicant, ids[1], variant, ids[2], pd, served)  # type: ignore[arg-type]
    fields = {
        name: list(value) if isinstance(value := getattr(record, name), tuple) else value
        for name in PREDICTION_SCHEMA.names()  # the line's field order
    }
    assert encode_line(record) == json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def test_encoded_lines_mix_with_records_and_survive_failures(tmp_path: Path) -> None:
    blocked = tmp_path / "ev"
    blocked.write_text("a file where the log directory should be")
    w = EvaluationLog(blocked).predictions_writer(
        flush_records=30, max_pending=30, flush_seconds=60
    )
    w.write([_pred("r0"), _pred("r1")])
    w.write_encoded(b"".join(encode_line(_pred(f"e{i}")) for i in range(3)), 3)
    w.write([_pred("r2")])
    with pytest.raises(ValueError, match="expected 2 whole lines"):
        w.write_encoded(encode_line(_pred("bad")), 2)
    with pytest.raises(ValueError, match="whole lines"):
        w.write_encoded(encode_line(_pred("torn"))[:-1], 0)
    with pytest.raises(EvaluationLogError, match="after 0 of 6 records"):
        w.flush()
    # 6 waiting + 25 encoded > 30: the block is dropped whole, and counted.
    w.write_encoded(b"".join(encode_line(_pred(f"x{i}")) for i in range(25)), 25)
    assert w.dropped == 25
    w.write_encoded(b"".join(encode_line(_pred(f"y{i}")) for i in range(24)), 24)
    assert w.dropped == 25
    blocked.unlink()
    w.close()
    got = EvaluationLog(blocked).read_predictions()["request_id"].to_list()
    assert got == ["r0", "r1", "e0", "e1", "e2", "r2"] + [f"y{i}" for i in range(24)]
    assert w.written == 30


def test_prediction_lines_carry_the_answer_and_the_served_features(tmp_path: Path) -> None:
    record = PredictionRecord(
        1.5, "r1", "a1", "m", "champion", "1", 0.25, True, score=612, decision="approve",
        reasons=["R1", 'R"2'], degraded=True, imputed=("x",), features=[1.5, float("nan"), 0.1],
        predictor="tl2cgen",
    )  # fmt: skip
    assert record.reasons == ("R1", 'R"2')  # lists are stored as tuples
    line = json.loads(encode_line(record))
    assert list(line) == PREDICTION_SCHEMA.names()
    assert line["features"] == [1.5, None, 0.1]  # NaN (missing) is null
    assert (line["score"], line["decision"], line["degraded"]) == (612, "approve", True)
    assert line["predictor"] == "tl2cgen"
    assert (line["reasons"], line["imputed"]) == (["R1", 'R"2'], ["x"])
    log = EvaluationLog(tmp_path)
    with log.predictions_writer() as w:
        w.write([record])
    (row,) = log.read_predictions().to_dicts()
    assert row["features"] == [1.5, None, 0.1]
    assert row["reasons"] == ["R1", 'R"2']
    for bad in ({"score": 1.5}, {"score": True}, {"reasons": ("ok", 3)}, {"imputed": "x"},
                {"degraded": 1}, {"features": (float("inf"),)}, {"decision": None},
                {"predictor": 1}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            PredictionRecord(1.0, "r", "", "m", "champion", "1", 0.5, True, **bad)  # type: ignore[arg-type]
