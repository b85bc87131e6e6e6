"""Hostile clients against a real server (issue 13, acceptance 2): while an attacker does one
thing at a time, a well-behaved client keeps scoring on its own connection and a new client
connects; their latency says whether anybody else noticed, and the server's RSS what the
attack cost.

    uv run python -m benchmarks.hostile [--idle 50000] [--bodies 200] [--streams 20x1024]
        [--only idle,held,...] [--write benchmarks/RESULTS.md]

The new client connects while the attack is held (idle, bodies, held) or right after it (the
floods); the RSS "after" is read 8 s after the attack's connections closed.

Scenarios (raw HTTP/2 with the ``h2`` library where grpcio cannot misbehave):

- ``idle``: N TCP connections that send the HTTP/2 preface and nothing else (opened by several
  processes: one process's open-file limit is 20,000 here; the server's too, so it keeps at most
  its connection limit open and closes the quietest beyond);
- ``bodies``: 200 calls announcing a 4 MB message and sending 1 MB of it, then stalling;
- ``prefix``: a call whose message announces 4 GiB and stalls: how long until it is answered;
- ``ping``: one connection sending PING frames as fast as it can for 5 s;
- ``reset``: rapid reset: streams opened and reset at once, 10,000 times (or until the server
  closes the connection);
- ``held``: C connections x S raw streams, each sending one message and holding;
- ``headers``: malformed ``grpc-timeout`` and ``grpc-encoding: br`` from one client, then the
  other client's calls.

The GMSC champion of the local registry (``make train``) serves, from its own store under
``var/bench/hostile``; the server runs with default settings. Results are printed as a Markdown
table, and with ``--write`` become the "Hostile clients" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import select
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
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
SETTLE = 8.0
SCENARIOS = ("idle", "bodies", "prefix", "ping", "reset", "held", "headers")


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


class Probe:
    """What a scenario reads while its attack runs."""

    def __init__(self, pid: int, victim: Victim) -> None:
        self.pid = pid
        self.victim = victim
        self.peak = rss_bytes(pid)
        self.fresh_ms: float | None = None

    def sample(self) -> None:
        """Sample the server's RSS (the peak is kept)."""
        self.peak = max(self.peak, rss_bytes(self.pid))

    def settled(self) -> None:
        """With the attack in place: the victim scores 1 s more, then a new client connects
        and calls once."""
        self.sample()
        time.sleep(1.0)
        self.sample()
        self.fresh_ms = self.victim.new_client_ms()


@contextlib.contextmanager
def observed(
    name: str, attack: str, pid: int, victim_port: int, requests: list[pb.ScoreRequest],
    out: list[Observed],
) -> Iterator[Probe]:  # fmt: skip
    """Run the victim around the attack, which ends with the with-block (its connections
    closed). A scenario that holds its attack calls ``Probe.settled`` while it does; for the
    others (floods that end by themselves), the new client comes right after. The RSS after is
    read SETTLE s after the attack ended (the server gives freed memory back every 5 s when
    connections closed)."""
    before = rss_bytes(pid)
    with Victim(victim_port, requests) as victim:
        probe = Probe(pid, victim)
        yield probe
        if probe.fresh_ms is None:
            probe.settled()
    time.sleep(SETTLE)
    out.append(
        Observed(
            name, attack,
            statistics.median(victim.latencies) * 1000 if victim.latencies else float("nan"),
            percentile(victim.latencies, 0.99), victim.errors,
            probe.fresh_ms if probe.fresh_ms is not None else float("nan"),
            before / 2**20, probe.peak / 2**20, rss_bytes(pid) / 2**20,
        )
    )  # fmt: skip


