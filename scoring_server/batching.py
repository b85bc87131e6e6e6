"""Micro-batching of a request stream: the messages already in flight are gathered (up to a size,
waiting at most a short time for more) and scored together, in arrival order. The reader runs
ahead of the scorer through a bounded queue: when it is full the reader stops reading, so a client
that sends faster than it reads answers gets flow control, not unbounded server memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["StreamBatching", "micro_batches"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StreamBatching:
    max_batch: int = 64
    """Most messages scored in one kernel call + one predict call."""
    max_wait_seconds: float = 0.0002
    """After a batch's first message, how long to wait for more (0: only what is queued)."""
    queue_size: int = 256
    """Messages read ahead of scoring at most (backpressure beyond)."""


class _End(Generic[_T]):
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def micro_batches(
    source: AsyncIterator[_T], batching: StreamBatching
) -> AsyncIterator[list[_T]]:
    """Batches of ``source``'s items, in order. An error of ``source`` is raised after the items
    read before it have been yielded."""
    queue: asyncio.Queue[_T | _End[_T]] = asyncio.Queue(batching.queue_size)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)  # blocks while the queue is full: backpressure
        except Exception as e:
            await queue.put(_End(e))
        else:
            await queue.put(_End())

    loop = asyncio.get_running_loop()
    reader = asyncio.create_task(pump())
    try:
        while True:
            first = await queue.get()
            if isinstance(first, _End):
                if first.error is not None:
                    raise first.error
                return
            batch = [first]
            end: _End[_T] | None = None
            deadline = loop.time() + batching.max_wait_seconds
            while len(batch) < batching.max_batch:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if isinstance(item, _End):
                    end = item
                    break
                batch.append(item)
            yield batch
            if end is not None:
                if end.error is not None:
                    raise end.error
                return
    finally:
        reader.cancel()
