"""gRPC load: altscore side by side with Seldon MLServer on the same model, then altscore's
production scenarios against the transport floor (``benchmarks.production``), in one run.

    uv run python -m benchmarks.grpc_load [--duration 10] [--write benchmarks/RESULTS.md]

Part one: both servers serve the synthetic benchmark model (400 trees, depth 6, 40 features:
``benchmarks.synthetic_model``) on this machine; ghz (Go) is the load generator, on the same
cores. Scenarios alternate between the two servers: unary at c=1/16/64 (one applicant per call),
64 applicants per call at c=16 (our ``ScoreBatch``, MLServer's ``ModelInfer`` on a [64, 40]
tensor), and the unary and batch calls again with the applicants as ``numeric_values`` vectors.
Part two: see ``benchmarks.production``. Every figure of a table comes from one run of this
command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    wrappers_pb2,
)
from google.protobuf.message import Message

from benchmarks import mlserver_peer
from benchmarks.procs import free_port, rss_bytes, tree_rss_bytes
from benchmarks.results import write_section
from benchmarks.synthetic_model import ensure_bench_model, write_score_bodies
from scoring_server.grpc._proto import scoring_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var" / "bench"
SCORING = "credit.scoring.v1.Scoring"
TITLE = "gRPC load: altscore vs Seldon MLServer (ghz, same model)"
GHZ_VERSION = "v0.120.0"
"""Pinned in the Makefile (``make tools``); reported with the figures."""


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    rows_per_call: int
    ours: tuple[str, str]
    """(method, body file name) on our server."""
    theirs: str | None
    """Body file name for MLServer's ModelInfer, None when it has no such call."""


SCENARIOS = (
    Scenario("unary, 1 applicant, c=1", 1, 1, (f"{SCORING}/Score", "score-1.json"), "infer-1.json"),
    Scenario(
        "unary, 1 applicant, c=16", 16, 1, (f"{SCORING}/Score", "score-1.json"), "infer-1.json"
    ),
    Scenario(
        "unary, 1 applicant, c=64", 64, 1, (f"{SCORING}/Score", "score-1.json"), "infer-1.json"
    ),
    Scenario(
        "64 applicants per call, c=16",
        16,
        64,
        (f"{SCORING}/ScoreBatch", "score-batch-64.bin"),
        "infer-64.bin",
    ),
    Scenario(
        "unary, 1 applicant as numeric_values, c=16",
        16,
        1,
        (f"{SCORING}/Score", "score-1-values.json"),
        "infer-1.json",
    ),
    Scenario(
        "64 applicants per call as numeric_values, c=16",
        16,
        64,
        (f"{SCORING}/ScoreBatch", "score-batch-64-values.bin"),
        "infer-64.bin",
    ),
)


@dataclass(frozen=True)
class Run:
    calls_ok: int
    calls_total: int
    seconds: float
    rows_per_call: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]
    cut_off: int
    """Calls in flight when ghz stops at the end of the run (it closes their connections)."""
    client_cpu_share: float
    server_rss_mb: str

    @property
    def rps(self) -> float:
        return self.calls_ok / self.seconds

    @property
    def rows_per_second(self) -> float:
        return self.calls_ok * self.rows_per_call / self.seconds


_CUT_OFF = ("use of closed network connection", "context canceled", "code = Canceled")
"""How ghz reports the calls it abandons when a ``-z`` run ends; not server errors."""


def find_ghz() -> Path:
    found = shutil.which("ghz")
    if found:
        return Path(found)
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, check=False)
    candidate = Path(gopath.stdout.strip() or Path.home() / "go") / "bin" / "ghz"
    if candidate.is_file():
        return candidate
    raise SystemExit("ghz not found: run `make tools` (go install, pinned version)")


@contextmanager
def our_server(threads: int | None) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = STATE / "altscore-server.log"
    env = {
        **os.environ,
        "ALTSCORE_STATE_DIR": str(STATE),
        "ALTSCORE_MODEL_NAME": "altscore-bench",
        "ALTSCORE_GRPC_PORT": str(port),
        "ALTSCORE_METRICS_PORT": "0",
    }
    if threads is not None:
        env["ALTSCORE_DATA_PLANE_THREADS"] = str(threads)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scoring_server"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 300
        while log.read_text(errors="replace").count("serving gRPC on") < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"our server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc, port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def ghz_body(out: Path, messages: Sequence[Message]) -> Path:
    """A ``--binary-file`` for ghz: the messages, each preceded by its length (varint), the one
    layout ghz reads unambiguously. (Given one bare message, ghz first tries to read it as
    length-prefixed messages and can succeed on the wrong bytes: a bare ``ScoreBatchRequest``
    arrived as an empty batch.) ghz sends them in turn, one per call."""
    # A BytesValue is tag 0x0a, then the length and the bytes: drop the tag.
    out.write_bytes(
        b"".join(
            wrappers_pb2.BytesValue(value=m.SerializeToString()).SerializeToString()[1:]
            for m in messages
        )
    )
    return out


