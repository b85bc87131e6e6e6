"""Bounds a hostile or overloaded client cannot push the server past (issue 13, point 3), on a
real server process with small limits."""

from __future__ import annotations

import queue
import socket
import struct
import time
import urllib.parse
from collections.abc import Iterator

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc._proto import scoring_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess, TrainedModel, health_status, metric, start_server
from tests.scoring_server.test_grpc_e2e import request


@pytest.fixture(scope="module")
def limited(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = start_server(
        trained.state_dir,
        tmp_path_factory.mktemp("logs") / "limited.log",
        wait_serving=True,
        ALTSCORE_MAX_IN_FLIGHT_CALLS="2",
        ALTSCORE_MAX_OPEN_STREAMS="2",
        ALTSCORE_CALL_TIMEOUT_SECONDS="2",
        ALTSCORE_RETRY_PUSHBACK_MS="250",
    )
    yield srv
    srv.stop()


class HeldStream:
    """A ScoreStream kept open until :meth:`close`."""

    def __init__(self, stub: pb_grpc.ScoringStub, name: str) -> None:
        self.requests: queue.Queue[pb.ScoreRequest | None] = queue.Queue()
        self.answers = stub.ScoreStream(iter(self.requests.get, None), timeout=30)
        self.requests.put(request(f"{name}-0"))
        first = next(self.answers)
        assert first.WhichOneof("result") == "response"

    def close(self) -> None:
        self.requests.put(None)
        for _ in self.answers:
            pass


def eventually_scored(stub: pb_grpc.ScoringStub, request_id: str, within: float = 5.0) -> None:
    """Score once the server has room again (RESOURCE_EXHAUSTED until then, nothing else)."""
    deadline = time.monotonic() + within
    while True:
        try:
            stub.Score(request(request_id), timeout=5)
            return
        except grpc.RpcError as e:
            code = e.code()
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
            pytest.fail(f"{request_id}: {code} after {within} s")
        time.sleep(0.05)


def stalled_call(
    port: int, *extra: tuple[str, str]
) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A unary Score call whose body never finishes (raw HTTP/2: no client-side timer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
            (":path", "/credit.scoring.v1.Scoring/Score"),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra,
        ],
    )  # fmt: skip
    conn.send_data(stream, struct.pack(">BI", 0, 1000) + b"\0" * 10)  # 10 of 1,000 bytes
    sock.sendall(conn.data_to_send())
    return sock, conn


def stalled_calls(port: int, n: int) -> list[socket.socket]:
    """n unary Score calls whose bodies never finish: each holds a place."""
    return [stalled_call(port)[0] for _ in range(n)]


def status_of(
    sock: socket.socket, conn: h2.connection.H2Connection, within: float
) -> tuple[int, str]:
    """The grpc-status and grpc-message the server ends the call with (-1: none in time)."""
    sock.settimeout(within)
    try:
        while data := sock.recv(1 << 16):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                    if "grpc-status" in headers:
                        return int(headers["grpc-status"]), headers.get("grpc-message", "")
            sock.sendall(conn.data_to_send())
    except TimeoutError:
        pass
    return -1, ""


