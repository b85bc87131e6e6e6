"""The online feature store: per-entity features (alternative-data aggregates) read at scoring time.

The training worker publishes one row of features per entity under a *version* (e.g. the feature
spec version plus a run id) and then *activates* it; the scoring server reads the active version,
many entities per call, with a hard timeout. Two backends keep the same contract (one test suite
runs against both):

- ``RedisFeatureStore``: production. Reads use ``redis.asyncio``, publishing uses plain (sync)
  ``redis``; connections are made lazily, on first use.
- ``InMemoryFeatureStore``: the embedded default of a laptop run (no ``REDIS_URL``); in-process,
  thread-safe between publishing and reading.

Values
    One entity's features are a ``dict[str, float | str]``: numeric features as ``float`` (ints and
    other real numbers are converted with ``float()`` when published), categorical ones as ``str``.
    Leave a missing feature out of the row (``None`` is refused). Every ``get_many`` answer is a new
    dict: callers may mutate it.

Key layout (Redis)::

    altscore:fs:{namespace}:active                  STRING  name of the active version
    altscore:fs:{namespace}:{version}:{entity_id}   STRING  the entity's features, compact JSON

    e.g. altscore:fs:applicant:gmsc-1.2.0-r42:A-000123 -> {"n_tx_90d":17.0,"region":"north"}

``namespace`` and ``version`` are non-empty and contain no ``:``; ``entity_id`` is any string (it
is the last part of the key). A data key has five parts and the pointer four, so no version name
can collide with the pointer. The value is a JSON object written with ``json.dumps`` (``repr`` of
every float, so floats round-trip bit for bit, ``-0.0``, ``1e-300``, ``NaN`` and infinities
included; numbers and strings stay apart by JSON type; non-ASCII text is ``\\u``-escaped, so any
Python ``str`` round-trips). A serialized string rather than a Redis hash lets one ``MGET`` fetch
any number of entities in one command, and the whole answer is decoded by one call of the C
JSON parser.

Publishing
    ``publish`` writes a NEW version's keys with pipelined ``SET key value [EX ttl]`` (no
    transaction), ``batch_size`` rows per round trip, and refuses to write into the active version:
    readers never see a version change under them. ``activate`` then switches the pointer with a
    single ``SET``; old versions stay until their TTL ends (pass ``ttl_seconds`` in production, so
    superseded versions clean themselves up).

Reads: one round trip, never stale
    ``get_many`` sends ``GET pointer`` and ``MGET`` of the keys under the version it last saw, in
    one pipeline (one network write, one ``execute``). When the pointer still names that version
    (the steady state) that is the answer. When it names another version (just after an
    ``activate``), a second ``MGET`` under the new version follows, and that version is
    remembered; the first read of a namespace in a process also costs two round trips. So a
    switch is seen by the very next read and no time-based pointer cache is needed; and since one
    ``MGET`` reads one version atomically, a reader never gets a mix of two versions in one
    answer. Without an active version every entity is ``None``.

    Redis Cluster: ``MGET`` needs all keys in one hash slot; this adapter targets a standalone Redis
    (or a proxy). A Cluster variant would group the ids by slot.

Failures
    Every Redis error, refused connection and timeout becomes ``FeatureStoreError`` (with the host,
    never the password). ``get_many`` runs under ``asyncio.timeout(timeout)``: a dead or frozen
    server costs at most the caller's timeout. A cancelled read closes its connection (redis-py
    does), so late answers from a server that comes back can never be read by the next call;
    dead pooled connections are replaced on the next call, so the store recovers by itself.
    Bad arguments (a ``:`` in a namespace, a non-positive timeout, publishing into the active
    version, a value that is neither number nor string) raise ``ValueError`` / ``TypeError``.

Event loops: the read client belongs to the running loop that made it. ``await close()`` in that
loop when done; a store used from a new loop makes a new client.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from credit_core.errors import FeatureStoreError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = [
    "KEY_PREFIX",
    "FeaturePublisher",
    "FeatureRow",
    "FeatureStore",
    "InMemoryFeatureStore",
    "RedisFeatureStore",
    "data_key",
    "pointer_key",
    "store_from_url",
]

KEY_PREFIX = "altscore:fs"

FeatureRow = dict[str, float | str]


class FeatureStore(Protocol):
    """The read side, used by the scoring server."""

    async def get_many(
        self,
        namespace: str,
        entity_ids: Sequence[str],
        timeout: float,  # noqa: ASYNC109 (the contract: a per-call budget in seconds)
    ) -> list[FeatureRow | None]:
        """Features of each id under the active version, in the order of ``entity_ids``; None for
        an unknown (or expired) entity. One round trip; ``FeatureStoreError`` on failure or after
        ``timeout`` seconds."""
        ...

    async def close(self) -> None: ...


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
    return f"{KEY_PREFIX}:{_name('namespace', namespace)}:active"


def data_key(namespace: str, version: str, entity_id: str) -> str:
    return f"{KEY_PREFIX}:{_name('namespace', namespace)}:{_name('version', version)}:{entity_id}"


# --- shared validation and encoding -----------------------------------------------------------


def _name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or ":" in value:
        raise ValueError(f"feature store {what} must be a non-empty string without ':': {value!r}")
    return value


def _check_timeout(timeout: float) -> None:
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"feature store timeout must be a positive number of seconds: {timeout!r}")


def _check_ids(entity_ids: Sequence[str]) -> None:
    if isinstance(entity_ids, str | bytes):
        raise TypeError("entity_ids must be a sequence of ids, not a single string")


def _check_publish_args(ttl_seconds: int | None, batch_size: int) -> None:
    if ttl_seconds is not None and (
        isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1
    ):
        raise ValueError(f"ttl_seconds must be None or a positive int: {ttl_seconds!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive: {batch_size!r}")


def _normalize(entity_id: str, row: Mapping[str, float | str]) -> FeatureRow:
    """A validated copy: str keys, float or str values (other real numbers through ``float``)."""
    if not isinstance(entity_id, str):
        raise TypeError(f"entity id must be a str, got {type(entity_id).__name__}")
    out: FeatureRow = {}
    for name, value in row.items():
        if not isinstance(name, str):
            raise TypeError(f"entity {entity_id!r}: feature name {name!r} is not a str")
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, float):
            out[name] = value
        elif isinstance(value, bytes | bytearray) or value is None:
            raise TypeError(f"entity {entity_id!r}: feature {name!r} is {value!r}, not float|str")
        else:
            try:
                out[name] = float(value)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"entity {entity_id!r}: feature {name!r} is {value!r}, not float|str"
                ) from e
    return out


def _encode(row: FeatureRow) -> str:
    return json.dumps(row, separators=(",", ":"))


def _decode_many(values: Sequence[bytes | None]) -> list[FeatureRow | None]:
    """Decode MGET's answer with ONE ``json.loads`` (a JSON array of the stored objects): about a
    quarter cheaper than a parse per value. Parsing text floats is most of the cost."""
    if all(v is None for v in values):
        return [None] * len(values)
    rows = json.loads(b"[" + b",".join([b"null" if v is None else v for v in values]) + b"]")
    if not isinstance(rows, list) or len(rows) != len(values):
        raise ValueError("a stored feature value is not one JSON object")
    for row in rows:
        if row is not None and not isinstance(row, dict):
            raise ValueError(f"a stored feature value is not a JSON object: {row!r:.80}")
    return rows


def _write_in_batches(
    rows: Iterable[tuple[str, Mapping[str, float | str]]],
    batch_size: int,
    on_progress: Callable[[int], None] | None,
    write: Callable[[list[tuple[str, FeatureRow]]], None],
) -> int:
    """The publish loop both backends share: normalise rows, hand ``write`` one batch at a time,
    report the running total after each batch. Returns the rows written."""
    written = 0
    batch: list[tuple[str, FeatureRow]] = []
    for entity_id, row in rows:
        batch.append((entity_id, _normalize(entity_id, row)))
        if len(batch) == batch_size:
            write(batch)
            written += len(batch)
            batch = []
            if on_progress is not None:
                on_progress(written)
    if batch:
        write(batch)
        written += len(batch)
        if on_progress is not None:
            on_progress(written)
    return written


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


# --- Redis ------------------------------------------------------------------------------------


class _RespConnection(asyncio.Protocol):
    """One pipelined RESP connection for the read path, as an asyncio protocol: the commands of
    one exchange go out in one write; replies are parsed by hiredis right in ``data_received`` and
    handed, in order, to the exchange waiting for them (no reader task in between). redis-py's
    asyncio client cost ~300 µs per lookup here; this is ~2-3x cheaper. A connection whose caller
    gave up (timeout) is closed, so a late reply is never taken for the next call's."""

    def __init__(self) -> None:
        import hiredis

        self._parser = hiredis.Reader()
        self._reply_error = hiredis.ReplyError
        # each waiter: (future, replies expected, replies so far)
        self._waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = deque()
        self._transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.closed = False

    @classmethod
    async def open(cls, url: str) -> _RespConnection:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        if parts.scheme == "unix":
            _, conn = await loop.create_unix_connection(cls, parts.path)
        else:
            _, conn = await loop.create_connection(
                cls,
                parts.hostname or "127.0.0.1",
                parts.port or 6379,
                ssl=True if parts.scheme == "rediss" else None,
            )
        setup: list[list[bytes]] = []
        if parts.password:
            user = [parts.username.encode()] if parts.username else []
            setup.append([b"AUTH", *user, parts.password.encode()])
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        if db and db != "0":
            setup.append([b"SELECT", db.encode()])
        if setup:
            await conn.exchange(setup)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def exchange(self, commands: Sequence[Sequence[bytes]]) -> asyncio.Future[list[Any]]:
        """Write the commands at once; the future gets their replies, in order."""
        if self.closed or self._transport is None:
            raise ConnectionError("connection closed")
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for arg in command:
                out += b"$%d\r\n%s\r\n" % (len(arg), arg)
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self._waiting.append((future, len(commands), []))
        self._transport.write(out)
        return future

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        while (reply := self._parser.gets()) is not False:
            if not self._waiting:
                self.close()  # a reply nobody asked for: the stream is out of step
                return
            future, expected, replies = self._waiting[0]
            replies.append(reply)
            if len(replies) < expected:
                continue
            self._waiting.popleft()
            if future.done():
                continue
            errors = [r for r in replies if isinstance(r, self._reply_error)]
            if errors:
                future.set_exception(RedisError(str(errors[0])))
            else:
                future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def _fail(self, error: BaseException) -> None:
        self.closed = True
        while self._waiting:
            future, _, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self._fail(ConnectionError("connection closed"))
        if self._transport is not None:
            self._transport.close()


