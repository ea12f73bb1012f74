"""Errors answered in Spotify's shape: `{"error": {"status", "message"[, "reason"]}}` under `/v1/`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error answered in Spotify's shape: `{"error": {"status", "message"[, "reason"]}}`."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def _error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body: dict[str, Any] = {"status": exc.status, "message": exc.message}
    if exc.reason:
        body["reason"] = exc.reason
    return JSONResponse({"error": body}, status_code=exc.status, headers=exc.headers)


def _validation_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": {"status": 400, "message": problems}}, status_code=400)


def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith("/v1/"):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    message = "Service not found" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse(
        {"error": {"status": exc.status_code, "message": message}}, status_code=exc.status_code
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer ApiError, invalid parameters (400, as Spotify does) and unknown paths in Spotify's shape."""
    app.add_exception_handler(ApiError, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
