"""Prometheus metrics shared by the services (one registry per process, served at /metrics)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_LATENCY = Histogram(
    "songpop_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MQTT_RECEIVED = Counter("songpop_mqtt_received_total", "MQTT messages received", ["service", "topic"])
MQTT_REJECTED = Counter("songpop_mqtt_rejected_total", "malformed MQTT messages skipped", ["service"])
REST_CACHE = Counter("songpop_rest_cache_total", "forecast responses asked of the cache", ["result"])


class RequestTimer:
    """Pure ASGI middleware recording each HTTP request's latency by route template.

    Unlike Starlette's BaseHTTPMiddleware it adds no task or stream per request: it only wraps `send`
    to catch the status code, which matters on the hot path.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._series: dict[tuple[str, str, int], Any] = {}  # labels() is costly per request

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HTTP_LATENCY.labels(self.service, route, method, str(status))
        series.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self._observe(route, scope["method"], status, time.perf_counter() - start)


def instrument(app: FastAPI, service: str, *, also: Sequence[CollectorRegistry] = ()) -> None:
    """Record every request's latency by route template, and serve /metrics: the process's metrics and
    those of the registries in `also` (the database-derived gauges, on the one service exporting them)."""
    app.add_middleware(RequestTimer, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        text = b"".join(generate_latest(registry) for registry in (REGISTRY, *also))
        return Response(text, media_type=CONTENT_TYPE_LATEST)
