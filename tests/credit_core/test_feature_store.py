"""The online feature store contract, run against a real redis-server and the in-memory store;
then the Redis failure behaviour (server killed, server frozen, server restarted)."""

from __future__ import annotations

import asyncio
import math
import random
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from credit_core import CreditError, FeatureStoreError
from credit_core.feature_store import (
    FeaturePublisher,
    FeatureRow,
    FeatureStore,
    InMemoryFeatureStore,
    RedisFeatureStore,
    data_key,
    pointer_key,
    store_from_url,
)
from tests.redis_server import RedisServer

Store = RedisFeatureStore | InMemoryFeatureStore
T = TypeVar("T")


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "redis":
        return RedisFeatureStore(request.getfixturevalue("redis_url"))
    return InMemoryFeatureStore()


@pytest.fixture
def ns() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def run(store: Store, fn: Callable[[], Awaitable[T]]) -> T:
    """Run reads in a fresh event loop and close the store's connections in that same loop."""

    async def body() -> T:
        try:
            return await fn()
        finally:
            await store.close()

    return asyncio.run(body())


def read(store: Store, ns: str, ids: list[str], timeout: float = 2.0) -> list[FeatureRow | None]:
    return run(store, lambda: store.get_many(ns, ids, timeout))


def rows_for(ids: list[str], **features: float | str) -> list[tuple[str, dict[str, float | str]]]:
    return [(i, {"id": i, **features}) for i in ids]


def publish_active(
    store: Store, ns: str, version: str, rows: list[tuple[str, Mapping[str, float | str]]]
) -> None:
    assert store.publish(ns, version, rows, ttl_seconds=600) == len(rows)
    store.activate(ns, version)


def bits(x: float) -> bytes:
    return struct.pack(">d", x)


# --- the contract ------------------------------------------------------------------------------


def test_backends_satisfy_the_protocols(store: Store) -> None:
    reader: FeatureStore = store
    publisher: FeaturePublisher = store
    assert reader is publisher


def test_values_round_trip_exactly(store: Store, ns: str) -> None:
    floats: dict[str, float] = {
        "tenth": 0.1,
        "tiny": 1e-300,
        "subnormal": 5e-324,
        "neg_zero": -0.0,
        "max": 1.7976931348623157e308,
        "third": 1 / 3,
        "big_int": 2.0**53,
        "neg_big_int": -(2.0**62),
        "inf": math.inf,
        "neg_inf": -math.inf,
        "nan": math.nan,
    }
    strings = {
        "empty": "",
        "accents": "Ñandú crème brûlée",
        "cjk": "信用評分",
        "emoji": "🚀💳",
        "quotes": 'a "b" \\ c\n\t:',
        "number_like": "1.5",
        "surrogate": "\ud800",
    }
    ints = {"int": 123456789012345678, "zero": 0, "neg": -7}
    row: dict[str, Any] = {**floats, **strings, **ints}
    publish_active(store, ns, "v1", [("ent-1", row), ("日本-2", {"x": 0.1})])

    got = read(store, ns, ["ent-1", "日本-2"])
    first = got[0]
    assert first is not None
    assert list(first) == list(row)
    for name, value in floats.items():
        out = first[name]
        assert isinstance(out, float), name
        if math.isnan(value):
            assert math.isnan(out)
        else:
            assert bits(out) == bits(value), name
    for name, text in strings.items():
        assert first[name] == text
        assert isinstance(first[name], str)
    for name, number in ints.items():
        out = first[name]
        assert isinstance(out, float)
        assert bits(out) == bits(float(number))
    assert got[1] == {"x": 0.1}


def test_unknown_entities_are_none_and_order_follows_ids(store: Store, ns: str) -> None:
    known = [f"e{i}" for i in range(20)]
    publish_active(store, ns, "v1", [(i, {"n": float(k)}) for k, i in enumerate(known)])
    ids = [*known, "missing-1", "e3", "missing-2", "e3"]
    random.Random(7).shuffle(ids)

    got = read(store, ns, ids)

    assert len(got) == len(ids)
    for entity_id, row in zip(ids, got, strict=True):
        if entity_id.startswith("missing"):
            assert row is None
        else:
            assert row == {"n": float(known.index(entity_id))}
    assert read(store, ns, []) == []


def test_answers_are_copies(store: Store, ns: str) -> None:
    publish_active(store, ns, "v1", [("a", {"x": 1.0})])

    async def twice() -> tuple[FeatureRow | None, FeatureRow | None]:
        first = (await store.get_many(ns, ["a"], 1.0))[0]
        assert first is not None
        first["x"] = 99.0
        first["new"] = "oops"
        return first, (await store.get_many(ns, ["a"], 1.0))[0]

    _, second = run(store, twice)
    assert second == {"x": 1.0}