class RedisFeatureStore:
    """Features in Redis (see the module docstring for the key layout and read protocol).

    ``connect_timeout`` bounds a TCP connect of the publisher (reads are bounded by their own
    ``timeout``); ``command_timeout`` bounds one publisher round trip (a batch);
    ``max_connections`` caps the read pool (None: unbounded).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        command_timeout: float = 30.0,
        max_connections: int | None = None,
    ) -> None:
        self.url = url
        self._where = _safe_url(url)
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a bad port
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ValueError("the scheme must be redis://, rediss:// or unix://")
        except (ValueError, TypeError, AttributeError) as e:
            raise FeatureStoreError(f"feature store: bad Redis URL {self._where!r}: {e}") from e
        _check_timeout(connect_timeout)
        _check_timeout(command_timeout)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.max_connections = max_connections
        self._conn: _RespConnection | None = None
        self._writer: redis.Redis | None = None
        self._writer_lock = threading.Lock()
        self._seen: dict[str, str] = {}  # namespace -> the active version the last read saw

    def __repr__(self) -> str:
        return f"RedisFeatureStore({self._where!r})"

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError, ValueError) as e:  # ValueError: a corrupt stored value
            raise FeatureStoreError(
                f"feature store {what} at {self._where} failed: {type(e).__name__}: {e}"
            ) from e

    # read side (asyncio)

    async def _connection(self) -> _RespConnection:
        conn = self._conn
        if conn is None or conn.closed or conn.loop is not asyncio.get_running_loop():
            self._conn = conn = await _RespConnection.open(self.url)
        return conn

    async def _exchange(self, commands: Sequence[Sequence[bytes]]) -> list[Any]:
        """Send commands in one write and wait for their replies; a connection that broke
        (server restarted) is replaced once at once; the caller's timeout bounds it all."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                return await conn.exchange(commands)
            except ConnectionError:
                if attempt == 2:
                    raise
            except BaseException:  # timeout or cancellation: the reply order is unknown now
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def get_many(
        self,
        namespace: str,
        entity_ids: Sequence[str],
        timeout: float,  # noqa: ASYNC109 (the contract: a per-call budget in seconds)
    ) -> list[FeatureRow | None]:
        _check_timeout(timeout)
        _check_ids(entity_ids)
        pointer = pointer_key(namespace)
        if not entity_ids:
            return []
        prefix = f"{KEY_PREFIX}:{namespace}:"
        try:
            async with asyncio.timeout(timeout):
                with self._mapped(f"read of {len(entity_ids)} ids in {namespace!r}"):
                    seen = self._seen.get(namespace)
                    values: list[bytes | None] = []
                    if seen is None:
                        (active,) = await self._exchange([[b"GET", pointer.encode()]])
                    else:
                        keys = [f"{prefix}{seen}:{i}".encode() for i in entity_ids]
                        active, values = await self._exchange(
                            [[b"GET", pointer.encode()], [b"MGET", *keys]]
                        )
                    if active is None:
                        self._seen.pop(namespace, None)
                        return [None] * len(entity_ids)
                    version = active.decode()
                    if version != seen:
                        keys = [f"{prefix}{version}:{i}".encode() for i in entity_ids]
                        (values,) = await self._exchange([[b"MGET", *keys]])
                        self._seen[namespace] = version
                    return _decode_many(values)
        except TimeoutError as e:
            raise FeatureStoreError(
                f"feature store read of {len(entity_ids)} ids in {namespace!r} at {self._where} "
                f"timed out after {timeout:g} s"
            ) from e

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        with self._writer_lock:
            writer, self._writer = self._writer, None
        try:
            if conn is not None:
                conn.close()
        finally:
            if writer is not None:
                writer.close()

    # write side (sync)

    def _write_client(self) -> redis.Redis:
        with self._writer_lock:
            if self._writer is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                self._writer = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=self.connect_timeout,
                    socket_timeout=self.command_timeout,
                    retry=Retry(NoBackoff(), 1),
                )
            return self._writer

    def active_version(self, namespace: str) -> str | None:
        key = pointer_key(namespace)
        with self._mapped(f"active-version lookup of {namespace!r}"):
            raw = self._write_client().get(key)
        return None if raw is None else cast(bytes, raw).decode()

    def activate(self, namespace: str, version: str) -> None:
        key = pointer_key(namespace)
        _name("version", version)
        with self._mapped(f"activation of {namespace!r} version {version!r}"):
            self._write_client().set(key, version)

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
        prefix = data_key(namespace, version, "")
        _check_publish_args(ttl_seconds, batch_size)
        if self.active_version(namespace) == version:
            raise ValueError(f"version {version!r} of {namespace!r} is active: publish a new one")
        where = f"publish of {namespace!r} version {version!r}"
        with self._mapped(where):
            pipe = self._write_client().pipeline(transaction=False)

        def write(batch: list[tuple[str, FeatureRow]]) -> None:
            for entity_id, row in batch:
                pipe.set(prefix + entity_id, _encode(row), ex=ttl_seconds)
            with self._mapped(where):
                pipe.execute()

        return _write_in_batches(rows, batch_size, on_progress, write)