def test_unary_calls_beyond_the_in_flight_limit_are_shed_with_a_pushback(
    limited: ServerProcess,
) -> None:
    with grpc.insecure_channel(limited.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        assert stub.Score(request("before"), timeout=5).pd > 0
        before = metric(limited, "credit_scoring_calls_shed_total", kind="calls")
        held = stalled_calls(limited.grpc_port, 2)
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(request("shed"), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 calls in flight" in (info.value.details() or "")
        trailers = dict(info.value.trailing_metadata() or ())
        assert trailers.get("grpc-retry-pushback-ms") == "250"
        assert metric(limited, "credit_scoring_calls_shed_total", kind="calls") == before + 1
        assert metric(limited, "grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED") >= 1
        # health is never shed: a busy server still says it is serving; streams have their own
        # bound, so they are still served
        assert health_status(limited.target) == 1
        stream = HeldStream(stub, "beside")
        stream.close()
        for sock in held:
            sock.close()  # the stalled calls end: their places are given back
        eventually_scored(stub, "after")


def test_a_stalled_request_body_is_cut_off_at_the_call_timeout(limited: ServerProcess) -> None:
    """Clients that never finish their request bodies hold no place past the call timeout
    (2 s here, 30 s by default): the server ends those calls itself, DEADLINE_EXCEEDED."""
    held = [stalled_call(limited.grpc_port) for _ in range(2)]
    try:
        started = time.monotonic()
        with grpc.insecure_channel(limited.target) as ch:
            eventually_scored(pb_grpc.ScoringStub(ch), "after-stall", within=8.0)
        assert time.monotonic() - started >= 1.0  # shed until the timeout freed the places
        code, message = status_of(*held[0], within=5)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (code, message)
        assert "ALTSCORE_CALL_TIMEOUT_SECONDS" in urllib.parse.unquote(message)
    finally:
        for sock, _ in held:
            sock.close()


@pytest.mark.parametrize("timeout", ["300m", "1n"])
def test_a_stalled_body_at_its_deadline_is_deadline_exceeded(
    limited: ServerProcess, timeout: str
) -> None:
    """The client's grpc-timeout passes while the body is still being read: DEADLINE_EXCEEDED
    (tonic's own timer answered CANCELLED "Timeout expired"), at the deadline."""
    started = time.monotonic()
    sock, conn = stalled_call(limited.grpc_port, ("grpc-timeout", timeout))
    try:
        code, message = status_of(sock, conn, within=5)
        took = time.monotonic() - started
    finally:
        sock.close()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (code, message)
    assert "deadline" in urllib.parse.unquote(message)
    assert took < 1.5
    if timeout == "300m":
        assert took >= 0.25


def test_streams_beyond_their_limit_are_shed_and_unary_calls_go_on(
    limited: ServerProcess,
) -> None:
    with grpc.insecure_channel(limited.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        held = [HeldStream(stub, f"held-{i}") for i in range(2)]
        with pytest.raises(grpc.RpcError) as info:
            HeldStream(stub, "third")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 streams in flight" in (info.value.details() or "")
        assert metric(limited, "credit_scoring_calls_shed_total", kind="streams") >= 1
        assert stub.Score(request("unary-beside-streams"), timeout=5).pd > 0
        for h in held:
            h.close()
        HeldStream(stub, "again").close()  # a place is free again


def test_a_client_that_goes_away_gives_its_place_back(limited: ServerProcess) -> None:
    """Streams whose client vanished without closing them do not hold the bound."""
    gone = grpc.insecure_channel(limited.target)
    stub = pb_grpc.ScoringStub(gone)
    held = [HeldStream(stub, f"abandoned-{i}") for i in range(2)]
    gone.close()  # the connection goes with its streams open
    del held
    with grpc.insecure_channel(limited.target) as ch:
        eventually_scored(pb_grpc.ScoringStub(ch), "after-abandon")


def test_an_oversized_header_list_is_refused_and_other_calls_go_on(limited: ServerProcess) -> None:
    """Above ``ALTSCORE_MAX_HEADER_LIST_BYTES`` (16 KiB) a call is refused by the HTTP/2 layer
    before any gRPC work (HTTP 431, which gRPC clients report as UNKNOWN by the spec's HTTP
    mapping); the same connection and other clients go on."""
    with grpc.insecure_channel(limited.target) as ch:
        stub = pb_grpc.ScoringStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(request("big"), timeout=5, metadata=[("x-big", "a" * 20_000)])
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "431" in (info.value.details() or "")
        assert stub.Score(request("after-big"), timeout=5).pd > 0
        # within the limit: served
        assert stub.Score(request("fits"), timeout=5, metadata=[("x-fits", "a" * 8_000)]).pd > 0


def closed_by_server(sock: socket.socket, within: float = 2.0) -> bool:
    """Whether the server closes ``sock`` within ``within`` s (what it sent before is read)."""
    sock.settimeout(within)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_connections_beyond_the_limit_make_room_for_new_clients(
    trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With the connection limit reached by idle connections (preface only), a new client is
    still served at once: the connection quiet the longest is closed for it; a client that
    calls keeps its connection throughout. The server's descriptors stay bounded."""
    srv = start_server(
        trained.state_dir,
        tmp_path_factory.mktemp("logs") / "connections.log",
        wait_serving=True,
        ALTSCORE_MAX_CONNECTIONS="40",
    )
    idle: list[socket.socket] = []
    try:
        with grpc.insecure_channel(srv.target) as ch:
            calling = pb_grpc.ScoringStub(ch)
            calling.Score(request("before"), timeout=5)
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", srv.grpc_port), timeout=5)
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                idle.append(s)
                calling.Score(request(f"during-{len(idle)}"), timeout=5)  # never evicted
            started = time.monotonic()
            with grpc.insecure_channel(srv.target) as fresh:
                pb_grpc.ScoringStub(fresh).Score(request("new-client"), timeout=5)
            assert time.monotonic() - started < 1.0
            assert metric(srv, "credit_scoring_connections_open") <= 40
            # 202 connections came, the new client's left by itself, at most 40 stay open
            assert metric(srv, "credit_scoring_connections_evicted_total") >= 202 - 1 - 40
            # the oldest idle ones were closed by the server: their reads end
            closed = sum(closed_by_server(s) for s in idle[:100])
            assert closed >= 90
    finally:
        for s in idle:
            s.close()
        srv.stop()
