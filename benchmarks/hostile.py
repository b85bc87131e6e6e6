"""Hostile clients against a real server (issue 13, acceptance 2): while an attacker does one
thing at a time, a well-behaved client keeps scoring on its own connection and a new client
connects; their latency says whether anybody else noticed, and the server's RSS what the
attack cost.

    uv run python -m benchmarks.hostile [--idle 8000] [--bodies 200] [--streams 20x1024]
        [--write benchmarks/RESULTS.md]

Scenarios (raw HTTP/2 with the ``h2`` library where grpcio cannot misbehave):

- ``idle``: N TCP connections that send the HTTP/2 preface and nothing else;
- ``bodies``: 200 calls announcing a 4 MB message and sending 1 MB of it, then stalling;
- ``prefix``: a call whose message announces 4 GiB and stalls: how long until it is answered;
- ``ping``: one connection sending PING frames as fast as it can for 5 s;
- ``reset``: rapid reset: streams opened and reset at once, 10,000 times (or until the server
  closes the connection);
- ``held``: C connections x S streams, each stream sending one message and holding;
- ``headers``: malformed ``grpc-timeout`` and ``grpc-encoding: br`` from one client, then the
  other client's calls.

The GMSC champion of the local registry (``make train``) serves, from its own store under
``var/bench/hostile``; the server runs with default settings. Results are printed as a Markdown
table, and with ``--write`` become the "Hostile clients" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import resource
import socket
import statistics
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events

from benchmarks.procs import rss_bytes
from benchmarks.production import GMSC_MODEL, _gmsc_requests, gmsc_store, serving
from benchmarks.results import write_section
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "var" / "bench" / "hostile"
SCORE = "/credit.scoring.v1.Scoring/Score"
TITLE = "Hostile clients"


@dataclass
class Observed:
    scenario: str
    attack: str
    p50_ms: float
    p99_ms: float
    errors: int
    new_client_ms: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float


def raw_connection(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def grpc_headers(path: str = SCORE, **extra: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "127.0.0.1"),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra.items(),
    ]


def drain(sock: socket.socket, stop: threading.Event) -> None:
    """Read and discard what the server sends (so its writes never block on us)."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def _victim(
    port: int,
    requests: list[bytes],
    ready: Event,
    stop: Event,
    out: Queue[tuple[list[float], int]],
) -> None:
    """The victim's loop, in its own process (the attacker's GIL is not its latency)."""
    messages = [pb.ScoreRequest.FromString(r) for r in requests]
    latencies: list[float] = []
    errors = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ScoringStub(channel)  # type: ignore[no-untyped-call]
        stub.Score(messages[0], timeout=10)  # connected
        ready.set()
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            try:
                stub.Score(messages[i % len(messages)], timeout=5)
                latencies.append(time.perf_counter() - t)
            except grpc.RpcError:
                errors += 1
            i += 1
            time.sleep(0.002)
    out.put((latencies, errors))


class Victim:
    """A well-behaved client scoring in a loop on its own connection, in its own process."""

    def __init__(self, port: int, requests: list[pb.ScoreRequest]) -> None:
        self.port = port
        self.requests = requests
        ctx = multiprocessing.get_context("spawn")
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.out: Queue[tuple[list[float], int]] = ctx.Queue()
        self.process = ctx.Process(
            target=_victim,
            args=(port, [r.SerializeToString() for r in requests], self.ready, self.stop, self.out),
            daemon=True,
        )
        self.latencies: list[float] = []
        self.errors = 0

    def __enter__(self) -> Victim:
        self.process.start()
        if not self.ready.wait(120):
            raise SystemExit("the victim did not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.latencies, self.errors = self.out.get(timeout=60)
        self.process.join(10)

    def new_client_ms(self) -> float:
        """A new connection's first call, in ms (inf when it failed)."""
        t = time.perf_counter()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                stub = pb_grpc.ScoringStub(ch)  # type: ignore[no-untyped-call]
                stub.Score(self.requests[1], timeout=5)
        except grpc.RpcError:
            return float("inf")
        return (time.perf_counter() - t) * 1000


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@contextlib.contextmanager
def observed(
    name: str, attack: str, pid: int, victim_port: int, requests: list[pb.ScoreRequest],
    out: list[Observed],
) -> Iterator[Callable[[], None]]:  # fmt: skip
    """Run the victim around the attack; the yielded callable samples the peak RSS."""
    before = rss_bytes(pid)
    peak = [before]

    def sample() -> None:
        peak[0] = max(peak[0], rss_bytes(pid))

    with Victim(victim_port, requests) as victim:
        yield sample
        sample()
        time.sleep(1.0)  # the victim keeps going under the attack
        sample()
        fresh = victim.new_client_ms()
    time.sleep(2.0)
    out.append(
        Observed(
            name, attack,
            statistics.median(victim.latencies) * 1000 if victim.latencies else float("nan"),
            percentile(victim.latencies, 0.99), victim.errors, fresh,
            before / 2**20, peak[0] / 2**20, rss_bytes(pid) / 2**20,
        )
    )  # fmt: skip


def idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i // 20000}", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        socks.append(s)
    return socks


def unfinished_bodies(port: int, n: int) -> list[socket.socket]:
    """n connections, each with a call announcing 4 MB and sending 1 MB of it."""
    socks = []
    chunk = b"\0" * 16384
    for _ in range(n):
        sock, conn = raw_connection(port)
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, grpc_headers())
        conn.send_data(stream, struct.pack(">BI", 0, 4 * 2**20))
        sent = 5
        while sent < 2**20 - len(chunk):
            window = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if window < len(chunk):
                break
            conn.send_data(stream, chunk)
            sent += len(chunk)
        sock.sendall(conn.data_to_send())
        socks.append(sock)
    return socks


