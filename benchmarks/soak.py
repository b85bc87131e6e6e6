"""Soak (issue 13, item 7): a real server under ~70 % of its peak unary load for 10 minutes.

    uv run python -m benchmarks.soak [--seconds 600] [--share 0.7] [--write benchmarks/RESULTS.md]

The server is started as the other benchmarks start it (``benchmarks.production.serving``: the
GMSC champion of the local registry in its own store under ``var/bench/soak``, default settings,
prediction logging on). First the peak: ghz, unary ``Score`` of one GMSC applicant
(pre-serialized), c=16 on 16 connections, for ``--peak-seconds`` as ``make bench`` runs it. Then
ghz at ``--share`` of that rate (``--rps``), same body and concurrency, in one-minute runs back to
back (each run reconnects; its report gives that minute's p50 / p99 and errors), while the
server's RSS is sampled every 10 s.

Pass: after a one-minute warm-up every RSS sample is within ±5 % of the first one after it; no
minute's p99 is above twice the median of the per-minute p99s; 0 errors (calls ghz abandons when a
run ends are counted apart, as in ``make bench``); the server still runs, with the same pid.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.grpc_load import GHZ_VERSION, find_ghz, ghz
from benchmarks.procs import rss_bytes
from benchmarks.production import (
    CONCURRENCY,
    GMSC_MODEL,
    Result,
    ghz_result,
    gmsc_store,
    serving,
    write_bodies,
)
from benchmarks.results import write_section

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var" / "bench" / "soak"
TITLE = "Soak: 10 minutes at 70 % of peak unary load"
CALL = "credit.scoring.v1.Scoring/Score"
RSS_EVERY = 10.0
WARM_UP = 60.0
RSS_BAND = 0.05
P99_FACTOR = 2.0


@dataclass(frozen=True)
class Minute:
    index: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cut_off: int


def _run(binary: Path, target: str, body: Path, seconds: float, rps: float | None) -> Result:
    proto = [
        "--proto",
        str(ROOT / "proto/credit/scoring/v1/scoring.proto"),
        "--import-paths",
        str(ROOT / "proto"),
    ]
    if rps is not None:
        proto = [*proto, "--rps", str(round(rps))]
    report, _ = ghz(binary, target, CALL, body, CONCURRENCY, seconds, proto)
    result = ghz_result(report, 1)
    codes = report.get("statusCodeDistribution") or {}
    errors_all = sum(int(n) for k, n in codes.items() if k != "OK")
    return Result(result.calls, result.rows, result.p50_ms, result.p99_ms, errors_all)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--share", type=float, default=0.7, help="of the peak rate")
    parser.add_argument("--peak-seconds", type=float, default=10.0)
    parser.add_argument("--write", type=Path, default=None)
    ns = parser.parse_args(argv)

    binary = find_ghz()
    STATE.mkdir(parents=True, exist_ok=True)
    store = gmsc_store(STATE)
    body = write_bodies(STATE / "bodies").unary
    rss: list[tuple[float, int]] = []
    minutes: list[Minute] = []
    with serving(store, GMSC_MODEL, STATE / "server.log") as (proc, port):
        pid = proc.pid
        target = f"127.0.0.1:{port}"
        _run(binary, target, body, 1.0, None)  # warm-up, discarded
        peak = _run(binary, target, body, ns.peak_seconds, None)
        rate = peak.calls * ns.share
        print(
            f"peak {peak.calls:,.0f} calls/s (p99 {peak.p99_ms:.2f} ms); soak at {rate:,.0f}/s",
            file=sys.stderr,
            flush=True,
        )
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while True:
                rss.append((time.monotonic() - started, rss_bytes(pid)))
                if stop.wait(RSS_EVERY):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        index = 0
        while time.monotonic() - started < ns.seconds - 1:
            left = ns.seconds - (time.monotonic() - started)
            report, _ = ghz(
                binary,
                target,
                CALL,
                body,
                CONCURRENCY,
                min(60.0, left),
                [
                    "--proto",
                    str(ROOT / "proto/credit/scoring/v1/scoring.proto"),
                    "--import-paths",
                    str(ROOT / "proto"),
                    "--rps",
                    str(round(rate)),
                ],
            )
            result = ghz_result(report, 1)
            codes = report.get("statusCodeDistribution") or {}
            not_ok = sum(int(n) for k, n in codes.items() if k != "OK")
            minutes.append(
                Minute(
                    index,
                    result.calls,
                    result.p50_ms,
                    result.p99_ms,
                    result.errors,
                    not_ok - result.errors,
                )
            )
            print(
                f"minute {index}: {result.calls:,.0f}/s p99 {result.p99_ms:.2f} ms "
                f"errors {result.errors} RSS {rss[-1][1] / 2**20:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
            index += 1
        stop.set()
        sampler.join()
        rss.append((time.monotonic() - started, rss_bytes(pid)))
        alive = proc.poll() is None and proc.pid == pid
    log_bytes = sum(f.stat().st_size for f in (store / "evaluation").glob("*") if f.is_file())

    after = [(t, b) for t, b in rss if t >= WARM_UP]
    base = after[0][1]
    worst = max(abs(b - base) / base for _, b in after)
    p99s = [m.p99_ms for m in minutes]
    median_p99 = statistics.median(p99s)
    errors = sum(m.errors for m in minutes)
    rss_ok = worst <= RSS_BAND
    p99_ok = max(p99s) <= P99_FACTOR * median_p99
    passed = rss_ok and p99_ok and errors == 0 and alive

    lines = [
        f"## {TITLE}",
        "",
        f"Command: `make soak` (= `uv run python -m benchmarks.soak --seconds {ns.seconds:g} "
        "--write benchmarks/RESULTS.md`). One server (`python -m scoring_server`, GMSC "
        "champion, default settings, 2 data-plane threads, prediction logging on), ghz "
        f"{GHZ_VERSION} on the same {len(os.sched_getaffinity(0))} cores: unary `Score`, one "
        f"pre-serialized GMSC applicant, c={CONCURRENCY} on {CONCURRENCY} connections. Peak "
        f"({ns.peak_seconds:g} s, no rate limit): **{peak.calls:,.0f} calls/s** (p50 "
        f"{peak.p50_ms:.2f} / p99 {peak.p99_ms:.2f} ms). Soak: `--rps {round(rate)}` "
        f"({ns.share:.0%} of it) for {ns.seconds:g} s, as one-minute ghz runs back to back; "
        f"RSS of the server every {RSS_EVERY:g} s.",
        "",
        "| minute | calls/s | p50 ms | p99 ms | errors | abandoned at the run's end¹ |",
        "|---|---|---|---|---|---|",
        *(
            f"| {m.index + 1} | {m.calls_per_s:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
            f"| {m.errors} | {m.cut_off} |"
            for m in minutes
        ),
        "",
        "¹ calls in flight when a one-minute ghz run ends (ghz closes their connections).",
        "",
        "RSS (MB) every 10 s: "
        + ", ".join(f"{b / 2**20:.0f}" for _, b in rss)
        + f". After the {WARM_UP:g} s warm-up: first {base / 2**20:.1f} MB, largest "
        f"deviation {worst:.1%} (pass: ≤ {RSS_BAND:.0%}) — **{'flat' if rss_ok else 'NOT flat'}**.",
        "",
        f"p99 per minute: median {median_p99:.2f} ms, max {max(p99s):.2f} ms (pass: max ≤ "
        f"{P99_FACTOR:g} x median) — **{'stable' if p99_ok else 'NOT stable'}**. Errors: "
        f"**{errors}**. Server still running with the same pid: {alive}. Prediction log "
        f"written: {log_bytes / 2**30:.2f} GiB (deleted after the run).",
        "",
        f"Result: **{'pass' if passed else 'FAIL'}**. Machine: {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, {platform.platform()}; Python "
        f"{platform.python_version()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if ns.write:
        write_section(ns.write, TITLE, text)
    import shutil

    shutil.rmtree(store / "evaluation", ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