def binary_body(body: Path, message: type[Message]) -> Path:
    """The first message of a ghz JSON body, serialized: ghz then sends the same bytes on every
    call instead of building each message from JSON (which costs it more CPU than the servers
    spend on 64 applicants). Unary and batch runs use these, for both servers."""
    first = json.loads(body.read_text())[0]
    return ghz_body(body.with_suffix(".bin"), [json_format.ParseDict(first, message())])


def oip_request_type(protoset: Path) -> type[Message]:
    """MLServer's ``inference.ModelInferRequest``, built from its protoset (no MLServer import)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(protoset.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("inference.ModelInferRequest")
    )


def ghz(
    binary: Path,
    target: str,
    call: str,
    body: Path,
    concurrency: int,
    duration: float,
    proto_args: Sequence[str],
) -> tuple[dict[str, Any], float]:
    """One ghz run (``body``: JSON messages, or a ``ghz_body`` if it ends in .bin);
    returns its JSON report and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [
            str(binary),
            "--insecure",
            *proto_args,
            "--call",
            call,
            "--binary-file" if body.suffix == ".bin" else "--data-file",
            str(body),
            "-c",
            str(concurrency),
            "--connections",
            str(min(concurrency, 16)),
            "-z",
            f"{duration}s",
            "--format",
            "json",
            target,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 and not done.stdout.strip():
        raise SystemExit(f"ghz failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(done.stdout), cpu


def to_run(report: dict[str, Any], cpu: float, rows_per_call: int, rss: str) -> Run:
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    cut = sum(
        int(n)
        for message, n in (report.get("errorDistribution") or {}).items()
        if any(mark in message for mark in _CUT_OFF)
    )
    pct = {
        int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []
    }
    seconds = report["total"] / 1e9
    return Run(
        calls_ok=ok,
        calls_total=int(report["count"]),
        seconds=seconds,
        rows_per_call=rows_per_call,
        p50_ms=pct.get(50, float("nan")),
        p90_ms=pct.get(90, float("nan")),
        p99_ms=pct.get(99, float("nan")),
        errors={k: int(v) for k, v in codes.items() if k != "OK"},
        cut_off=cut,
        client_cpu_share=cpu / (seconds * len(os.sched_getaffinity(0))),
        server_rss_mb=rss,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_load")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--threads", type=int, default=None, help="data plane threads (default: the cores)"
    )
    parser.add_argument("--write", type=Path, default=None)
    ns = parser.parse_args(argv)

    binary = find_ghz()
    model = ensure_bench_model(STATE, STATE / "model")
    bodies = STATE / "bodies"
    write_score_bodies(bodies)
    venv = mlserver_peer.ensure_venv(ROOT)
    mlserver_peer.write_infer_bodies(bodies)
    protoset = mlserver_peer.oip_protoset(venv, STATE / "oip.protoset")
    google_protos = ROOT / "proto"
    oip_request = oip_request_type(protoset)
    for name, message in (
        ("score-1.json", pb.ScoreRequest),
        ("score-batch-64.json", pb.ScoreBatchRequest),
        ("score-1-values.json", pb.ScoreRequest),
        ("score-batch-64-values.json", pb.ScoreBatchRequest),
        ("infer-1.json", oip_request),
        ("infer-64.json", oip_request),
    ):
        binary_body(bodies / name, message)
    ours_proto = ["--proto", str(ROOT / "proto/credit/scoring/v1/scoring.proto"),
                  "--import-paths", str(google_protos)]  # fmt: skip
    theirs_proto = ["--protoset", str(protoset)]
    threads = ns.threads or len(os.sched_getaffinity(0))

    results: list[tuple[Scenario, Run, Run | None]] = []
    grpc_port, http_port = free_port(), free_port()
    repo = mlserver_peer.write_model_repo(
        model.model_json, STATE / "mlserver", grpc_port=grpc_port, http_port=http_port
    )
    with our_server(threads) as (proc, port, _log):
        peer = mlserver_peer.start(venv, repo, grpc_port, http_port)
        try:
            mlserver_peer.wait_ready(peer, repo, http_port)
            ours_target, theirs_target = f"127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"
            idle_ours = rss_bytes(proc.pid) / 2**20
            idle_theirs = tree_rss_bytes(peer.pid) / 2**20
            for s in SCENARIOS:  # warm-up, discarded
                ghz(
                    binary, ours_target, s.ours[0], bodies / s.ours[1], s.concurrency, 1, ours_proto
                )
                if s.theirs:
                    ghz(binary, theirs_target, mlserver_peer.INFER_CALL, bodies / s.theirs,
                        s.concurrency, 1, theirs_proto)  # fmt: skip
            for s in SCENARIOS:
                report, cpu = ghz(
                    binary, ours_target, s.ours[0], bodies / s.ours[1], s.concurrency,
                    ns.duration, ours_proto,
                )  # fmt: skip
                ours = to_run(report, cpu, s.rows_per_call, f"{rss_bytes(proc.pid) / 2**20:.0f}")
                theirs = None
                if s.theirs:
                    report, cpu = ghz(
                        binary, theirs_target, mlserver_peer.INFER_CALL, bodies / s.theirs,
                        s.concurrency, ns.duration, theirs_proto,
                    )  # fmt: skip
                    rss = f"{tree_rss_bytes(peer.pid) / 2**20:.0f}"
                    theirs = to_run(report, cpu, s.rows_per_call, rss)
                results.append((s, ours, theirs))
                print(_row(s, ours, theirs), flush=True)
        finally:
            mlserver_peer.stop(peer)

    from benchmarks import production
    from tests.redis_server import RedisServer

    setup = production.Setup(binary, ours_proto, ns.duration, threads)
    with RedisServer() as redis_server:
        rows, memory = production.run(setup, STATE, redis_server.url)
        redis_version = redis_server.version()
    text = _report(ns, threads, binary, model.holdout_auc, results, idle_ours, idle_theirs)
    text += "\n" + "\n".join(production.report(rows, memory, setup))
    text += f"\nredis-server {redis_version}.\n"
    print(text)
    if ns.write:
        write_section(ns.write, TITLE, text)
    return 0


def _fmt(r: Run) -> str:
    errors = sum(r.errors.values()) - r.cut_off
    return (
        f"{r.rps:,.0f} | {r.rows_per_second:,.0f} | {r.p50_ms:.2f} / {r.p90_ms:.2f} / "
        f"{r.p99_ms:.2f} | {errors} | {r.server_rss_mb} | {r.client_cpu_share:.0%}"
    )


def _row(s: Scenario, ours: Run, theirs: Run | None) -> str:
    ratio = (
        f"**{ours.rows_per_second / theirs.rows_per_second:.1f}x**"
        if theirs and theirs.rows_per_second
        else "n/a"
    )
    out = f"| {s.name} | altscore | {_fmt(ours)} | {ratio} |"
    if theirs:
        out += f"\n| | MLServer | {_fmt(theirs)} | |"
    else:
        out += "\n| | MLServer | no streaming in its XGBoost runtime | | | | | | |"
    return out


def _report(
    ns: argparse.Namespace,
    threads: int,
    binary: Path,
    auc: float,
    results: list[tuple[Scenario, Run, Run | None]],
    idle_ours: float,
    idle_theirs: float,
) -> str:
    cores = len(os.sched_getaffinity(0))
    best_theirs = max((t.rows_per_second for _, _, t in results if t), default=0.0)
    best_ours = max(o.rows_per_second for _, o, _ in results)
    lines = [
        f"## {TITLE}",
        "",
        f"Command: `make bench` (= `uv run python -m benchmarks.grpc_load --duration "
        f"{ns.duration:g} --write benchmarks/RESULTS.md`). {ns.duration:g} s per run after a 1 s "
        "warm-up, the two servers alternating, ghz on the same "
        f"{cores} cores (ghz {GHZ_VERSION}; `--connections` = min(c, 16); every call sends one "
        "pre-serialized message, `--binary-file`). Model: the synthetic "
        f"benchmark model (400 trees, depth 6, 40 features, holdout AUC {auc:.3f}), registered as "
        "`altscore-bench` for altscore and saved as `model.json` for MLServer.",
        "",
        "altscore: `python -m scoring_server`, one process: the Python control plane beside the "
        f"Rust data plane (tonic, {threads} runtime threads), which answers every call; "
        "prediction logging on. The `numeric_values` rows send the same applicants as one "
        "packed vector each instead of the `numeric` map. MLServer "
        "1.7.1 + mlserver-xgboost 1.7.1 with its best settings here (inference in the main "
        "process: `parallel_workers: 0`, metrics off, `OMP_NUM_THREADS=1`), Open Inference "
        "Protocol gRPC `ModelInfer`, one FP32 tensor.",
        "",
        "| scenario | server | calls/s | rows/s | p50 / p90 / p99 ms | errors¹ | server RSS MB "
        "| ghz CPU share | rows/s vs MLServer |",
        "|---|---|---|---|---|---|---|---|---|",
        *(_row(s, o, t) for s, o, t in results),
        "",
        "¹ Not counting the calls in flight when ghz ends a run (it closes their connections: "
        "at most c per run).",
        "",
        f"Best rows/s: altscore {best_ours:,.0f}, MLServer {best_theirs:,.0f} "
        f"(**{best_ours / best_theirs:.1f}x**)."
        if best_theirs
        else "",
        "",
        f"Idle RSS with the model loaded: altscore {idle_ours:.0f} MB (the whole service: one "
        f"process); MLServer {idle_theirs:.0f} MB.",
        "",
        f"Machine: {platform.machine()}, {cores} cores, {platform.platform()}; "
        f"Python {platform.python_version()}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