def stalled_prefix(port: int, timeout: float = 30.0) -> float:
    """Seconds until a call announcing 4 GiB (and sending nothing more) is answered."""
    sock, conn = raw_connection(port)
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, grpc_headers(**{"grpc-timeout": "1S"}))
    conn.send_data(stream, struct.pack(">BI", 0, 2**32 - 1))
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    sock.settimeout(0.5)
    try:
        while time.monotonic() - started < timeout:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return time.monotonic() - started
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return time.monotonic() - started
                if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                    headers = dict(event.headers)
                    if b"grpc-status" in headers:
                        return time.monotonic() - started
            sock.sendall(conn.data_to_send())
        return float("inf")
    finally:
        sock.close()


def ping_flood(port: int, seconds: float) -> int:
    sock, conn = raw_connection(port)
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(sock, stop), daemon=True)
    reader.start()
    sent, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for _ in range(100):
                conn.ping(struct.pack(">Q", sent))
                sent += 1
            sock.sendall(conn.data_to_send())
    except OSError:
        pass
    stop.set()
    sock.close()
    return sent


def reset_flood(port: int, n: int) -> int:
    """Open and reset streams; returns how many were sent before the server closed."""
    sock, conn = raw_connection(port)
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(sock, stop), daemon=True)
    reader.start()
    sent = 0
    try:
        for _ in range(n):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, grpc_headers())
            conn.reset_stream(stream)
            sock.sendall(conn.data_to_send())
            sent += 1
    except (OSError, h2.exceptions.ProtocolError):
        pass
    stop.set()
    sock.close()
    return sent


async def held_streams(
    port: int, connections: int, per: int, hold: float, request: pb.ScoreRequest
) -> dict[str, int]:
    """connections x per streams, each sending one valid message; all stay open until every
    one has its first answer (or was refused), then ``hold`` s more."""
    codes: dict[str, int] = {}
    total = connections * per
    answered = 0
    everyone = asyncio.Event()

    def count(key: str) -> None:
        nonlocal answered
        codes[key] = codes.get(key, 0) + 1
        answered += 1
        if answered == total:
            everyone.set()

    async def one(stub: pb_grpc.ScoringStub, i: int) -> None:
        queue: asyncio.Queue[pb.ScoreRequest | None] = asyncio.Queue()
        await queue.put(pb.ScoreRequest(request_id=f"h{i}", applicant=request.applicant))

        async def messages() -> AsyncIterator[pb.ScoreRequest]:
            while (m := await queue.get()) is not None:
                yield m

        call = stub.ScoreStream(messages())
        try:
            async for answer in call:
                count(answer.WhichOneof("result") or "none")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everyone.wait(), 60)
                await asyncio.sleep(hold)
                await queue.put(None)
        except grpc.aio.AioRpcError as e:
            count(f"{e.code().name}: {(e.details() or '')[:80]}")

    # a local subchannel pool each: one TCP connection per channel (grpc shares them otherwise)
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    try:
        stubs = [pb_grpc.ScoringStub(c) for c in channels]  # type: ignore[no-untyped-call]
        await asyncio.gather(*(one(stubs[i % connections], i) for i in range(total)))
    finally:
        for c in channels:
            await c.close()
    return codes