def test_without_an_active_version_everything_is_none(store: Store, ns: str) -> None:
    assert store.active_version(ns) is None
    assert read(store, ns, ["a", "b"]) == [None, None]
    store.publish(ns, "v1", [("a", {"x": 1.0})], ttl_seconds=600)
    assert store.active_version(ns) is None
    assert read(store, ns, ["a", "b"]) == [None, None]


def test_versions_switch_only_on_activate(store: Store, ns: str) -> None:
    ids = [f"e{i}" for i in range(50)]
    publish_active(store, ns, "v1", rows_for(ids, version="v1"))
    assert store.active_version(ns) == "v1"

    async def scenario() -> None:
        async def versions() -> set[float | str | None]:
            got = await store.get_many(ns, ids, 1.0)
            assert all(row is not None and row["id"] == i for i, row in zip(ids, got, strict=True))
            return {row["version"] for row in got if row is not None}

        assert await versions() == {"v1"}
        # v2 is written but not active: invisible, v1 stays readable
        store.publish(ns, "v2", rows_for(ids, version="v2"), ttl_seconds=600)
        assert store.active_version(ns) == "v1"
        assert await versions() == {"v1"}
        store.activate(ns, "v2")  # the very next read sees all of v2
        assert await versions() == {"v2"}
        assert store.active_version(ns) == "v2"
        store.activate(ns, "v1")  # rollback: v1 is still there
        assert await versions() == {"v1"}

    run(store, scenario)


def test_publishing_into_the_active_version_is_refused(store: Store, ns: str) -> None:
    publish_active(store, ns, "v1", [("a", {"x": 1.0})])
    with pytest.raises(ValueError, match="active"):
        store.publish(ns, "v1", [("a", {"x": 2.0})], ttl_seconds=600)
    assert read(store, ns, ["a"]) == [{"x": 1.0}]


def test_a_reader_never_sees_a_mix_of_versions(store: Store, ns: str) -> None:
    """A publisher thread writes and activates v1..v8 while reads run without pause."""
    ids = [f"e{i}" for i in range(200)]
    publish_active(store, ns, "v0", rows_for(ids, version=0.0))
    done = threading.Event()
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            for k in range(1, 9):
                store.publish(ns, f"v{k}", rows_for(ids, version=float(k)), ttl_seconds=600)
                store.activate(ns, f"v{k}")
                time.sleep(0.005)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    async def reader() -> list[float]:
        seen: list[float] = []
        while not done.is_set():
            got = await store.get_many(ns, ids, 1.0)
            versions = {row["version"] for row in got if row is not None}
            assert None not in got
            assert len(versions) == 1, versions
            seen.append(float(versions.pop()))
            await asyncio.sleep(0.001)  # let the publisher thread have the GIL
        return seen

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        seen = run(store, reader)
    finally:
        thread.join()
    assert not errors
    assert seen == sorted(seen)  # never back to an older version
    assert len(set(seen)) > 2  # the reads did run across the switches
    assert read(store, ns, ids[:1])[0] == {"id": "e0", "version": 8.0}


def test_rows_expire_after_their_ttl(store: Store, ns: str) -> None:
    store.publish(ns, "v1", [("short", {"x": 1.0})], ttl_seconds=1)
    store.publish(ns, "v1", [("long", {"x": 2.0})], ttl_seconds=60)
    store.activate(ns, "v1")
    assert read(store, ns, ["short", "long"]) == [{"x": 1.0}, {"x": 2.0}]
    time.sleep(1.5)
    assert read(store, ns, ["short", "long"]) == [None, {"x": 2.0}]


def test_progress_counts_rows_written(store: Store, ns: str) -> None:
    calls: list[int] = []
    rows = ((f"e{i}", {"i": float(i)}) for i in range(50))  # any iterable, even a generator

    written = store.publish(ns, "v1", rows, ttl_seconds=600, batch_size=7, on_progress=calls.append)

    assert written == 50
    assert calls == [7, 14, 21, 28, 35, 42, 49, 50]  # rows written so far, after each batch
    increments = [b - a for a, b in zip([0, *calls], calls, strict=False)]
    assert all(d > 0 for d in increments)
    assert sum(increments) == written
    assert store.publish(ns, "v2", [], ttl_seconds=None, on_progress=calls.append) == 0
    assert calls[-1] == 50  # nothing written, no call


