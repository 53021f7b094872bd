"""API hardening: rate limits, and limits on the size of a request.

* **Authentication failures** (``auth_failures_per_minute``, per client address): a
  request that presents a bearer value which does not authenticate counts, once per
  distinct value in the window, unless the value is a known credential (a stale one
  that Vigil or its issuer really made: ``Unauthenticated.known_credential``). An
  address over its budget gets 429 for every
  request that needs authentication, a valid token included, until the window frees
  (``refuse_locked_out`` and ``note_auth_failure``, called by
  ``vigil.auth.api.current_principal``).
* **Heavy endpoints** (``heavy_requests_per_minute``, per principal): clips, exports,
  package downloads and package verification declare ``Depends(heavy_request)``.
* **Size** (``RequestLimits``, an ASGI middleware): URLs over ``MAX_URL_BYTES`` get
  414, bodies over ``max_request_kb`` get 413, by ``Content-Length`` and while the
  body streams; package verification keeps its own, larger limit.

Counters are moving windows (the ``limits`` library) kept in the broker's Redis when
the broker is Redis, so that every API process shares them, else in process memory.
When Redis fails, a process counts in its own memory (one WARNING per outage) and
tries Redis again after ``REDIS_RETRY_S``: limits stay enforced, per process.
docs/design/hardening.md gives the numbers and the reasons.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError as LimitsStorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.auth.api import current_principal
from vigil.catalog.models import Principal
from vigil.errors import TooManyRequests, Unauthenticated
from vigil.settings import Settings, get_settings

log = logging.getLogger("vigil.limits")

T = TypeVar("T")

# Prefix of every counter key: several deployments may share one Redis.
NAMESPACE: Final = "vigil"
# The settings count per minute.
WINDOW_S: Final = 60
# A rate-limit check must not stall a request: Redis answers within this or is down.
REDIS_TIMEOUT_S: Final = 0.5
# After Redis failed, count in process memory this long before trying Redis again.
REDIS_RETRY_S: Final = 30.0
# Longest path plus query string: 8 KiB, the common default of proxies and servers;
# no Vigil URL comes near it (names, references and ISO times).
MAX_URL_BYTES: Final = 8 * 1024
# The one route with a body limit of its own (settings.verify_upload_max_mb).
VERIFY_ROUTE: Final = ("POST", "/api/v1/verify")


class Limiter:
    """Moving-window rate limits over a shared Redis, or over process memory."""

    def __init__(self, storage_uri: str, *, namespace: str = NAMESPACE,
                 window_s: int = WINDOW_S) -> None:
        self.namespace = namespace
        self.window_s = window_s
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if urlsplit(storage_uri).scheme in ("redis", "rediss"):
            # Connects lazily; the URL (and its password) stays inside the client.
            self._shared = MovingWindowRateLimiter(RedisStorage(
                storage_uri, wrap_exceptions=True, socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S))
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._outage = False

    @property
    def shared(self) -> bool:
        """Whether the counters live in Redis (when it answers)."""
        return self._shared is not None

    def _item(self, what: str, amount: int) -> RateLimitItem:
        return RateLimitItemPerSecond(amount, self.window_s, namespace=f"{self.namespace}-{what}")

    def _run(self, op: Callable[[MovingWindowRateLimiter], T]) -> T:
        shared = self._shared
        if shared is not None and time.monotonic() >= self._retry_at:
            try:
                result = op(shared)
            except LimitsStorageError as exc:
                self._redis_failed(exc)
            else:
                if self._outage:
                    with self._lock:
                        self._outage = False
                    log.warning("rate limits: Redis answers again; counters are shared again")
                return result
        return op(self._local)

    def _redis_failed(self, exc: LimitsStorageError) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + REDIS_RETRY_S
            first = not self._outage
            self._outage = True
        if first:
            # The error's class only: its text may name the server, never needed here.
            log.warning("rate limits: Redis failed (%s); counting in this process only, "
                        "retrying Redis every %g s", type(exc.storage_error).__name__,
                        REDIS_RETRY_S)

    def _wait_s(self, limiter: MovingWindowRateLimiter, item: RateLimitItem,
                key: str) -> int:
        stats = limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def hit(self, what: str, key: str, amount: int) -> int | None:
        """Count one event; None if within ``amount``, else seconds until a slot frees."""
        item = self._item(what, amount)

        def op(limiter: MovingWindowRateLimiter) -> int | None:
            return None if limiter.hit(item, key) else self._wait_s(limiter, item, key)

        return self._run(op)

    def spent(self, what: str, key: str, amount: int) -> int | None:
        """None if another event would be within ``amount``, else seconds to wait."""
        item = self._item(what, amount)

        def op(limiter: MovingWindowRateLimiter) -> int | None:
            return None if limiter.test(item, key) else self._wait_s(limiter, item, key)

        return self._run(op)

    def first_seen(self, what: str, key: str) -> bool:
        """Whether ``key`` is new in this window (a counter that expires with it)."""
        name = f"{self.namespace}-{what}/{key}"
        return self._run(lambda limiter: limiter.storage.incr(name, self.window_s) == 1)


_creating = threading.Lock()


def storage_uri(settings: Settings) -> str:
    """The broker's URL when the broker is Redis, else ``memory://``. It may hold a
    password: never log it."""
    broker = settings.celery_broker_url()
    return broker if urlsplit(broker).scheme in ("redis", "rediss") else "memory://"


def limiter_of(app: FastAPI) -> Limiter:
    """The app's limiter (``app.state.limiter``), made from the settings on first use."""
    limiter = getattr(app.state, "limiter", None)
    if limiter is None:
        with _creating:
            limiter = getattr(app.state, "limiter", None)
            if limiter is None:
                limiter = app.state.limiter = Limiter(storage_uri(get_settings()))
    return limiter


