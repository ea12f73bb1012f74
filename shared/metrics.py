"""Prometheus metrics shared by the services (one registry per process, served at /metrics)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

HTTP_LATENCY = Histogram(
    "songpop_http_request_seconds",
    "REST request latency",
    ["service", "route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MQTT_RECEIVED = Counter("songpop_mqtt_received_total", "MQTT messages received", ["service", "topic"])
MQTT_PUBLISHED = Counter("songpop_mqtt_published_total", "MQTT messages published", ["service"])
MQTT_REJECTED = Counter("songpop_mqtt_rejected_total", "malformed MQTT messages skipped", ["service"])
INGESTED = Counter("songpop_ingested_total", "rows written by ingest runs", ["entity"])


def instrument(app: FastAPI, service: str) -> None:
    """Record every request's latency by route template, and serve /metrics."""

    @app.middleware("http")
    async def _timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_LATENCY.labels(service, path, request.method, str(response.status_code)).observe(
            time.perf_counter() - start
        )
        return response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
