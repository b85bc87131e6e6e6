"""The production scenarios against the transport floor, with ghz (and, for streams, a load
generator that keeps streams full), each beside a run of the floor with the same load.

The floor is ``altscore-floor`` (``crates/loadgen``): altscore's own ``Scoring`` service on tonic,
with its codec, answering fixed bytes and doing no work: what a Rust data plane cannot beat on
this machine. Every scenario runs at c=16 (16 connections) for ``duration`` seconds right after a
floor run with the same body, so each share of the floor is measured minutes apart at most.

Scenarios (GMSC model from the local registry, copied into its own store as champion v1 and a
challenger v2 with the same trees; SuperLender trained into its own store, its entity features
published to a real redis-server started here):

- direct unary: one applicant, the request's own features;
- ``explain=true`` unary: exact TreeSHAP and reason codes in every answer;
- split 10 %: the challenger answers the applicants whose id hashes below 0.1 (256 applicants);
- shadow: the challenger scores every request beside the champion, off the request path;
- Redis-enriched unary: SuperLender, entity features looked up by applicant id (one round trip);
- batch of 64 applicants per call;
- stream: one applicant per message, 16 streams each keeping 64 messages in flight;
- direct unary with the TL2cgen-compiled library as the predictor (the serving choice).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from benchmarks.grpc_load import ghz, ghz_body
from benchmarks.procs import free_port, rss_bytes
from credit_core import Routing
from credit_core.registry import MlflowRegistry, local_tracking_uri
from feature_kernels import load_spec
from scoring_server.grpc._proto import scoring_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ALTSCORE_DATA_DIR", ROOT.parent / "shared" / "data"))
GMSC_DATA = DATA / "give_me_some_credit" / "cs-training.csv"
SL_DATA = DATA / "zindi_superlender" / "trainperf.csv"
GMSC_SPEC = ROOT / "specs" / "gmsc.yaml"
SL_SPEC = ROOT / "specs" / "superlender.yaml"
GMSC_MODEL = "altscore-gmsc"
SL_MODEL = "altscore-superlender"
RELEASE = ROOT / "target" / "release"
CONCURRENCY = 16
STREAM_WINDOW = 64
REPEATS = 3
"""Floor and ours alternate this many times per scenario (the machine is shared and noisy)."""


@dataclass(frozen=True)
class Result:
    calls: float
    rows: float
    p50_ms: float
    p99_ms: float
    errors: int


def _share(ours: Result, floor: Result) -> float:
    return ours.calls / floor.calls if floor.calls else float("nan")


@dataclass(frozen=True)
class Row:
    """A scenario: ``REPEATS`` runs of the floor and ours, alternating; ``ours`` / ``floor`` are
    the pair whose share is the median one, ``shares`` every pair's share in run order."""

    name: str
    ours: Result
    floor: Result
    rows_per_call: int
    goal: str
    shares: tuple[float, ...]

    @property
    def share(self) -> float:
        return _share(self.ours, self.floor)


@dataclass
class Bodies:
    unary: Path
    explain: Path
    split: Path
    batch: Path
    stream: Path
    redis: Path


def _gmsc_requests(n: int, prefix: str) -> list[pb.ScoreRequest]:
    spec = load_spec(GMSC_SPEC)
    frame = pl.read_csv(GMSC_DATA, null_values="NA").slice(0, n)
    out = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        numeric = {
            name: float(row[spec.column_of(name)])
            for name in spec.inputs
            if row[spec.column_of(name)] is not None
        }
        out.append(
            pb.ScoreRequest(
                request_id=f"{prefix}-{i}",
                applicant=pb.Applicant(applicant_id=f"applicant-{i}", numeric=numeric),
            )
        )
    return out


def _superlender_request() -> pb.ScoreRequest:
    row = pl.read_csv(SL_DATA).row(0, named=True)
    return pb.ScoreRequest(
        request_id="sl-1",
        applicant=pb.Applicant(
            applicant_id=str(row["customerid"]),
            numeric={
                "loan_amount": float(row["loanamount"]),
                "total_due": float(row["totaldue"]),
                "term_days": float(row["termdays"]),
                "loan_number": float(row["loannumber"]),
                "application_day": dt.datetime.fromisoformat(str(row["approveddate"]))
                .replace(tzinfo=dt.UTC)
                .timestamp()
                / 86_400.0,
            },
            categorical={"referred_by": str(row["referredby"])} if row["referredby"] else {},
        ),
    )


