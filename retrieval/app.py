"""The FastAPI application: routers of every context, one error handler, headers.

Routes are plain ``def`` functions: the blocking database and storage SDKs run in
Starlette's thread pool, never on the event loop.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

import vigil
from recorder.api import router as recorder_router
from retention.api import router as retention_router
from retrieval.api import router as retrieval_router
from retrieval.evidence_api import router as evidence_router
from retrieval.limits import RequestLimits
from retrieval.schemas import Health
from vigil.audit_api import router as audit_router
from vigil.db import get_engine
from vigil.errors import TooManyRequests, Unauthenticated, VigilError
from vigil.keys_api import router as keys_router

log = logging.getLogger("vigil.api")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden",
               404: "not_found", 405: "method_not_allowed", 413: "too_large",
               422: "invalid_input", 429: "rate_limited"}


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def create_app() -> FastAPI:
    app = FastAPI(title="Vigil", version=vigil.__version__,
                  # The schema is served only to authenticated clients (retrieval.api).
                  openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(VigilError)
    def vigil_error(_request: Request, exc: VigilError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after_s)}
        if exc.http_status >= 500:
            log.error("request failed: %s: %s", exc.code, exc)
        return _error(exc.http_status, exc.code, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the fields, never echo the submitted values.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors())
        return _error(422, "invalid_input", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                      str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    def refused_value(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the request carried (a NUL character in text, a
        # number beyond its column): bad input, not a fault. The driver's message may
        # quote the value: only its class is logged.
        log.info("request refused: the database rejected a value (%s)",
                 type(exc.orig).__name__)
        return _error(422, "invalid_input", "a value in the request cannot be stored or "
                      "looked up: text must not contain NUL characters, numbers must fit")

    @app.exception_handler(Exception)
    def unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Answered by Starlette's outermost middleware, outside security_headers below;
        # the traceback is logged by the server.
        return _error(500, "internal_error", "internal error", SECURITY_HEADERS)

    # Registered before security_headers, so it runs inside it: its refusals get them too.
    app.add_middleware(RequestLimits)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> JSONResponse:
        """Unauthenticated; says only whether the service is up (and reaches its
        database), nothing about versions, configuration or data."""
        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return JSONResponse({"status": "down"}, status_code=503)
        return JSONResponse({"status": "up"})

    app.include_router(recorder_router)
    app.include_router(retrieval_router)
    app.include_router(evidence_router)
    app.include_router(retention_router)
    app.include_router(keys_router)
    app.include_router(audit_router)
    return app
