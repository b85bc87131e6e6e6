"""The online feature store.

The read contract runs against both backends of the data plane's client (the server's own code,
``feature_kernels.FeatureStoreClient``): a real redis-server (written by ``RedisFeatureStore``,
the training side's publisher) and the embedded store. Then the publisher's own rules, and the
Redis failure behaviour (server killed, frozen, restarted empty)."""

from __future__ import annotations

import math
import random
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from credit_core import CreditError, FeatureStoreError
from credit_core.feature_store import FeatureRow, RedisFeatureStore, data_key, pointer_key
from feature_kernels import FeatureStoreClient, StoreError
from tests.redis_server import RedisServer


@dataclass
class Backend:
    """A backend under test: how rows get in (the training publisher for Redis, the control
    plane's fill for the embedded store) and the data plane's reader."""

    name: str
    reader: FeatureStoreClient
    publish_rows: Callable[[str, str, list[tuple[str, dict[str, Any]]], int | None], int]
    activate: Callable[[str, str], None]

    def read(self, ns: str, ids: list[str], timeout: float = 2.0) -> list[FeatureRow | None]:
        return self.reader.get_many(ns, ids, timeout)


def redis_backend(url: str) -> Backend:
    publisher = RedisFeatureStore(url)
    return Backend(
        "redis",
        FeatureStoreClient(url),
        lambda ns, v, rows, ttl: publisher.publish(ns, v, rows, ttl_seconds=ttl),
        publisher.activate,
    )


def embedded_backend() -> Backend:
    store = FeatureStoreClient()
    return Backend(
        "embedded",
        store,
        lambda ns, v, rows, ttl: store.publish(ns, v, rows, ttl_seconds=ttl),
        store.activate,
    )