def write_bodies(dst: Path) -> Bodies:
    dst.mkdir(parents=True, exist_ok=True)
    one = _gmsc_requests(64, "p")
    explain = pb.ScoreRequest()
    explain.CopyFrom(one[0])
    explain.explain = True
    stream = pb.ScoreRequest()
    stream.CopyFrom(one[0])
    stream.ClearField("request_id")  # the load generator gives each message its own id
    many = _gmsc_requests(256, "split")
    paths = Bodies(
        unary=dst / "gmsc-1.bin",
        explain=dst / "gmsc-1-explain.bin",
        split=dst / "gmsc-256.bin",
        batch=dst / "gmsc-batch-64.bin",
        stream=dst / "gmsc-stream.bin",
        redis=dst / "superlender-1.bin",
    )
    ghz_body(paths.unary, [one[0]])
    ghz_body(paths.explain, [explain])
    ghz_body(paths.split, many)
    ghz_body(paths.batch, [pb.ScoreBatchRequest(requests=one)])
    paths.stream.write_bytes(stream.SerializeToString())  # altscore-stream-load: bare bytes
    ghz_body(paths.redis, [_superlender_request()])
    return paths


def gmsc_store(state: Path) -> Path:
    """A store holding the local GMSC champion as v1 (champion) and v2 (challenger)."""
    source = MlflowRegistry(local_tracking_uri(ROOT / "var" / "mlflow"))
    champion = source.get_alias(GMSC_MODEL, "champion")
    if champion is None:
        raise SystemExit("no GMSC champion in var/: run `python -m training ensure-champion`")
    target = state / "gmsc"
    shutil.rmtree(target, ignore_errors=True)
    bundle = source.download(champion, state / "download")
    registry = MlflowRegistry(
        local_tracking_uri(target / "mlflow"), target / "mlflow" / "artifacts"
    )
    for alias in ("champion", "challenger"):
        run_id = registry.log_run(
            "bench", run_name=alias, params={}, metrics={}, artifacts={"model": bundle}, tags={}
        )
        version = registry.register(GMSC_MODEL, run_id, "model", tags={})
        registry.set_alias(GMSC_MODEL, alias, version.version)
    registry.set_routing(GMSC_MODEL, Routing("off", 0.0))
    if (ROOT / "var" / "compiled").is_dir():
        shutil.copytree(ROOT / "var" / "compiled", target / "compiled")
    return target


def superlender_store(state: Path) -> Path:
    from training.run import train_and_register
    from training.settings import TrainingSettings
    from training.train import TrainParams

    target = state / "superlender"
    registry = MlflowRegistry(
        local_tracking_uri(target / "mlflow"), target / "mlflow" / "artifacts"
    )
    if registry.get_alias(SL_MODEL, "champion") is None:
        train_and_register(
            TrainingSettings(state_dir=target, model_name=SL_MODEL),
            spec_path=SL_SPEC,
            data_path=SL_DATA,
            params=TrainParams(),
            console=Console(stderr=True, quiet=True),
        )
    return target


def publish(redis_url: str) -> int:
    from credit_core.feature_store import RedisFeatureStore
    from training.publish import publish_entities

    _, rows = publish_entities(
        load_spec(SL_SPEC),
        SL_DATA.parent,
        RedisFeatureStore(redis_url),
        as_of=dt.datetime(2017, 8, 1, tzinfo=dt.UTC),
        ttl_seconds=None,
        console=Console(stderr=True, quiet=True),
    )
    return rows


