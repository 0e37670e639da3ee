"""grpc.health.v1 and Prometheus metrics, the same way in every service."""

from __future__ import annotations

import os

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server


class Health:
    """Serving status for the whole server ("") and each named service."""

    def __init__(self, server: grpc.aio.Server, services: list[str]) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.services = ["", *services]
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.services:
            await self.servicer.set(name, status)


def start_metrics(port: int, host: str | None = None) -> None:
    """Expose /metrics over HTTP; port 0 disables it. The address is UPLION_METRICS_HOST (default
    every interface, for in-cluster scraping; the local stack binds loopback)."""
    if port:
        start_http_server(port, addr=host or os.environ.get("UPLION_METRICS_HOST", "0.0.0.0"))