@pytest.fixture(params=["redis", "embedded"])
def store(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        return redis_backend(request.getfixturevalue("redis_url"))
    return embedded_backend()


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def rows_for(ids: list[str], **features: float | str) -> list[tuple[str, dict[str, Any]]]:
    return [(i, {"id": i, **features}) for i in ids]


def publish_active(
    store: Backend, ns: str, version: str, rows: list[tuple[str, dict[str, Any]]]
) -> None:
    assert store.publish_rows(ns, version, rows, 600) == len(rows)
    store.activate(ns, version)


def bits(x: float) -> bytes:
    return struct.pack(">d", x)


# --- the read contract, both backends ------------------------------------------------------------


def test_values_round_trip_exactly(store: Backend, ns: str) -> None:
    floats: dict[str, float] = {
        "tenth": 0.1,
        "tiny": 1e-300,
        "subnormal": 5e-324,
        "neg_zero": -0.0,
        "max": 1.7976931348623157e308,
        "third": 1 / 3,
        "big_int": 2.0**53,
        "neg_big_int": -(2.0**62),
    }
    strings = {
        "empty": "",
        "accents": "Ñandú crème brûlée",
        "cjk": "信用評分",
        "emoji": "🚀💳",
        "quotes": 'a "b" \\ c\n\t:',
        "number_like": "1.5",
    }
    ints = {"int": 123456789012345678, "zero": 0, "neg": -7}
    row: dict[str, Any] = {**floats, **strings, **ints}
    publish_active(store, ns, "v1", [("ent-1", row), ("日本-2", {"x": 0.1})])

    got = store.read(ns, ["ent-1", "日本-2"])
    first = got[0]
    assert first is not None
    assert set(first) == set(row)
    for name, value in floats.items():
        out = first[name]
        assert isinstance(out, float), name
        assert bits(out) == bits(value), name
    for name, text in strings.items():
        assert first[name] == text
        assert isinstance(first[name], str)
    for name, number in ints.items():
        out = first[name]
        assert isinstance(out, float)
        assert bits(out) == bits(float(number))
    assert got[1] == {"x": 0.1}


def test_unknown_entities_are_none_and_order_follows_ids(store: Backend, ns: str) -> None:
    known = [f"e{i}" for i in range(20)]
    publish_active(store, ns, "v1", [(i, {"n": float(k)}) for k, i in enumerate(known)])
    ids = [*known, "missing-1", "e3", "missing-2", "e3"]
    random.Random(7).shuffle(ids)

    got = store.read(ns, ids)

    assert len(got) == len(ids)
    for entity_id, row in zip(ids, got, strict=True):
        if entity_id.startswith("missing"):
            assert row is None
        else:
            assert row == {"n": float(known.index(entity_id))}
    assert store.read(ns, []) == []


def test_without_an_active_version_the_store_fails(store: Backend, ns: str) -> None:
    """A store with nothing active (never published, or restarted empty) is a failure of the
    store, never 'every applicant is new'."""
    with pytest.raises(StoreError, match="no active version"):
        store.read(ns, ["a", "b"])
    store.publish_rows(ns, "v1", [("a", {"x": 1.0})], 600)
    with pytest.raises(StoreError, match="no active version"):
        store.read(ns, ["a", "b"])
    store.activate(ns, "v1")
    assert store.read(ns, ["a", "b"]) == [{"x": 1.0}, None]


def test_versions_switch_only_on_activate(store: Backend, ns: str) -> None:
    ids = [f"e{i}" for i in range(50)]
    publish_active(store, ns, "v1", rows_for(ids, version="v1"))

    def versions() -> set[float | str | None]:
        got = store.read(ns, ids, 1.0)
        assert all(row is not None and row["id"] == i for i, row in zip(ids, got, strict=True))
        return {row["version"] for row in got if row is not None}

    assert versions() == {"v1"}
    # v2 is written but not active: invisible, v1 stays readable
    store.publish_rows(ns, "v2", rows_for(ids, version="v2"), 600)
    assert versions() == {"v1"}
    store.activate(ns, "v2")  # the very next read sees all of v2
    assert versions() == {"v2"}
    store.activate(ns, "v1")  # rollback: v1 is still there
    assert versions() == {"v1"}


def test_publishing_into_the_active_version_is_refused(store: Backend, ns: str) -> None:
    publish_active(store, ns, "v1", [("a", {"x": 1.0})])
    with pytest.raises(ValueError, match="active"):
        store.publish_rows(ns, "v1", [("a", {"x": 2.0})], 600)
    assert store.read(ns, ["a"]) == [{"x": 1.0}]


def test_a_reader_never_sees_a_mix_of_versions(store: Backend, ns: str) -> None:
    """A publisher thread writes and activates v1..v8 while reads run without pause."""
    ids = [f"e{i}" for i in range(200)]
    publish_active(store, ns, "v0", rows_for(ids, version=0.0))
    done = threading.Event()
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            for k in range(1, 9):
                store.publish_rows(ns, f"v{k}", rows_for(ids, version=float(k)), 600)
                store.activate(ns, f"v{k}")
                time.sleep(0.005)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    seen: list[float] = []
    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        while not done.is_set():
            got = store.read(ns, ids, 1.0)
            versions = {row["version"] for row in got if row is not None}
            assert None not in got
            assert len(versions) == 1, versions
            seen.append(float(versions.pop()))
            time.sleep(0.001)
    finally:
        thread.join()
    assert not errors
    assert seen == sorted(seen)  # never back to an older version
    assert len(set(seen)) > 2  # the reads did run across the switches
    assert store.read(ns, ids[:1])[0] == {"id": "e0", "version": 8.0}


def test_rows_expire_after_their_ttl(store: Backend, ns: str) -> None:
    store.publish_rows(ns, "v1", [("short", {"x": 1.0})], 1)
    store.publish_rows(ns, "v1", [("long", {"x": 2.0})], 60)
    store.activate(ns, "v1")
    assert store.read(ns, ["short", "long"]) == [{"x": 1.0}, {"x": 2.0}]
    time.sleep(1.5)
    assert store.read(ns, ["short", "long"]) == [None, {"x": 2.0}]


def test_ten_thousand_rows(store: Backend, ns: str) -> None:
    n = 10_000
    publish_active(
        store, ns, "big", [(f"e{i}", {"i": float(i), "s": f"s{i % 7}"}) for i in range(n)]
    )
    got = store.read(ns, [f"e{i}" for i in range(n)], timeout=5.0)
    assert got == [{"i": float(i), "s": f"s{i % 7}"} for i in range(n)]


def test_concurrent_reads(store: Backend, ns: str) -> None:
    ids = [f"e{i}" for i in range(300)]
    publish_active(store, ns, "v1", [(i, {"i": float(k)}) for k, i in enumerate(ids)])
    chunks = [ids[k : k + 10] for k in range(0, len(ids), 10)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: store.read(ns, c, 2.0), chunks))
    flat = [row for answer in answers for row in answer]
    assert flat == [{"i": float(k)} for k in range(len(ids))]