@contextmanager
def serving(
    state: Path, model: str, log: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    full = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(state),
        "ALTSCORE_MODEL_NAME": model,
        "ALTSCORE_GRPC_PORT": str(port),
        "ALTSCORE_METRICS_PORT": "0",
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoring_server"], cwd=ROOT, env=full, stdout=out, stderr=out
        )
    try:
        wait_log(log, f"serving {model} v", proc)
        wait_log(log, "serving gRPC on", proc)
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def wait_log(log: Path, text: str, proc: subprocess.Popen[bytes], count: int = 1) -> None:
    deadline = time.monotonic() + 300
    while log.read_text(errors="replace").count(text) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not get to {text!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def floor_server(threads: int) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(RELEASE / "altscore-floor"), "--port", str(port), "--threads", str(threads)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def ghz_result(report: dict[str, Any], rows_per_call: int) -> Result:
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    seconds = report["total"] / 1e9
    pct = {
        int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []
    }
    cut = ("use of closed network connection", "context canceled", "code = Canceled")
    errors = sum(int(n) for k, n in codes.items() if k != "OK") - sum(
        int(n)
        for message, n in (report.get("errorDistribution") or {}).items()
        if any(mark in message for mark in cut)
    )
    return Result(
        calls=ok / seconds,
        rows=ok * rows_per_call / seconds,
        p50_ms=pct.get(50, float("nan")),
        p99_ms=pct.get(99, float("nan")),
        errors=max(errors, 0),
    )


def stream_load(port: int, body: Path, duration: float) -> Result:
    done = subprocess.run(
        [
            str(RELEASE / "altscore-stream-load"), "--target", f"127.0.0.1:{port}",
            "--body", str(body), "--streams", str(CONCURRENCY), "--connections",
            str(CONCURRENCY), "--window", str(STREAM_WINDOW), "--duration", str(duration),
            "--warmup", "1", "--unique-ids", "yes",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    return Result(
        calls=report["rate"],
        rows=report["rate"],
        p50_ms=report["p50_ms"],
        p99_ms=report["p99_ms"],
        errors=int(report["errors"]) + int(report["stream_failures"]),
    )


@dataclass(frozen=True)
class Setup:
    ghz: Path
    proto_args: Sequence[str]
    duration: float
    threads: int


def run(setup: Setup, state: Path, redis_url: str) -> tuple[list[Row], dict[str, float]]:
    """Every scenario beside the floor; returns the rows and the RSS (MB) of the GMSC server
    idle with its model loaded and after the load."""
    bodies = write_bodies(state / "bodies")
    gmsc = gmsc_store(state)
    superlender = superlender_store(state)
    publish(redis_url)
    score = "credit.scoring.v1.Scoring/Score"
    batch = "credit.scoring.v1.Scoring/ScoreBatch"

    def load(port: int, call: str, body: Path, rows: int) -> Result:
        report, _ = ghz(
            setup.ghz, f"127.0.0.1:{port}", call, body, CONCURRENCY, setup.duration,
            setup.proto_args,
        )  # fmt: skip
        return ghz_result(report, rows)

    rows: list[Row] = []
    memory: dict[str, float] = {}
    threads = {"ALTSCORE_DATA_PLANE_THREADS": str(setup.threads)}
    log = state / "production-gmsc.log"
    with (
        floor_server(setup.threads) as floor,
        serving(gmsc, GMSC_MODEL, log, **threads) as (proc, port),
        serving(
            superlender,
            SL_MODEL,
            state / "production-superlender.log",
            REDIS_URL=redis_url,
            **threads,
        ) as (_, sl_port),
    ):
        memory["idle"] = rss_bytes(proc.pid) / 2**20
        for warm in (floor, port):  # connections, caches, the first compile of every path
            load(warm, score, bodies.unary, 1)

        def pair(
            name: str,
            goal: str,
            ours: Callable[[], Result],
            floor_run: Callable[[], Result],
            n: int = 1,
        ) -> None:
            runs = []
            for _ in range(REPEATS):
                f = floor_run()
                runs.append((ours(), f))
            shares = tuple(_share(o, f) for o, f in runs)
            o, f = sorted(runs, key=lambda r: _share(*r))[len(runs) // 2]
            row = Row(name, o, f, n, goal, shares)
            rows.append(row)
            print(_row(row), flush=True)

        def unary(at: int, body: Path) -> Callable[[], Result]:
            return lambda: load(at, score, body, 1)

        pair("direct unary", ">= 90 %", unary(port, bodies.unary), unary(floor, bodies.unary))
        pair(
            "explain=true unary",
            ">= 40 %",
            unary(port, bodies.explain),
            unary(floor, bodies.unary),
        )
        pair(
            "Redis-enriched unary (SuperLender)",
            ">= 70 %, p99 <= 5 ms",
            unary(sl_port, bodies.redis),
            unary(floor, bodies.unary),
        )
        registry = MlflowRegistry(local_tracking_uri(gmsc / "mlflow"))
        registry.set_routing(GMSC_MODEL, Routing("split", 0.1))
        wait_log(log, "(split)", proc)
        pair(
            "split 10 % (256 applicants)",
            ">= 80 %",
            unary(port, bodies.split),
            unary(floor, bodies.split),
        )
        registry.set_routing(GMSC_MODEL, Routing("shadow", 0.1))
        wait_log(log, "(shadow)", proc)
        pair(
            "shadow (challenger scores every request)",
            ">= 60 %",
            unary(port, bodies.unary),
            unary(floor, bodies.unary),
        )
        registry.set_routing(GMSC_MODEL, Routing("off", 0.0))
        wait_log(log, "serving altscore-gmsc v1\n", proc, count=2)
        pair(
            "batch of 64",
            "",
            lambda: load(port, batch, bodies.batch, 64),
            lambda: load(floor, batch, bodies.batch, 64),
            64,
        )
        pair(
            "stream, 1 applicant per message",
            "rows/s >= batch of 64",
            lambda: stream_load(port, bodies.stream, setup.duration),
            lambda: stream_load(floor, bodies.stream, setup.duration),
        )
        memory["loaded"] = rss_bytes(proc.pid) / 2**20
    with (
        floor_server(setup.threads) as floor,
        serving(
            gmsc, GMSC_MODEL, state / "production-tl2cgen.log",
            ALTSCORE_PREDICTOR="tl2cgen", **threads,
        ) as (_, port),
    ):  # fmt: skip
        load(port, score, bodies.unary, 1)
        pair(
            "direct unary, TL2cgen library as predictor",
            "",
            unary(port, bodies.unary),
            unary(floor, bodies.unary),
        )
    return rows, memory


def _fmt(r: Result) -> str:
    return f"{r.calls:,.0f} | {r.rows:,.0f} | {r.p50_ms:.2f} / {r.p99_ms:.2f} | {r.errors}"


def _row(row: Row) -> str:
    shares = " / ".join(f"{x:.0%}" for x in row.shares)
    return (
        f"| {row.name} | {_fmt(row.ours)} | {row.floor.calls:,.0f} ({row.floor.p99_ms:.2f}) | "
        f"**{row.share:.0%}** ({shares}) | {row.goal} |"
    )


def report(rows: list[Row], memory: dict[str, float], setup: Setup) -> list[str]:
    batch = next((r for r in rows if r.name == "batch of 64"), None)
    stream = next((r for r in rows if r.name.startswith("stream")), None)
    lines = [
        "### Production scenarios against the transport floor",
        "",
        f"In the same run, c={CONCURRENCY} ({CONCURRENCY} connections), {setup.duration:g} s per "
        f"run. Each scenario alternates {REPEATS} times with a run of the floor "
        "(`altscore-floor`: the same service, codec and tonic settings answering fixed bytes, no "
        "work) under the same load; the row shows the pair with the median share of the floor, "
        "and every pair's share in run order in brackets. ghz for unary and "
        f"batch calls (pre-serialized bodies; the split scenario sends 256 applicants in turn, "
        f"and so does its floor run); streams: `altscore-stream-load`, {CONCURRENCY} streams "
        f"each keeping {STREAM_WINDOW} messages in flight (ghz's bidi client sends one message "
        f"and waits for its answer). Data plane: {setup.threads} runtime threads, prediction "
        "logging on. GMSC champion and a challenger copy; SuperLender with its entity features "
        "in a real redis-server on loopback.",
        "",
        "| scenario | calls/s | rows/s | p50 / p99 ms | errors | floor calls/s (p99 ms) "
        "| share of the floor (each pair) | goal |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in rows),
        "",
    ]
    if batch and stream:
        lines.append(
            f"Stream rows/s against the batch of 64: {stream.ours.rows:,.0f} vs "
            f"{batch.ours.rows:,.0f} ({stream.ours.rows / batch.ours.rows:.2f}x)."
        )
        lines.append("")
    lines.append(
        f"Whole-service RSS (one process: control plane + data plane) with the GMSC champion and "
        f"its challenger loaded: {memory['idle']:.0f} MB idle, {memory['loaded']:.0f} MB after "
        "the load above (goal: <= 300 MB)."
    )
    lines.append("")
    return lines
