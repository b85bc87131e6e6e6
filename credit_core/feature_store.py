"""The online feature store, write side: per-entity features (alternative-data aggregates)
published for the scoring server to read.

The training worker publishes one row of features per entity under a *version* (e.g. the feature
spec version plus a run id) and then *activates* it. The read side is the data plane's (Rust:
``feature_kernels.FeatureStoreClient`` is the same client, for tests and tools): it reads the
active version, many entities per round trip, under a hard timeout, from Redis (standalone or
Cluster) or from the embedded store a laptop run fills from the served model's snapshot.

Values
    One entity's features are a ``dict[str, float | str]``: numeric features as ``float`` (ints and
    other real numbers are converted with ``float()`` when published), categorical ones as ``str``.
    Leave a missing feature out of the row (``None`` is refused).

Key layout (Redis; the keys come from the data plane's rule, ``feature_kernels.store_key``)::

    altscore:fs:{namespace}:active                  STRING  name of the active version
    altscore:fs:{namespace}:{version}:{entity_id}   STRING  the entity's features, compact JSON

    e.g. altscore:fs:applicant:gmsc-1.2.0-r42:A-000123 -> {"n_tx_90d":17.0,"region":"north"}

``namespace`` and ``version`` are non-empty and contain no ``:``; ``entity_id`` is any string (it
is the last part of the key). A data key has five parts and the pointer four, so no version name
can collide with the pointer. The value is a JSON object written with ``json.dumps`` (``repr`` of
every float, so floats round-trip bit for bit; numbers and strings stay apart by JSON type;
non-ASCII text is ``\\u``-escaped). Numbers are finite: a missing value is left out of the row.
A serialized string rather than a Redis hash lets one ``MGET`` fetch any number of entities in one
command.

Publishing
    ``publish`` writes a NEW version's keys with pipelined ``SET key value [EX ttl]`` (no
    transaction), ``batch_size`` rows per round trip, and refuses to write into the active version:
    readers never see a version change under them. ``activate`` then switches the pointer with a
    single ``SET``; old versions stay until their TTL ends (pass ``ttl_seconds`` in production, so
    superseded versions clean themselves up). A reader finds no active version until the first
    ``activate``: it treats that as a store failure (degraded answers or ``UNAVAILABLE``), never
    as "every applicant is new".

Failures
    Every Redis error, refused connection and timeout becomes ``FeatureStoreError`` (with the host,
    never the password). Bad arguments (a ``:`` in a namespace, publishing into the active version,
    a value that is neither number nor string) raise ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from credit_core.errors import FeatureStoreError
from feature_kernels import store_key

if TYPE_CHECKING:
    import redis

__all__ = [
    "KEY_PREFIX",
    "FeaturePublisher",
    "FeatureRow",
    "RedisFeatureStore",
    "data_key",
    "pointer_key",
    "rows_from_records",
]

KEY_PREFIX = "altscore:fs"

FeatureRow = dict[str, float | str]


class FeaturePublisher(Protocol):
    """The write side, used by the training worker (synchronous)."""

    def publish(
        self,
        namespace: str,
        version: str,
        rows: Iterable[tuple[str, Mapping[str, float | str]]],
        *,
        ttl_seconds: int | None,
        batch_size: int = 1000,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write ``(entity_id, features)`` rows under a version that is not the active one.
        ``on_progress`` gets the number of rows written so far after each batch. Returns the
        number of rows written."""
        ...

    def activate(self, namespace: str, version: str) -> None: ...

    def active_version(self, namespace: str) -> str | None: ...


def pointer_key(namespace: str) -> str:
    """The key holding ``namespace``'s active version (the data plane's rule)."""
    return store_key(namespace)


def data_key(namespace: str, version: str, entity_id: str) -> str:
    """The key of one entity's features under ``version`` (the data plane's rule)."""
    return store_key(namespace, version) + entity_id


def _check_publish_args(ttl_seconds: int | None, batch_size: int) -> None:
    if ttl_seconds is not None and (
        isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1
    ):
        raise ValueError(f"ttl_seconds must be None or a positive int: {ttl_seconds!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive: {batch_size!r}")


def _normalize(entity_id: str, row: Mapping[str, float | str]) -> FeatureRow:
    """A validated copy: str keys, finite float or str values (other real numbers through
    ``float``). A missing value is left out of the row, never stored as NaN."""
    if not isinstance(entity_id, str):
        raise TypeError(f"entity id must be a str, got {type(entity_id).__name__}")
    out: FeatureRow = {}
    for name, value in row.items():
        if not isinstance(name, str):
            raise TypeError(f"entity {entity_id!r}: feature name {name!r} is not a str")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"entity {entity_id!r}: feature {name!r} is not UTF-8 text") from e
            out[name] = value
            continue
        if isinstance(value, bytes | bytearray) or value is None:
            raise TypeError(f"entity {entity_id!r}: feature {name!r} is {value!r}, not float|str")
        try:
            number = float(value)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"entity {entity_id!r}: feature {name!r} is {value!r}, not float|str"
            ) from e
        if not math.isfinite(number):
            raise ValueError(
                f"entity {entity_id!r}: feature {name!r} is {number!r}: leave a missing value out"
            )
        out[name] = number
    return out