def test_bad_arguments(store: Backend, ns: str) -> None:
    for bad_ns in ("", "a:b"):
        with pytest.raises(ValueError, match="namespace"):
            store.read(bad_ns, ["a"])
        with pytest.raises(ValueError, match="namespace"):
            store.publish_rows(bad_ns, "v1", [], None)
    for bad_timeout in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout"):
            store.read(ns, ["a"], bad_timeout)
    with pytest.raises(ValueError, match="version"):
        store.publish_rows(ns, "v:1", [], None)
    with pytest.raises(ValueError, match="version"):
        store.activate(ns, "")


# --- the publisher ------------------------------------------------------------------------------


def test_progress_counts_rows_written(redis_url: str, ns: str) -> None:
    publisher = RedisFeatureStore(redis_url)
    calls: list[int] = []
    rows = ((f"e{i}", {"i": float(i)}) for i in range(50))  # any iterable, even a generator

    written = publisher.publish(
        ns, "v1", rows, ttl_seconds=600, batch_size=7, on_progress=calls.append
    )

    assert written == 50
    assert calls == [7, 14, 21, 28, 35, 42, 49, 50]  # rows written so far, after each batch
    assert publisher.publish(ns, "v2", [], ttl_seconds=None, on_progress=calls.append) == 0
    assert calls[-1] == 50  # nothing written, no call


def test_publisher_refuses_what_a_reader_could_not_read(redis_url: str, ns: str) -> None:
    publisher = RedisFeatureStore(redis_url)
    with pytest.raises(ValueError, match="ttl_seconds"):
        publisher.publish(ns, "v1", [], ttl_seconds=0)
    with pytest.raises(ValueError, match="ttl_seconds"):
        publisher.publish(ns, "v1", [], ttl_seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        publisher.publish(ns, "v1", [], ttl_seconds=None, batch_size=0)
    for bad_value in (None, b"bytes", object(), [1.0]):
        with pytest.raises(TypeError, match="feature 'x'"):
            publisher.publish(ns, "v1", [("a", {"x": bad_value})], ttl_seconds=None)  # type: ignore[dict-item]
    for not_finite in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="leave a missing value out"):
            publisher.publish(ns, "v1", [("a", {"x": not_finite})], ttl_seconds=None)
    with pytest.raises(ValueError, match="UTF-8"):
        publisher.publish(ns, "v1", [("a", {"x": "\ud800"})], ttl_seconds=None)
    with pytest.raises(TypeError, match="entity id"):
        publisher.publish(ns, "v1", [(1, {"x": 1.0})], ttl_seconds=None)  # type: ignore[list-item]


def test_bad_urls() -> None:
    for bad in ("", "http://localhost:6379", "redis://h:notaport/0"):
        with pytest.raises(FeatureStoreError, match="bad Redis URL"):
            RedisFeatureStore(bad)
        with pytest.raises(ValueError, match="Redis URL"):
            FeatureStoreClient(bad)
    with pytest.raises(FeatureStoreError) as info:
        RedisFeatureStore("ftp://user:s3cret@h:1/0")
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="Redis URL") as raised:
        FeatureStoreClient("ftp://user:s3cret@h:1/0")
    assert "s3cret" not in str(raised.value)
    assert issubclass(FeatureStoreError, CreditError)


# --- Redis specifics ---------------------------------------------------------------------------


def test_redis_key_layout(redis_url: str, ns: str) -> None:
    publisher = RedisFeatureStore(redis_url)
    publisher.publish(ns, "v1", [("A-1", {"n": 0.1, "region": "north"})], ttl_seconds=600)
    publisher.activate(ns, "v1")
    assert pointer_key(ns) == f"altscore:fs:{ns}:active"
    assert data_key(ns, "v1", "A-1") == f"altscore:fs:{ns}:v1:A-1"
    with redis.Redis.from_url(redis_url) as r:
        assert r.get(f"altscore:fs:{ns}:active") == b"v1"
        assert r.get(f"altscore:fs:{ns}:v1:A-1") == b'{"n":0.1,"region":"north"}'
        assert 590 < int(r.ttl(f"altscore:fs:{ns}:v1:A-1")) <= 600
        assert int(r.ttl(f"altscore:fs:{ns}:active")) == -1  # the pointer never expires
    assert FeatureStoreClient(redis_url).get_many(ns, ["A-1"], 1.0) == [
        {"n": 0.1, "region": "north"}
    ]
    publisher.close()


