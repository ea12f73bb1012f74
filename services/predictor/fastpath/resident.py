"""Answer a resident song's forecast before routing (see the package's docstring)."""

from __future__ import annotations

import gzip

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api import accepts_gzip
from ..cache import RESIDENT_HITS, ResidentAnswers
from ..guard import ApiKeys

_GZIP_ACCEPTED: dict[bytes, bool] = {}  # accepts_gzip per Accept-Encoding value: clients send a few


def _accepts_gzip(accept_encoding: bytes) -> bool:
    accepted = _GZIP_ACCEPTED.get(accept_encoding)
    if accepted is None:
        if len(_GZIP_ACCEPTED) > 256:
            _GZIP_ACCEPTED.clear()
        accepted = _GZIP_ACCEPTED[accept_encoding] = accepts_gzip(accept_encoding.decode("latin-1"))
    return accepted


FORECAST_PREFIX, FORECAST_SUFFIX = "/v1/tracks/", "/forecast"
_GZIPPED_HEADERS = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
_PLAIN_HEADERS = [(b"vary", b"Accept-Encoding")]
_JSON = (b"content-type", b"application/json")


class ResidentFastPath:
    """Pure ASGI middleware: `GET /v1/tracks/{id}/forecast` of a song whose answer is resident, asked by
    its plain id, is answered here, before routing, dependency resolution and response validation (which
    would cost more than the rest of the request). The route below answers everything else (URIs and URLs,
    invalid ids, songs not resident), with the same bytes and headers for the same song."""

    def __init__(self, app: ASGIApp, resident: ResidentAnswers, route: BaseRoute, keys: ApiKeys) -> None:
        self.app = app
        self.resident = resident
        self.route = route
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self._authorised(scope):
            path: str = scope["path"]
            if path.startswith(FORECAST_PREFIX) and path.endswith(FORECAST_SUFFIX):
                body = self.resident.get(path[len(FORECAST_PREFIX) : -len(FORECAST_SUFFIX)])
                if body is not None:
                    await self._answer(scope, send, body)
                    return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        """No keys set, or a valid one sent (else the route answers, with its 401)."""
        return not self.keys.enabled or self.keys.client_of_headers(scope["headers"]) is not None

    async def _answer(self, scope: Scope, send: Send, body: bytes) -> None:
        accept_encoding = next((v for k, v in scope["headers"] if k == b"accept-encoding"), b"")
        if _accepts_gzip(accept_encoding):
            headers = _GZIPPED_HEADERS
        else:
            body, headers = gzip.decompress(body), _PLAIN_HEADERS
        RESIDENT_HITS.inc()
        scope["route"] = self.route  # the request timer labels the request with the route's template
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [*headers, length, _JSON]})
        await send({"type": "http.response.body", "body": body})
