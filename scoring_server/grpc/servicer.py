"""``ScoringServicer``: converts, calls ``ScoringService``, converts back. No logic of its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status

from credit_core import ScoreResult
from scoring_server.batching import StreamBatching, micro_batches
from scoring_server.grpc._proto import scoring_pb2 as pb
from scoring_server.grpc.converters import (
    decode_features,
    encode_scored,
    model_info_to_pb,
    outcome_to_domain,
    parse,
    to_domain,
    to_pb,
)
from scoring_server.grpc.errors import status_code_of, to_status_proto
from scoring_server.metrics import ServerMetrics
from scoring_server.service import RecentIds, ScoringService

__all__ = ["SERVICE_NAME", "ScoringServicer", "handlers"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Scoring"].full_name

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class ScoringServicer:
    """The methods of ``credit.scoring.v1.Scoring``; ``handlers`` registers them."""

    def __init__(
        self,
        service: ScoringService,
        metrics: ServerMetrics,
        *,
        stream_id_window: int,
        batching: StreamBatching,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.stream_id_window = stream_id_window
        self.batching = batching

    def _observe(self, rpc: str, code: grpc.StatusCode, started: float) -> None:
        self.metrics.requests.labels(rpc, code.name).inc()
        self.metrics.latency.labels(rpc).observe(time.perf_counter() - started)

    async def _unary(
        self,
        rpc: str,
        context: grpc.aio.ServicerContext[_Req, _Resp],
        handle: Callable[[], Awaitable[_Resp]],
    ) -> _Resp:
        """Run ``handle``, count it, and turn any error into its rich status."""
        started = time.perf_counter()
        try:
            response = await handle()
        except Exception as e:
            self._observe(rpc, status_code_of(e), started)
            await context.abort_with_status(rpc_status.to_status(to_status_proto(e)))
            raise  # abort_with_status always raises; this keeps the type checker honest
        self._observe(rpc, grpc.StatusCode.OK, started)
        return response

    async def Score(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Raw bytes in and out (see ``score_handlers``): the native wire path when it applies."""

        async def handle() -> bytes:
            return await self._score(request, batch=False)

        return await self._unary("Score", context, handle)

    async def ScoreBatch(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        async def handle() -> bytes:
            return await self._score(request, batch=True)

        return await self._unary("ScoreBatch", context, handle)

    async def _score(self, data: bytes, *, batch: bool) -> bytes:
        """Requests that need only their own features (``direct_model``) go bytes -> native
        decoder -> predict -> native encoder; the rest (feature-store lookups, challenger
        traffic, explanations) through protobuf objects and ``score`` / ``score_batch``. Both
        give the same answers and the same errors (tests prove it)."""
        model = self.service.direct_model()
        if model is not None:
            features = decode_features(model, data, batch=batch)
            if features is not None:
                scored = self.service.score_features(model, features, prefix=batch)
                return encode_scored(scored, batch=batch)
        if batch:
            request = parse(pb.ScoreBatchRequest, data)
            results = await self.service.score_batch([to_domain(r) for r in request.requests])
            return pb.ScoreBatchResponse(results=[to_pb(r) for r in results]).SerializeToString()
        one = parse(pb.ScoreRequest, data)
        return to_pb(await self.service.score(to_domain(one))).SerializeToString()

    async def ScoreStream(
        self,
        request_iterator: AsyncIterator[pb.ScoreRequest],
        context: grpc.aio.ServicerContext[pb.ScoreRequest, pb.ScoreStreamResponse],
    ) -> AsyncIterator[pb.ScoreStreamResponse]:
        seen = RecentIds(self.stream_id_window)
        async for batch in micro_batches(request_iterator, self.batching):
            started = time.perf_counter()
            try:
                outcomes: list[ScoreResult | BaseException] = list(
                    await self.service.score_each([to_domain(r) for r in batch], seen)
                )
            except Exception as e:  # unexpected: these messages fail, the stream goes on
                outcomes = [e] * len(batch)
            for request, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, ScoreResult):
                    self._observe("ScoreStream", grpc.StatusCode.OK, started)
                    yield pb.ScoreStreamResponse(
                        request_id=request.request_id, response=to_pb(outcome)
                    )
                else:
                    self._observe("ScoreStream", status_code_of(outcome), started)
                    yield pb.ScoreStreamResponse(
                        request_id=request.request_id, error=to_status_proto(outcome)
                    )

    async def ReportOutcome(
        self,
        request: pb.ReportOutcomeRequest,
        context: grpc.aio.ServicerContext[pb.ReportOutcomeRequest, pb.ReportOutcomeResponse],
    ) -> pb.ReportOutcomeResponse:
        async def handle() -> pb.ReportOutcomeResponse:
            recorded = await self.service.record_outcomes(
                [outcome_to_domain(o) for o in request.outcomes]
            )
            return pb.ReportOutcomeResponse(recorded=recorded)

        return await self._unary("ReportOutcome", context, handle)

    async def GetModelInfo(
        self,
        request: pb.GetModelInfoRequest,
        context: grpc.aio.ServicerContext[pb.GetModelInfoRequest, pb.GetModelInfoResponse],
    ) -> pb.GetModelInfoResponse:
        async def handle() -> pb.GetModelInfoResponse:
            variants = self.service.variants
            models = variants.models if variants is not None else ()
            return model_info_to_pb(models, self.service.policy)

        return await self._unary("GetModelInfo", context, handle)


def handlers(servicer: ScoringServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers: ``Score`` and ``ScoreBatch`` take and give raw bytes (the
    servicer decodes them), the others protobuf messages as generated code would register."""

    def messages(
        method: Callable[..., Any], request: type[Message], response: type[Message]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Score": grpc.unary_unary_rpc_method_handler(servicer.Score),
            "ScoreBatch": grpc.unary_unary_rpc_method_handler(servicer.ScoreBatch),
            "ScoreStream": grpc.stream_stream_rpc_method_handler(
                servicer.ScoreStream,
                request_deserializer=pb.ScoreRequest.FromString,
                response_serializer=pb.ScoreStreamResponse.SerializeToString,
            ),
            "ReportOutcome": messages(
                servicer.ReportOutcome, pb.ReportOutcomeRequest, pb.ReportOutcomeResponse
            ),
            "GetModelInfo": messages(
                servicer.GetModelInfo, pb.GetModelInfoRequest, pb.GetModelInfoResponse
            ),
        },
    )