def command_stats(r: redis.Redis) -> dict[str, int]:
    """Commands the server has processed: all, GET, MGET."""
    info: dict[str, Any] = r.info("all")
    return {
        "total": int(info["total_commands_processed"]),
        "get": int(info.get("cmdstat_get", {}).get("calls", 0)),
        "mget": int(info.get("cmdstat_mget", {}).get("calls", 0)),
    }


def test_redis_get_many_is_one_round_trip(redis_url: str, ns: str) -> None:
    backend = redis_backend(redis_url)
    ids = [f"e{i}" for i in range(100)]
    publish_active(backend, ns, "v1", [(i, {"x": 1.0}) for i in ids])

    backend.read(ns, ids[:1])  # connect, learn the active version
    with redis.Redis.from_url(redis_url) as r:
        before = command_stats(r)
        got = backend.read(ns, ids)
        after = command_stats(r)
    assert got == [{"x": 1.0}] * 100
    delta = {k: after[k] - before[k] for k in before}
    # GET pointer + MGET of 100 keys, sent together (one round trip)
    assert delta["get"] == 1
    assert delta["mget"] == 1
    assert delta["total"] <= 3  # GET, MGET and the first INFO itself


@pytest.mark.parametrize("raw", [b"\xff not json", b"{", b"42", b'"text"', b"[1]", b"{},{}"])
def test_redis_corrupt_value_is_a_store_error(redis_url: str, ns: str, raw: bytes) -> None:
    backend = redis_backend(redis_url)
    publish_active(backend, ns, "v1", [("a", {"x": 1.0})])
    with redis.Redis.from_url(redis_url) as r:
        r.set(data_key(ns, "v1", "b"), raw)
    with pytest.raises(StoreError, match="corrupt value"):
        backend.read(ns, ["a", "b"])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, free to kill or freeze."""
    with RedisServer(workdir=tmp_path) as server:
        yield server


def test_redis_concurrent_reads_are_coalesced_and_fail_alone(
    own_redis: RedisServer, ns: str
) -> None:
    """Reads that arrive while one is in flight go to Redis together, as one GET + MGET pair;
    each still gets exactly its own rows, and a corrupt value fails only the reads that asked
    for it."""
    backend = redis_backend(own_redis.url)
    ids = [f"e{i}" for i in range(40)]
    publish_active(backend, ns, "v1", [(i, {"x": float(n)}) for n, i in enumerate(ids)])
    with redis.Redis.from_url(own_redis.url) as r:
        r.set(data_key(ns, "v1", "bad"), b"{")
    backend.read(ns, ids[:1])  # connect, learn the active version
    asks = [
        [ids[k], ids[(7 * k) % 40], "unknown"] + (["bad"] if k % 5 == 0 else []) for k in range(16)
    ]

    def attempt(ask: list[str]) -> list[FeatureRow | None] | str:
        try:
            return backend.read(ns, ask, timeout=10.0)
        except StoreError as e:
            return str(e)

    with redis.Redis.from_url(own_redis.url) as r:
        before = command_stats(r)
    with ThreadPoolExecutor(len(asks)) as pool:
        with own_redis.paused():  # the first read waits in flight, the others queue behind it
            futures = [pool.submit(attempt, ask) for ask in asks]
            time.sleep(0.5)
        results = [f.result(timeout=20) for f in futures]
    with redis.Redis.from_url(own_redis.url) as r:
        after = command_stats(r)

    for k, (ask, got) in enumerate(zip(asks, results, strict=True)):
        if "bad" in ask:
            assert isinstance(got, str), k
            assert f"corrupt value under altscore:fs:{ns}:v1:bad" in got, k
        else:
            assert got == [{"x": float(k)}, {"x": float((7 * k) % 40)}, None], k
    # the first read alone, then the fifteen that waited, in one pair
    assert after["get"] - before["get"] == 2
    assert after["mget"] - before["mget"] == 2


def timed_failure(
    reader: FeatureStoreClient, port: int, ns: str, ids: list[str], seconds: float
) -> float:
    """Seconds until ``get_many`` with a budget of ``seconds`` raised ``StoreError``."""
    t0 = time.perf_counter()
    with pytest.raises(StoreError) as info:
        reader.get_many(ns, ids, seconds)
    elapsed = time.perf_counter() - t0
    assert f"127.0.0.1:{port}" in str(info.value)
    return elapsed


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_redis_killed_server_fails_fast_and_recovers(own_redis: RedisServer, ns: str) -> None:
    backend = redis_backend(own_redis.url)
    publisher = RedisFeatureStore(own_redis.url)
    ids = ["a", "b"]
    publish_active(backend, ns, "v1", [("a", {"x": 1.0}), ("b", {"x": 2.0})])
    assert backend.read(ns, ids) == [{"x": 1.0}, {"x": 2.0}]  # connected
    own_redis.kill()
    for timeout in (0.2, 0.05):
        elapsed = timed_failure(backend.reader, _port(own_redis.url), ns, ids, timeout)
        assert elapsed < timeout + 0.05
    for call in (
        lambda: publisher.active_version(ns),
        lambda: publisher.activate(ns, "v2"),
        lambda: publisher.publish(ns, "v2", [("a", {"x": 3.0})], ttl_seconds=60),
    ):
        with pytest.raises(FeatureStoreError, match="ConnectionError"):
            call()

    own_redis.restart()  # same port, empty (no persistence): the same reader recovers
    deadline = time.monotonic() + 5
    while True:  # reconnecting: a failure, then the empty store is seen for what it is
        try:
            backend.read(ns, ids, 1.0)
        except StoreError as e:
            if "no active version" in str(e):
                break
        assert time.monotonic() < deadline, "the reader did not reconnect"
        time.sleep(0.05)
    publish_active(backend, ns, "v2", [("a", {"x": 3.0})])
    assert backend.read(ns, ids) == [{"x": 3.0}, None]


def test_redis_frozen_server_times_out_and_recovers(own_redis: RedisServer, ns: str) -> None:
    backend = redis_backend(own_redis.url)
    ids = [f"e{i}" for i in range(10)]
    publish_active(backend, ns, "v1", [(i, {"i": float(k)}) for k, i in enumerate(ids)])
    expected: list[Mapping[str, float]] = [{"i": float(k)} for k in range(len(ids))]
    timeout = 0.05
    port = _port(own_redis.url)
    assert backend.read(ns, ids, 1.0) == expected  # connected
    fresh = FeatureStoreClient(own_redis.url)  # a reader that must open a new connection
    with own_redis.paused():
        for _ in range(3):
            assert timed_failure(backend.reader, port, ns, ids, timeout) < timeout + 0.05
            assert timed_failure(fresh, port, ns, ids, timeout) < timeout + 0.05
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(backend.read, ns, ids[k:], timeout) for k in range(5)]
            for f in futures:
                with pytest.raises(StoreError):
                    f.result()
    # the server answers the frozen requests late: those answers must not leak into new calls,
    # so check every answer against its own ids
    for k in range(len(ids)):
        assert backend.read(ns, ids[k:], 1.0) == expected[k:]
        assert fresh.get_many(ns, ids[:k], 1.0) == expected[:k]


def test_redis_cluster_reads_across_slots(tmp_path: Path, ns: str) -> None:
    """A Redis Cluster of three masters: the publisher writes every key to its slot's node, and
    the data plane's client reads a request's entities (many slots) and the pointer in one
    lookup."""
    from tests.redis_server import RedisCluster

    cluster = RedisCluster(tmp_path).start()
    try:
        publisher = RedisFeatureStore(cluster.urls, cluster=True)
        ids = [f"customer-{i}" for i in range(200)]
        assert (
            publisher.publish(
                ns, "v1", [(i, {"n": float(k)}) for k, i in enumerate(ids)], ttl_seconds=600
            )
            == 200
        )
        publisher.activate(ns, "v1")
        reader = FeatureStoreClient(cluster.urls, cluster=True)
        got = reader.get_many(ns, [*ids, "unknown"], 2.0)
        assert got == [{"n": float(k)} for k in range(200)] + [None]
        publisher.publish(ns, "v2", [("customer-0", {"n": -1.0})], ttl_seconds=600)
        publisher.activate(ns, "v2")
        assert reader.get_many(ns, ["customer-0", "customer-1"], 2.0) == [{"n": -1.0}, None]
        publisher.close()
    finally:
        cluster.close()
