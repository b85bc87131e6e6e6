"""Stream micro-batching: order, size bounds, errors, and bounded read-ahead (backpressure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scoring_server.batching import StreamBatching, micro_batches


async def _numbers(n: int, counter: list[int], fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("client went away")
        counter[0] += 1
        yield i
        await asyncio.sleep(0)


def test_batches_keep_order_and_size_bound() -> None:
    async def run() -> list[list[int]]:
        counter = [0]
        return [
            b
            async for b in micro_batches(
                _numbers(1000, counter), StreamBatching(max_batch=16, max_wait_seconds=0.001)
            )
        ]

    batches = asyncio.run(run())
    assert [x for b in batches for x in b] == list(range(1000))
    assert max(len(b) for b in batches) <= 16
    assert max(len(b) for b in batches) > 1  # messages in flight are gathered


def test_source_error_comes_after_the_items_read_before_it() -> None:
    got: list[int] = []

    async def run() -> None:
        async for b in micro_batches(_numbers(50, [0], fail_at=30), StreamBatching(max_batch=8)):
            got.extend(b)

    with pytest.raises(RuntimeError, match="client went away"):
        asyncio.run(run())
    assert got == list(range(30))


def test_read_ahead_is_bounded_when_the_consumer_stalls() -> None:
    """A client that keeps sending while answers are not taken: the server reads at most the
    queue plus one batch ahead, then stops reading (memory stays bounded)."""

    async def run() -> int:
        counter = [0]
        batching = StreamBatching(max_batch=8, max_wait_seconds=0, queue_size=32)
        batches = micro_batches(_numbers(1_000_000, counter), batching)
        await anext(batches)
        await asyncio.sleep(0.2)  # the consumer stalls; the producer could send a million
        read = counter[0]
        await batches.aclose()  # type: ignore[attr-defined]
        return read

    read = asyncio.run(run())
    assert read <= 32 + 8 + 2
