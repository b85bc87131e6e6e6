"""The ceiling of a Python gRPC server on this machine: grpc.aio processes that answer ``Score``
with a fixed, pre-serialized response and do no work at all (same options and SO_REUSEPORT
sharing as the scoring server). ``benchmarks.grpc_load`` drives it beside the real servers, so
the share of the per-call cost that is gRPC's own is measured in the same run.

    uv run python -m benchmarks.grpc_floor --port 50099 --processes 2

Stop it with SIGTERM to its process group (every process handles it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import grpc

from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc.servicer import SERVICE_NAME

ANSWER = pb.ScoreResponse(
    request_id="bench-0",
    pd=0.031,
    score=600,
    decision=pb.DECISION_APPROVE,
    model=pb.ModelRef(name="floor", version="1", variant=pb.VARIANT_CHAMPION),
).SerializeToString()


async def _score(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE_NAME, {"Score": grpc.unary_unary_rpc_method_handler(_score)}
            ),
        )
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    ns = parser.parse_args(argv)
    children = []
    for _ in range(ns.processes - 1):
        pid = os.fork()
        if pid == 0:
            asyncio.run(serve(ns.port))
            os._exit(0)
        children.append(pid)
    asyncio.run(serve(ns.port))
    for c in children:
        os.waitpid(c, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