def _encode(row: FeatureRow) -> str:
    return json.dumps(row, separators=(",", ":"))


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return parts._replace(netloc=f"{user}:***@{host}{port}").geturl()
    except ValueError:
        return "<unparsable url>"


class RedisFeatureStore:
    """Publishes features to Redis with redis-py (see the module docstring for the key layout).

    ``connect_timeout`` bounds a TCP connect; ``command_timeout`` bounds one round trip (a
    batch). Connections are made on first use. ``cluster``: ``url`` lists the seed nodes of a
    Redis Cluster, comma-separated (redis-py's cluster client routes every key to its slot).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        command_timeout: float = 30.0,
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self._where = ",".join(_safe_url(u) for u in url.split(","))
        try:
            urls = [u.strip() for u in url.split(",")] if cluster else [url]
            for u in urls:
                parts = urlsplit(u)
                _ = parts.port  # raises on a bad port
                if parts.scheme not in ("redis", "rediss", "unix"):
                    raise ValueError("the scheme must be redis://, rediss:// or unix://")
        except (ValueError, TypeError, AttributeError) as e:
            raise FeatureStoreError(f"feature store: bad Redis URL {self._where!r}: {e}") from e
        for name, value in (("connect", connect_timeout), ("command", command_timeout)):
            if not value > 0:
                raise ValueError(f"{name}_timeout must be a positive number of seconds")
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisFeatureStore({self._where!r})"

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError, ConnectionError) as e:
            raise FeatureStoreError(
                f"feature store {what} at {self._where} failed: {type(e).__name__}: {e}"
            ) from e

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                if self.cluster:
                    from redis.cluster import ClusterNode, RedisCluster

                    nodes = [urlsplit(u.strip()) for u in self.url.split(",")]
                    self._client = cast(
                        "redis.Redis",
                        RedisCluster(
                            startup_nodes=[
                                # redis-py ships ClusterNode.__init__ without annotations
                                ClusterNode(  # type: ignore[no-untyped-call]
                                    n.hostname or "127.0.0.1", n.port or 6379
                                )
                                for n in nodes
                            ],
                            password=nodes[0].password,
                            socket_connect_timeout=self.connect_timeout,
                            socket_timeout=self.command_timeout,
                        ),
                    )
                else:
                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_connect_timeout=self.connect_timeout,
                        socket_timeout=self.command_timeout,
                        retry=Retry(NoBackoff(), 1),
                    )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def active_version(self, namespace: str) -> str | None:
        key = pointer_key(namespace)
        with self._mapped(f"active-version lookup of {namespace!r}"):
            raw = self._redis().get(key)
        return None if raw is None else cast(bytes, raw).decode()

    def activate(self, namespace: str, version: str) -> None:
        key = pointer_key(namespace)
        store_key(namespace, version)  # checks the version name
        with self._mapped(f"activation of {namespace!r} version {version!r}"):
            self._redis().set(key, version)

    def publish(
        self,
        namespace: str,
        version: str,
        rows: Iterable[tuple[str, Mapping[str, float | str]]],
        *,
        ttl_seconds: int | None,
        batch_size: int = 1000,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        prefix = store_key(namespace, version)
        _check_publish_args(ttl_seconds, batch_size)
        if self.active_version(namespace) == version:
            raise ValueError(f"version {version!r} of {namespace!r} is active: publish a new one")
        where = f"publish of {namespace!r} version {version!r}"
        with self._mapped(where):
            pipe = self._redis().pipeline(transaction=False)
        written = 0
        batch: list[tuple[str, FeatureRow]] = []

        def flush() -> None:
            nonlocal written, batch
            for entity_id, row in batch:
                pipe.set(prefix + entity_id, _encode(row), ex=ttl_seconds)
            with self._mapped(where):
                pipe.execute()
            written += len(batch)
            batch = []
            if on_progress is not None:
                on_progress(written)

        for entity_id, row in rows:
            batch.append((entity_id, _normalize(entity_id, row)))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        return written


def rows_from_records(
    records: Iterable[Mapping[str, object]], *, id_field: str, categorical: Collection[str]
) -> Iterator[tuple[str, dict[str, float | str]]]:
    """Store rows from plain records (e.g. a snapshot frame's rows): the id comes from
    ``id_field``; ``None`` and NaN values are left out (missing at serving); categorical values
    become ``str`` and all others ``float``."""
    for record in records:
        values: dict[str, float | str] = {}
        entity_id = ""
        for name, value in record.items():
            if name == id_field:
                entity_id = str(value)
            elif value is None:
                continue
            elif name in categorical:
                values[name] = str(value)
            else:
                number = float(value)  # type: ignore[arg-type]
                if not math.isnan(number):
                    values[name] = number
        yield entity_id, values