def test_ten_thousand_rows_in_batches(store: Store, ns: str) -> None:
    calls: list[int] = []
    n = 10_000
    rows = ((f"e{i}", {"i": float(i), "s": f"s{i % 7}"}) for i in range(n))

    assert store.publish(ns, "big", rows, ttl_seconds=600, on_progress=calls.append) == n
    store.activate(ns, "big")

    assert calls == list(range(1000, n + 1, 1000))
    ids = [f"e{i}" for i in range(n)]
    got = read(store, ns, ids, timeout=5.0)
    assert got == [{"i": float(i), "s": f"s{i % 7}"} for i in range(n)]


def test_concurrent_reads(store: Store, ns: str) -> None:
    ids = [f"e{i}" for i in range(300)]
    publish_active(store, ns, "v1", [(i, {"i": float(k)}) for k, i in enumerate(ids)])

    async def many() -> list[list[FeatureRow | None]]:
        chunks = [ids[k : k + 10] for k in range(0, len(ids), 10)]
        return list(await asyncio.gather(*(store.get_many(ns, c, 2.0) for c in chunks)))

    answers = run(store, many)
    flat = [row for answer in answers for row in answer]
    assert flat == [{"i": float(k)} for k in range(len(ids))]


def test_bad_arguments(store: Store, ns: str) -> None:
    async def get(namespace: str, ids: Any, seconds: float) -> list[FeatureRow | None]:
        return await store.get_many(namespace, ids, seconds)

    for bad_ns in ("", "a:b"):
        with pytest.raises(ValueError, match="namespace"):
            run(store, lambda n=bad_ns: get(n, ["a"], 1.0))
        with pytest.raises(ValueError, match="namespace"):
            store.publish(bad_ns, "v1", [], ttl_seconds=None)
    for bad_timeout in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout"):
            run(store, lambda t=bad_timeout: get(ns, ["a"], t))
    with pytest.raises(TypeError, match="sequence"):
        run(store, lambda: get(ns, "abc", 1.0))
    with pytest.raises(ValueError, match="version"):
        store.publish(ns, "v:1", [], ttl_seconds=None)
    with pytest.raises(ValueError, match="version"):
        store.activate(ns, "")
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.publish(ns, "v1", [], ttl_seconds=0)
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.publish(ns, "v1", [], ttl_seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        store.publish(ns, "v1", [], ttl_seconds=None, batch_size=0)
    for bad_value in (None, b"bytes", object(), [1.0]):
        with pytest.raises(TypeError, match="feature 'x'"):
            store.publish(ns, "v1", [("a", {"x": bad_value})], ttl_seconds=None)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="entity id"):
        store.publish(ns, "v1", [(1, {"x": 1.0})], ttl_seconds=None)  # type: ignore[list-item]


def test_store_from_url(redis_url: str) -> None:
    assert isinstance(store_from_url(None), InMemoryFeatureStore)
    assert isinstance(store_from_url(redis_url), RedisFeatureStore)
    for bad in ("", "http://localhost:6379", "redis://h:notaport/0"):
        with pytest.raises(FeatureStoreError, match="bad Redis URL"):
            store_from_url(bad)
    with pytest.raises(FeatureStoreError) as info:
        store_from_url("ftp://user:s3cret@h:1/0")
    assert "s3cret" not in str(info.value)
    assert issubclass(FeatureStoreError, CreditError)


# --- Redis specifics ---------------------------------------------------------------------------


def test_redis_key_layout(redis_url: str, ns: str) -> None:
    store = RedisFeatureStore(redis_url)
    publish_active(store, ns, "v1", [("A-1", {"n": 0.1, "region": "north"})])
    assert pointer_key(ns) == f"altscore:fs:{ns}:active"
    assert data_key(ns, "v1", "A-1") == f"altscore:fs:{ns}:v1:A-1"
    with redis.Redis.from_url(redis_url) as r:
        assert r.get(f"altscore:fs:{ns}:active") == b"v1"
        assert r.get(f"altscore:fs:{ns}:v1:A-1") == b'{"n":0.1,"region":"north"}'
        assert 590 < int(r.ttl(f"altscore:fs:{ns}:v1:A-1")) <= 600
        assert int(r.ttl(f"altscore:fs:{ns}:active")) == -1  # the pointer never expires
    run(store, store.close)