def malformed_headers(port: int) -> list[int]:
    """Calls with a malformed grpc-timeout and with grpc-encoding br; their HTTP statuses."""
    statuses = []
    for extra in (
        {"grpc-timeout": "abc"},
        {"grpc-timeout": "99999999999S"},
        {"grpc-encoding": "br"},
    ):
        sock, conn = raw_connection(port)
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, grpc_headers(**extra))
        body = pb.ScoreRequest(request_id="m").SerializeToString()
        conn.send_data(
            stream,
            struct.pack(">BI", 1 if "grpc-encoding" in extra else 0, len(body)) + body,
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        sock.settimeout(5)
        code = -1
        with contextlib.suppress(OSError):
            while code < 0:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        h = dict(event.headers)
                        if b"grpc-status" in h:
                            code = int(h[b"grpc-status"])
        statuses.append(code)
        sock.close()
    return statuses


HEADER = (
    "| scenario | attack | victim p50 / p99 ms | victim errors | new client's first call ms "
    "| RSS before / peak / after MB |"
)


def table(rows: list[Observed]) -> list[str]:
    out = [HEADER, "|---|---|---|---|---|---|"]
    for r in rows:
        rss = f"{r.rss_before_mb:.0f} / {r.rss_peak_mb:.0f} / {r.rss_after_mb:.0f}"
        out.append(
            f"| {r.scenario} | {r.attack} | {r.p50_ms:.2f} / {r.p99_ms:.2f} | {r.errors} "
            f"| {r.new_client_ms:.1f} | {rss} |"
        )
    return out


def attacks(args: argparse.Namespace, pid: int, port: int) -> tuple[list[Observed], list[str]]:
    requests = _gmsc_requests(200, "victim")
    rows: list[Observed] = []
    notes: list[str] = []

    def watch(name: str, attack: str) -> contextlib.AbstractContextManager[Callable[[], None]]:
        return observed(name, attack, pid, port, requests, rows)

    with watch("baseline", "none"):
        time.sleep(2)
    with watch("idle", f"{args.idle:,} idle connections (preface only)") as sample:
        socks = idle(port, args.idle)
        sample()
    for sock in socks:
        sock.close()
    with watch("bodies", f"{args.bodies} unfinished 4 MB bodies (1 MB sent)") as sample:
        socks = unfinished_bodies(port, args.bodies)
        time.sleep(1)
        sample()
    for sock in socks:
        sock.close()
    took = stalled_prefix(port)
    notes.append(f"a call announcing a 4 GiB message was answered after {took:.3f} s")
    with watch("ping", "PING flood, 5 s"):
        pings = ping_flood(port, 5)
    notes.append(f"PING flood: {pings:,} PING frames sent in 5 s")
    with watch("reset", "rapid reset, up to 10,000 streams"):
        resets = reset_flood(port, 10_000)
    notes.append(f"rapid reset: {resets:,} streams opened and reset before the server closed")
    connections, per = (int(x) for x in args.streams.split("x"))
    with watch("held", f"{connections} connections x {per} held streams") as sample:
        stop = threading.Event()

        def sampling() -> None:
            while not stop.wait(0.5):
                sample()

        sampler = threading.Thread(target=sampling, daemon=True)
        sampler.start()
        codes = asyncio.run(held_streams(port, connections, per, 5.0, requests[0]))
        stop.set()
        sampler.join()
    notes.append(
        f"held streams: first answers by kind {codes} (the server keeps at most"
        " ALTSCORE_MAX_OPEN_STREAMS = 4,096 open; beyond, it sheds them; with 20,480 streams in"
        " one process, grpc-python's aio client fails its own calls as 'Internal error from"
        " Core')"
    )
    with watch("headers", "malformed grpc-timeout / grpc-encoding br"):
        statuses = malformed_headers(port)
    notes.append(f"malformed headers (abc, 11-digit timeout, br): grpc-status {statuses}")
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=8000, help="idle connections")
    parser.add_argument("--bodies", type=int, default=200, help="unfinished 4 MB bodies")
    parser.add_argument("--streams", default="20x1024", help="held streams: CONNxSTREAMS")
    parser.add_argument("--write", type=Path, help="write the section into this RESULTS.md")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    STATE.mkdir(parents=True, exist_ok=True)
    store = gmsc_store(STATE)
    with serving(store, GMSC_MODEL, STATE / "server.log") as (proc, port):
        rows, notes = attacks(args, proc.pid, port)
    text = "\n".join(
        [
            f"## {TITLE}",
            "",
            "`uv run python -m benchmarks.hostile --write benchmarks/RESULTS.md` (`make hostile`):"
            " one server with default settings (GMSC champion; 2 data-plane threads), a victim"
            " scoring in a loop on its own connection (one call every 2 ms) while each attack"
            " runs, then a new client's first call; the attacker, victim and server share the 2"
            f" cores. Open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,} for the"
            " server and for the attacker: it bounds the idle connections.",
            "",
            *table(rows),
            "",
            *(f"- {n}" for n in notes),
        ]
    )
    print(text)
    if args.write is not None:
        write_section(args.write, TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
