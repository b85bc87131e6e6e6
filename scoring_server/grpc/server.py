"""Building the grpc.aio server: Scoring, standard health and reflection on one port."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scoring_server.batching import StreamBatching
from scoring_server.grpc.servicer import SERVICE_NAME, ScoringServicer, handlers
from scoring_server.metrics import ServerMetrics
from scoring_server.service import ScoringService
from scoring_server.settings import ServerSettings

__all__ = ["SERVICE_NAME", "GrpcServer", "Health", "create_server"]


class Health:
    """Health of the whole server ("") and of ``credit.scoring.v1.Scoring``, flipped together."""

    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self.servicer = servicer

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.servicer.set(name, status)

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()


class GrpcServer:
    """The bound grpc.aio server, its port and its health, behind start / stop."""

    def __init__(self, server: grpc.aio.Server, port: int, health: Health) -> None:
        self._server = server
        self.port = port
        self.health = health

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace_seconds: float) -> None:
        """NOT_SERVING first, then stop accepting; in-flight calls get ``grace_seconds``."""
        await self.health.shutdown()
        await self._server.stop(grace_seconds)


async def create_server(
    settings: ServerSettings,
    service: ScoringService,
    metrics: ServerMetrics,
    address: str | None = None,
) -> GrpcServer:
    """A server with every service added, bound but not started: on ``address`` (the native
    front end's private backend socket), else on the public ``host:grpc_port``."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 1),  # the workers share the port the control process reserved
        ]
    )
    servicer = ScoringServicer(
        service,
        metrics,
        stream_id_window=settings.stream_id_window,
        batching=StreamBatching(
            max_batch=settings.stream_batch_max,
            max_wait_seconds=settings.stream_batch_wait_seconds,
            queue_size=settings.stream_queue_size,
        ),
    )
    server.add_generic_rpc_handlers((handlers(servicer),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    state = Health(health_servicer)
    await state.set_serving(False)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = address or f"{settings.host}:{settings.grpc_port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC on {address}")
    return GrpcServer(server, port, state)