def _hold_idle(
    port: int, first: int, count: int, ready: Event, stop: Event, out: Queue[tuple[int, int]]
) -> None:
    """Open ``count`` connections that send the HTTP/2 preface and nothing else (from source
    addresses 127.0.0.2, .3, ...: 20,000 each, below the ephemeral port range), hold them until
    ``stop``, then close them. Puts (opened, refused or timed out)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks, failed = [], 0
    for i in range(first, first + count):
        s = socket.socket()
        try:
            s.settimeout(10)
            s.bind((f"127.0.0.{2 + i // 20000}", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            socks.append(s)
        except OSError:
            s.close()
            failed += 1
    out.put((len(socks), failed))
    ready.set()
    stop.wait()
    for s in socks:
        s.close()


@contextlib.contextmanager
def idle(port: int, n: int, per_process: int = 15_000) -> Iterator[tuple[int, int]]:
    """n idle connections, opened by as many processes as one process's open-file limit needs;
    yields (opened, failed) once all are open, closes them on exit. The server closes the
    quietest connections beyond its connection limit, so "opened" counts connections that were
    established, not ones still open."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    out: Queue[tuple[int, int]] = ctx.Queue()
    workers = []
    for first in range(0, n, per_process):
        ready = ctx.Event()
        p = ctx.Process(
            target=_hold_idle,
            args=(port, first, min(per_process, n - first), ready, stop, out),
            daemon=True,
        )
        p.start()
        workers.append((p, ready))
    try:
        for _, ready in workers:
            if not ready.wait(600):
                raise SystemExit("idle connections: a worker did not finish opening")
        opened = failed = 0
        for _ in workers:
            o, f = out.get(timeout=10)
            opened, failed = opened + o, failed + f
        yield opened, failed
    finally:
        stop.set()
        for p, _ in workers:
            p.join(60)


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


STREAM = "/credit.scoring.v1.Scoring/ScoreStream"


def settled(sock: socket.socket, conn: h2.connection.H2Connection, window: int) -> None:
    """Read the server's SETTINGS (stream limit) and window updates until ``window`` bytes may
    be sent on the connection (or 5 s passed)."""
    sock.settimeout(0.2)
    end = time.monotonic() + 5
    settings = False
    while time.monotonic() < end and not (settings and conn.outbound_flow_control_window >= window):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        for event in conn.receive_data(data):
            settings |= isinstance(event, h2.events.RemoteSettingsChanged)
        sock.sendall(conn.data_to_send())
    sock.settimeout(10)