def test_redis_get_many_is_one_round_trip(redis_url: str, ns: str) -> None:
    store = RedisFeatureStore(redis_url)
    ids = [f"e{i}" for i in range(100)]
    publish_active(store, ns, "v1", [(i, {"x": 1.0}) for i in ids])

    def stats(r: redis.Redis) -> dict[str, int]:
        info: dict[str, Any] = r.info("all")
        return {
            "total": int(info["total_commands_processed"]),
            "get": int(info.get("cmdstat_get", {}).get("calls", 0)),
            "mget": int(info.get("cmdstat_mget", {}).get("calls", 0)),
        }

    async def measured() -> tuple[int, dict[str, int]]:
        await store.get_many(ns, ids[:1], 1.0)  # connect, learn the active version
        with redis.Redis.from_url(redis_url) as r:
            before = stats(r)
            got = await store.get_many(ns, ids, 1.0)
            after = stats(r)
        assert got == [{"x": 1.0}] * 100
        return 1, {k: after[k] - before[k] for k in before}

    _, delta = run(store, measured)
    # GET pointer + MGET of 100 keys, written together (one pipelined round trip)
    assert delta["get"] == 1
    assert delta["mget"] == 1
    assert delta["total"] <= 100 + 2
    assert delta["total"] <= 3  # GET, MGET and the first INFO itself


@pytest.mark.parametrize("raw", [b"\xff not json", b"{", b"42", b'"text"', b"[1]", b"{},{}"])
def test_redis_corrupt_value_is_a_store_error(redis_url: str, ns: str, raw: bytes) -> None:
    store = RedisFeatureStore(redis_url)
    publish_active(store, ns, "v1", [("a", {"x": 1.0})])
    with redis.Redis.from_url(redis_url) as r:
        r.set(data_key(ns, "v1", "b"), raw)
    with pytest.raises(FeatureStoreError, match=r"Decode|JSON object"):
        read(store, ns, ["a", "b"])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, free to kill or freeze."""
    with RedisServer(workdir=tmp_path) as server:
        yield server


async def timed_failure(store: RedisFeatureStore, ns: str, ids: list[str], seconds: float) -> float:
    """Seconds until ``get_many`` with a budget of ``seconds`` raised FeatureStoreError."""
    t0 = time.perf_counter()
    with pytest.raises(FeatureStoreError) as info:
        await store.get_many(ns, ids, seconds)
    elapsed = time.perf_counter() - t0
    assert f"127.0.0.1:{store.url.rsplit(':', 1)[1].split('/')[0]}" in str(info.value)
    return elapsed


def test_redis_killed_server_fails_fast_and_recovers(own_redis: RedisServer, ns: str) -> None:
    store = RedisFeatureStore(own_redis.url)
    ids = ["a", "b"]
    publish_active(store, ns, "v1", [("a", {"x": 1.0}), ("b", {"x": 2.0})])

    async def scenario() -> None:
        assert await store.get_many(ns, ids, 1.0) == [{"x": 1.0}, {"x": 2.0}]  # pool is warm
        own_redis.kill()
        for timeout in (0.2, 0.05):
            elapsed = await timed_failure(store, ns, ids, timeout)
            assert elapsed < timeout + 0.05
        for call in (
            lambda: store.active_version(ns),
            lambda: store.activate(ns, "v2"),
            lambda: store.publish(ns, "v2", [("a", {"x": 3.0})], ttl_seconds=60),
        ):
            with pytest.raises(FeatureStoreError, match="ConnectionError"):
                call()

        own_redis.restart()  # same port, empty (no persistence): the same store recovers
        assert await store.get_many(ns, ids, 1.0) == [None, None]
        publish_active(store, ns, "v2", [("a", {"x": 3.0})])
        assert await store.get_many(ns, ids, 1.0) == [{"x": 3.0}, None]

    run(store, scenario)


def test_redis_frozen_server_times_out_and_recovers(own_redis: RedisServer, ns: str) -> None:
    store = RedisFeatureStore(own_redis.url)
    ids = [f"e{i}" for i in range(10)]
    publish_active(store, ns, "v1", [(i, {"i": float(k)}) for k, i in enumerate(ids)])
    expected = [{"i": float(k)} for k in range(len(ids))]
    timeout = 0.05

    async def scenario() -> None:
        assert await store.get_many(ns, ids, 1.0) == expected  # pool is warm
        fresh = RedisFeatureStore(own_redis.url)  # a store that must open a new connection
        try:
            with own_redis.paused():
                for _ in range(3):
                    elapsed = await timed_failure(store, ns, ids, timeout)
                    assert elapsed < timeout + 0.05
                    elapsed = await timed_failure(fresh, ns, ids, timeout)
                    assert elapsed < timeout + 0.05
                results = await asyncio.gather(
                    *(store.get_many(ns, ids[k:], timeout) for k in range(5)),
                    return_exceptions=True,
                )
                assert all(isinstance(r, FeatureStoreError) for r in results)
            # the server answers the frozen requests late: those answers must not leak into new
            # calls, so check every answer against its own ids
            for k in range(len(ids)):
                assert await store.get_many(ns, ids[k:], 1.0) == expected[k:]
                assert await fresh.get_many(ns, ids[:k], 1.0) == expected[:k]
        finally:
            await fresh.close()

    run(store, scenario)