def client_key(request: Request) -> str:
    """The client's address as counted: IPv4 whole, IPv6 by its /64 (what one
    subscriber holds). Proxy headers are not trusted (``vigil api`` runs uvicorn with
    ``proxy_headers=False``), so behind a proxy this is the proxy's address."""
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return f"{ipaddress.IPv6Network((address, 64), strict=False).network_address}_64"
    return str(address)


# --- authentication failures --------------------------------------------------------


def refuse_locked_out(request: Request) -> None:
    """Raise TooManyRequests while the client's address is over its failure budget,
    whatever it presents: a valid token does not unlock it."""
    budget = get_settings().auth_failures_per_minute
    wait_s = limiter_of(request.app).spent("auth-failures", client_key(request), budget)
    if wait_s is not None:
        raise TooManyRequests(f"too many failed authentications from this address; "
                              f"retry in {wait_s} s", retry_after_s=wait_s)


def note_auth_failure(request: Request, credential: str, refusal: Unauthenticated) -> None:
    """Count a bearer value that did not authenticate, once per distinct value in the
    window: guessing needs new values, and a client retrying one stale token must not
    lock out everyone behind its address. A ``refusal`` of a known credential (an
    expired, revoked or disabled Vigil token or validly signed JWT) is not counted at
    all: many people behind one address each sending their own stale token guess
    nothing. Only a digest of the value is kept."""
    if refusal.known_credential:
        return
    limiter = limiter_of(request.app)
    address = client_key(request)
    digest = hashlib.sha256(credential.encode()).hexdigest()[:32]
    if limiter.first_seen("auth-guesses", f"{address}/{digest}"):
        limiter.hit("auth-failures", address, get_settings().auth_failures_per_minute)


# --- heavy endpoints ----------------------------------------------------------------


def heavy_request(request: Request,
                  principal: Annotated[Principal, Depends(current_principal)]) -> None:
    """Dependency of the heavy routes: ``heavy_requests_per_minute`` per principal."""
    budget = get_settings().heavy_requests_per_minute
    wait_s = limiter_of(request.app).hit("heavy", str(principal.id), budget)
    if wait_s is not None:
        raise TooManyRequests(f"at most {budget} clip, export, download and verification "
                              f"requests a minute; retry in {wait_s} s", retry_after_s=wait_s)


# --- request size -------------------------------------------------------------------


class RequestLimits:
    """ASGI middleware: 414 for URLs over ``MAX_URL_BYTES``; 413 for bodies over
    ``max_request_kb``, told by ``Content-Length`` or found while reading a body sent
    without one. The body (at most the limit) is read before the app runs and handed
    to it whole; ``VERIFY_ROUTE`` streams its upload under its own limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope.get("query_string", b""))
        if url_bytes > MAX_URL_BYTES:
            await _refuse(send, 414, "uri_too_long",
                          f"a URL is at most {MAX_URL_BYTES // 1024} KiB")
            return
        if (scope["method"], scope["path"]) == VERIFY_ROUTE:
            await self.app(scope, receive, send)
            return
        limit_kb = get_settings().max_request_kb
        limit = limit_kb * 1024
        too_large = f"a request body is at most {limit_kb} KiB"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, "too_large", too_large)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse(send, 413, "too_large", too_large)
                return
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": bytes(body),
                                 "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    """The app's error shape, answered before the app runs (and before the body is
    read: the server closes the connection rather than drain it)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()),
                                          (b"connection", b"close")]
    start: dict[str, Any] = {"type": "http.response.start", "status": status,
                             "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