def held_streams(
    port: int,
    connections: int,
    per: int,
    hold: float,
    request: pb.ScoreRequest,
    during: Callable[[], None] = lambda: None,
) -> dict[str, int]:
    """connections x per raw HTTP/2 streams, each sending one valid message and not ending; all
    stay open until every one has its first answer (an answer message, or trailers when the
    server refused it), then ``during()`` is called and they stay ``hold`` s more; then the
    connections close. Returns the first
    answers by kind (``answer``, or ``grpc-status N``)."""
    codes: dict[str, int] = {}
    body = pb.ScoreRequest(request_id="h", applicant=request.applicant).SerializeToString()
    message = struct.pack(">BI", 0, len(body)) + body
    open_: list[tuple[socket.socket, h2.connection.H2Connection]] = []
    waiting: dict[int, set[int]] = {}  # connection index -> streams without a first answer
    for c in range(connections):
        sock, conn = raw_connection(port)
        settled(sock, conn, per * len(message))
        streams = set()
        for _ in range(per):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, grpc_headers(STREAM))
            conn.send_data(stream, message)
            streams.add(stream)
        sock.sendall(conn.data_to_send())
        sock.setblocking(False)
        open_.append((sock, conn))
        waiting[c] = streams

    def first(c: int, stream: int, kind: str) -> None:
        if stream in waiting[c]:
            waiting[c].discard(stream)
            codes[kind] = codes.get(kind, 0) + 1

    def events(c: int, data: bytes) -> None:
        conn = open_[c][1]
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                first(c, event.stream_id, "answer")
            elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                status = dict(event.headers).get(b"grpc-status")
                if status is not None:
                    first(c, event.stream_id, f"grpc-status {status.decode()}")
            elif isinstance(event, h2.events.StreamReset):
                first(c, event.stream_id, f"reset {event.error_code}")

    def pump(until: float, stop_when_answered: bool) -> None:
        live = {sock: c for c, (sock, _) in enumerate(open_)}
        while live and time.monotonic() < until:
            if stop_when_answered and not any(waiting.values()):
                return
            ready, _, _ = select.select(list(live), [], [], 0.1)
            for sock in ready:
                c = live[sock]
                try:
                    data = sock.recv(1 << 20)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the server: what waited on it gets no answer
                    for stream in list(waiting[c]):
                        first(c, stream, "connection closed")
                    del live[sock]
                    continue
                events(c, data)
                with contextlib.suppress(OSError):
                    sock.sendall(open_[c][1].data_to_send())

    pump(time.monotonic() + 120, stop_when_answered=True)
    unanswered = sum(len(streams) for streams in waiting.values())
    if unanswered:
        codes["no answer in 120 s"] = unanswered
    during()
    pump(time.monotonic() + hold, stop_when_answered=False)
    for sock, _ in open_:
        sock.close()
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

    def watch(name: str, attack: str) -> contextlib.AbstractContextManager[Probe]:
        return observed(name, attack, pid, port, requests, rows)

    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    with watch("baseline", "none"):
        time.sleep(2)
    if "idle" in only:
        with (
            watch("idle", f"{args.idle:,} idle connections (preface only)") as probe,
            idle(port, args.idle) as (opened, failed),
        ):
            probe.settled()
        notes.append(
            f"idle connections: {opened:,} established, {failed:,} refused or timed out; the"
            " server keeps at most its connection limit open (open-file limit less 512) and"
            " closes the quietest beyond it"
        )
    if "bodies" in only:
        with watch("bodies", f"{args.bodies} unfinished 4 MB bodies (1 MB sent)") as probe:
            socks = unfinished_bodies(port, args.bodies)
            probe.settled()
            for sock in socks:
                sock.close()
    if "prefix" in only:
        took = stalled_prefix(port)
        notes.append(f"a call announcing a 4 GiB message was answered after {took:.3f} s")
    if "ping" in only:
        with watch("ping", "PING flood, 5 s"):
            pings = ping_flood(port, 5)
        notes.append(f"PING flood: {pings:,} PING frames sent in 5 s")
    if "reset" in only:
        with watch("reset", "rapid reset, up to 10,000 streams"):
            resets = reset_flood(port, 10_000)
        notes.append(f"rapid reset: {resets:,} streams opened and reset before the server closed")
    if "held" in only:
        connections, per = (int(x) for x in args.streams.split("x"))
        with watch("held", f"{connections} connections x {per} held streams") as probe:
            stop = threading.Event()

            def sampling() -> None:
                while not stop.wait(0.5):
                    probe.sample()

            sampler = threading.Thread(target=sampling, daemon=True)
            sampler.start()
            codes = held_streams(port, connections, per, 5.0, requests[0], probe.settled)
            stop.set()
            sampler.join()
        notes.append(
            f"held streams: first answers by kind {codes} (raw HTTP/2: each stream sends one"
            " message and stays open; the server keeps at most ALTSCORE_MAX_OPEN_STREAMS ="
            " 4,096 open and answers the others RESOURCE_EXHAUSTED, grpc-status 8)"
        )
    if "headers" in only:
        with watch("headers", "malformed grpc-timeout / grpc-encoding br"):
            statuses = malformed_headers(port)
        notes.append(f"malformed headers (abc, 11-digit timeout, br): grpc-status {statuses}")
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=50_000, help="idle connections")
    parser.add_argument("--bodies", type=int, default=200, help="unfinished 4 MB bodies")
    parser.add_argument("--streams", default="20x1024", help="held streams: CONNxSTREAMS")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})"
    )
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
            " scoring in a loop on its own connection (one call every 2 ms, in its own process)"
            " while each attack runs, and a new client's first call while the attack is held"
            " (idle, bodies, held) or right after it (the floods); the attacker, victim and"
            " server share the 2 cores. Open-file limit"
            f" {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,} per process: the idle"
            " connections come from several attacker processes, and the server keeps at most"
            " its connection limit open. RSS after: 8 s after the attack's connections closed"
            " (the server gives freed memory back every 5 s when connections closed).",
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