# --- in-process -------------------------------------------------------------------------------


class InMemoryFeatureStore:
    """The embedded store of a laptop run: the Redis store's behaviour (versions, pointer, TTL by
    expiry time) in a dict, guarded by a lock. Expired rows are dropped when read and on
    ``activate``; versions are kept, as in Redis, until their rows expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # namespace -> version -> entity id -> (monotonic expiry or None, row)
        self._data: dict[str, dict[str, dict[str, tuple[float | None, FeatureRow]]]] = {}
        self._active: dict[str, str] = {}

    def __repr__(self) -> str:
        return "InMemoryFeatureStore()"

    async def get_many(
        self,
        namespace: str,
        entity_ids: Sequence[str],
        timeout: float,  # noqa: ASYNC109 (the contract: a per-call budget in seconds)
    ) -> list[FeatureRow | None]:
        _check_timeout(timeout)
        _check_ids(entity_ids)
        _name("namespace", namespace)
        now = time.monotonic()
        out: list[FeatureRow | None] = []
        with self._lock:
            version = self._active.get(namespace)
            rows = self._data.get(namespace, {}).get(version or "", {})
            for entity_id in entity_ids:
                entry = rows.get(entity_id)
                if entry is None:
                    out.append(None)
                elif entry[0] is not None and entry[0] <= now:
                    del rows[entity_id]
                    out.append(None)
                else:
                    out.append(dict(entry[1]))
        return out

    async def close(self) -> None:
        return None

    def active_version(self, namespace: str) -> str | None:
        _name("namespace", namespace)
        with self._lock:
            return self._active.get(namespace)

    def activate(self, namespace: str, version: str) -> None:
        _name("namespace", namespace)
        _name("version", version)
        now = time.monotonic()
        with self._lock:
            self._active[namespace] = version
            for versions in self._data.values():
                for name in list(versions):
                    rows = versions[name]
                    for entity_id in [k for k, (exp, _) in rows.items() if exp and exp <= now]:
                        del rows[entity_id]
                    if not rows:
                        del versions[name]

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
        _name("namespace", namespace)
        _name("version", version)
        _check_publish_args(ttl_seconds, batch_size)
        if self.active_version(namespace) == version:
            raise ValueError(f"version {version!r} of {namespace!r} is active: publish a new one")

        def write(batch: list[tuple[str, FeatureRow]]) -> None:
            expiry = None if ttl_seconds is None else time.monotonic() + ttl_seconds
            with self._lock:
                target = self._data.setdefault(namespace, {}).setdefault(version, {})
                for entity_id, row in batch:
                    target[entity_id] = (expiry, row)

        return _write_in_batches(rows, batch_size, on_progress, write)


def store_from_url(url: str | None) -> RedisFeatureStore | InMemoryFeatureStore:
    """``RedisFeatureStore(url)``, or the embedded ``InMemoryFeatureStore`` when ``url`` is None."""
    return InMemoryFeatureStore() if url is None else RedisFeatureStore(url)


def rows_from_records(
    records: Iterable[Mapping[str, object]], *, id_field: str, categorical: Collection[str]
) -> Iterator[tuple[str, dict[str, float | str]]]:
    """Store rows from plain records (e.g. a snapshot frame's rows): the id comes from
    ``id_field``; ``None`` values are left out (missing at serving); categorical values become
    ``str`` and all others ``float``."""
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
                values[name] = float(value)  # type: ignore[arg-type]
        yield entity_id, values
