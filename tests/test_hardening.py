"""API hardening (retrieval/limits.py): rate limits, size limits, headers, no secret in logs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from retrieval import limits
from retrieval.app import SECURITY_HEADERS, create_app
from tests.support import VIGIL, free_ports, settings_for
from vigil.auth import service as auth_service
from vigil.auth.api import api_routes, get_session, serve_request
from vigil.catalog.models import Principal
from vigil.settings import Settings

# A short window keeps the lock-out tests quick; production counts per minute.
WINDOW_S = 3
HEAVY_ROUTES = {("GET", "/api/v1/cameras/{name}/clip"),
                ("POST", "/api/v1/cases/{reference}/exports"),
                ("GET", "/api/v1/exports/{export_id}/package"),
                ("POST", "/api/v1/verify")}
CLIP_QUERY = {"from": "2025-01-01T00:00:00+00:00", "to": "2025-01-01T00:01:00+00:00"}


def _app(session: Session, limiter: limits.Limiter) -> FastAPI:
    """The app on the test's session (as conftest's ``client``), with its own limiter."""
    app = create_app()

    def test_session() -> Iterator[Session]:
        yield from serve_request(session)

    app.dependency_overrides[get_session] = test_session
    app.state.limiter = limiter
    return app


def _limiter(settings: Settings, namespace: str | None = None) -> limits.Limiter:
    return limits.Limiter(limits.storage_uri(settings),
                          namespace=namespace or f"test-{uuid.uuid4().hex}", window_s=WINDOW_S)


@pytest.fixture
def limited_app(settings: Settings, session: Session,
                monkeypatch: pytest.MonkeyPatch) -> Callable[..., FastAPI]:
    """Factory: the app on the test's session, with counters of its own, under these
    settings (``limited_app(max_request_kb=1)``)."""

    def make(**overrides: int) -> FastAPI:
        for name, value in overrides.items():
            monkeypatch.setattr(settings, name, value)
        return _app(session, _limiter(settings))

    return make


def _client(app: FastAPI, address: str = "198.51.100.7", **kw: object) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1", client=(address, 50000), **kw)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wrong() -> str:
    return "vgl_" + uuid.uuid4().hex


def _assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (status, name)


# --- authentication failures ---------------------------------------------------------


def test_failed_authentications_lock_out_the_address_even_for_a_valid_token(
        limited_app: Callable[..., FastAPI], make_token) -> None:
    app = limited_app(auth_failures_per_minute=3)
    valid = _bearer(make_token("investigator"))
    with _client(app) as c, _client(app, "203.0.113.9") as other:
        assert c.get("/api/v1/whoami", headers=valid).status_code == 200
        # No credential guesses nothing; one stale token retried is one guess.
        for _ in range(5):
            _assert_refused(c.get("/api/v1/whoami"), 401, "unauthenticated")
        stale = _bearer(_wrong())
        for _ in range(5):
            _assert_refused(c.get("/api/v1/whoami", headers=stale), 401, "unauthenticated")
        for _ in range(2):
            _assert_refused(c.get("/api/v1/cameras", headers=_bearer(_wrong())), 401,
                            "unauthenticated")
        # Three distinct guesses: the address is locked out, a valid token included.
        locked = c.get("/api/v1/whoami", headers=valid)
        _assert_refused(locked, 429, "rate_limited")
        retry_after_s = int(locked.headers["Retry-After"])
        assert 1 <= retry_after_s <= WINDOW_S
        _assert_refused(c.get("/api/v1/cameras"), 429, "rate_limited")
        assert c.get("/healthz").status_code == 200  # needs no authentication
        assert other.get("/api/v1/whoami", headers=valid).status_code == 200
        time.sleep(retry_after_s + 0.2)
        assert c.get("/api/v1/whoami", headers=valid).status_code == 200


def test_stale_vigil_tokens_from_one_address_do_not_lock_it_out(
        limited_app: Callable[..., FastAPI], session: Session, make_token) -> None:
    """An office behind one NAT: everyone's expired, revoked or disabled token, each
    sent once, are known credentials, not guesses. Made-up values still lock it out."""
    app = limited_app(auth_failures_per_minute=3)
    valid = _bearer(make_token("investigator"))
    past = datetime.now(UTC) - timedelta(hours=1)

    def issued(**kw: object) -> auth_service.IssuedToken:
        return auth_service.issue_token(session=session, principal_name=f"p-{uuid.uuid4().hex}",
                                        role="investigator", label="t", actor="test", **kw)

    stale = [issued(expires_at=past).token for _ in range(10)]
    for token in (issued(), issued()):
        auth_service.revoke_token(session=session, token_id=token.token_id, actor="test")
        stale.append(token.token)
    for token in (issued(), issued()):
        session.get(Principal, token.principal_id).disabled_at = datetime.now(UTC)
        stale.append(token.token)
    session.flush()
    with _client(app) as c:
        for token in stale:
            _assert_refused(c.get("/api/v1/whoami", headers=_bearer(token)), 401,
                            "unauthenticated")
        assert c.get("/api/v1/whoami", headers=valid).status_code == 200
        for garbage in (_wrong(), uuid.uuid4().hex, "vgl_" + "x" * 300):
            _assert_refused(c.get("/api/v1/whoami", headers=_bearer(garbage)), 401,
                            "unauthenticated")
        _assert_refused(c.get("/api/v1/whoami", headers=valid), 429, "rate_limited")


def test_ipv6_clients_are_counted_by_their_64(limited_app: Callable[..., FastAPI]) -> None:
    app = limited_app(auth_failures_per_minute=2)
    with _client(app, "2001:db8:1:2::a") as a, _client(app, "2001:db8:1:2::b") as b, \
            _client(app, "2001:db8:1:3::a") as elsewhere:
        _assert_refused(a.get("/api/v1/whoami", headers=_bearer(_wrong())), 401,
                        "unauthenticated")
        _assert_refused(b.get("/api/v1/whoami", headers=_bearer(_wrong())), 401,
                        "unauthenticated")
        _assert_refused(a.get("/api/v1/whoami"), 429, "rate_limited")
        _assert_refused(elsewhere.get("/api/v1/whoami"), 401, "unauthenticated")


# --- heavy endpoints -----------------------------------------------------------------


def test_exactly_the_heavy_routes_are_rate_limited() -> None:
    def limited(route: object) -> bool:
        stack = [route.dependant]  # type: ignore[attr-defined]
        while stack:
            dep = stack.pop()
            if dep.call is limits.heavy_request:
                return True
            stack.extend(dep.dependencies)
        return False

    found = {(m, r.path) for r in api_routes(create_app().routes) for m in r.methods
             if limited(r)}
    assert found == HEAVY_ROUTES


def test_heavy_requests_are_limited_per_principal(limited_app: Callable[..., FastAPI],
                                                   make_token) -> None:
    app = limited_app(heavy_requests_per_minute=2)
    first, second = _bearer(make_token("investigator")), _bearer(make_token("investigator"))
    with _client(app) as c:
        for _ in range(2):
            _assert_refused(c.get("/api/v1/cameras/no-such-camera/clip", params=CLIP_QUERY,
                                  headers=first), 404, "not_found")
        refused = c.get("/api/v1/cameras/no-such-camera/clip", params=CLIP_QUERY,
                        headers=first)
        _assert_refused(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW_S
        # The budget covers every heavy route of the principal, not other routes,
        # and not other principals.
        _assert_refused(c.post("/api/v1/verify", content=b"PK", headers=first), 429,
                        "rate_limited")
        _assert_refused(c.get("/api/v1/cameras/no-such-camera/timeline", headers=first),
                        404, "not_found")
        _assert_refused(c.get("/api/v1/cameras/no-such-camera/clip", params=CLIP_QUERY,
                              headers=second), 404, "not_found")


def test_counts_are_shared_by_api_processes_through_redis(
        settings: Settings, session: Session, make_token, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert limits.storage_uri(settings).startswith("redis://")
    assert limits.limiter_of(create_app()).shared  # what every API process uses
    monkeypatch.setattr(settings, "auth_failures_per_minute", 3)
    monkeypatch.setattr(settings, "heavy_requests_per_minute", 2)
    namespace = f"test-{uuid.uuid4().hex}"
    one, two = (_app(session, _limiter(settings, namespace)) for _ in range(2))
    assert one.state.limiter is not two.state.limiter
    token = _bearer(make_token("investigator"))
    with _client(one) as a, _client(two) as b:
        a.get("/api/v1/cameras/x/clip", params=CLIP_QUERY, headers=token)
        b.get("/api/v1/cameras/x/clip", params=CLIP_QUERY, headers=token)
        _assert_refused(a.get("/api/v1/cameras/x/clip", params=CLIP_QUERY, headers=token), 429,
                        "rate_limited")
        for c in (a, b, a):
            _assert_refused(c.get("/api/v1/whoami", headers=_bearer(_wrong())), 401,
                            "unauthenticated")
        _assert_refused(b.get("/api/v1/whoami", headers=token), 429, "rate_limited")


def test_without_redis_limits_hold_in_process_and_one_warning_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    (port,) = free_ports(1)
    password = "Rl-Secret-Pw-" + uuid.uuid4().hex[:8]
    limiter = limits.Limiter(f"redis://:{password}@127.0.0.1:{port}/0", namespace="t")
    assert limiter.shared
    with caplog.at_level(logging.DEBUG):
        waits = [limiter.hit("heavy", "7", 2) for _ in range(4)]
        assert limiter.spent("heavy", "7", 2) is not None
        assert limiter.first_seen("guess", "x") and not limiter.first_seen("guess", "x")
    assert waits[:2] == [None, None]
    assert all(isinstance(w, int) and 1 <= w <= limits.WINDOW_S for w in waits[2:])
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert "counting in this process only" in warnings[0].getMessage()
    assert password not in caplog.text


# --- request size --------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_by_length_and_by_stream(
        limited_app: Callable[..., FastAPI], make_token) -> None:
    app = limited_app(max_request_kb=1)
    token = _bearer(make_token("investigator"))
    big = b'{"title": "' + b"x" * 2048 + b'"}'
    with _client(app) as c:
        declared = c.post("/api/v1/cases", content=big,
                          headers={**token, "Content-Type": "application/json"})
        _assert_refused(declared, 413, "too_large")
        assert "1 KiB" in declared.json()["error"]["message"]
        # No token needed to be refused: the size is checked before anything else.
        _assert_refused(c.post("/api/v1/cases", content=big), 413, "too_large")
        streamed = c.post("/api/v1/cases", content=iter([big[:1000], big[1000:]]),
                          headers={**token, "Content-Type": "application/json"})
        assert "content-length" not in streamed.request.headers
        _assert_refused(streamed, 413, "too_large")
        small = c.post("/api/v1/cases", json={"title": "within the limit"}, headers=token)
        assert small.status_code == 201, small.text
        _assert_refused(c.get("/api/v1/cameras", params={"q": "x" * (9 * 1024)}), 414,
                        "uri_too_long")


def test_an_endless_body_is_cut_at_the_limit(settings: Settings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The middleware stops reading at the limit and answers; the app never runs."""
    monkeypatch.setattr(settings, "max_request_kb", 4)
    received = 0
    sent: list[dict[str, object]] = []

    async def never_called(_scope: object, _receive: object, _send: object) -> None:
        raise AssertionError("the app ran")

    async def receive() -> dict[str, object]:
        nonlocal received
        received += 1000
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/cases", "raw_path":
             b"/api/v1/cases", "query_string": b"", "headers": [
                 (b"transfer-encoding", b"chunked")]}
    asyncio.run(limits.RequestLimits(never_called)(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert received <= 4 * 1024 + 1000


def test_package_verification_keeps_its_own_larger_limit(
        limited_app: Callable[..., FastAPI], make_token) -> None:
    app = limited_app(max_request_kb=1)
    with _client(app) as c:
        response = c.post("/api/v1/verify", content=os.urandom(64 * 1024),
                          headers={**_bearer(make_token("auditor")),
                                   "Content-Type": "application/zip"})
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is False  # not a package, but read and checked


# --- headers -------------------------------------------------------------------------


def test_security_headers_on_success_and_on_every_error(
        limited_app: Callable[..., FastAPI], make_token) -> None:
    assert {"Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
            "Cache-Control", "X-Frame-Options", "Cross-Origin-Resource-Policy"} <= set(
        SECURITY_HEADERS)
    app = limited_app(auth_failures_per_minute=1, max_request_kb=1)

    def boom() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/boom", boom)
    token = _bearer(make_token("admin"))
    with _client(app, raise_server_exceptions=False) as c, \
            _client(app, "192.0.2.44") as locked:
        ok = c.get("/api/v1/whoami", headers=token)
        assert ok.status_code == 200
        assert all(ok.headers.get(k) == v for k, v in SECURITY_HEADERS.items())
        _assert_refused(c.get("/api/v1/whoami"), 401, "unauthenticated")
        _assert_refused(c.get("/api/v1/cameras", headers=_bearer(make_token("recorder"))),
                        403, "forbidden")
        _assert_refused(c.get("/api/v1/no-such-route"), 404, "not_found")
        _assert_refused(c.get("/api/v1/cameras", params={"q": "x" * (9 * 1024)}), 414,
                        "uri_too_long")
        _assert_refused(c.post("/api/v1/cases", json={"title": ""}, headers=token), 422,
                        "invalid_input")
        _assert_refused(c.post("/api/v1/cases", content=b"x" * 2048), 413, "too_large")
        _assert_refused(locked.get("/api/v1/whoami", headers=_bearer(_wrong())), 401,
                        "unauthenticated")
        _assert_refused(locked.get("/api/v1/whoami", headers=token), 429, "rate_limited")
        crashed = c.get("/boom")
        _assert_refused(crashed, 500, "internal_error")
        assert "unexpected failure" not in crashed.text


# --- no secret in any log line ----------------------------------------------------------


def _secrets_of(settings: Settings) -> dict[str, str]:
    """Every credential the servers use, by name."""
    broker = settings.celery_broker_url()
    _endpoint, access_key, secret_key = settings.s3_credentials()
    found = {"broker URL": broker, "broker password": urlsplit(broker).password,
             "database password": make_url(settings.sqlalchemy_url()).password,
             "S3 access key": access_key, "S3 secret key": secret_key}
    return {name: value for name, value in found.items() if value}


def _assert_nothing_secret(logs: str, secrets: dict[str, str]) -> None:
    for name, secret in secrets.items():
        assert secret not in logs, f"the {name} appears in the logs"


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[_Everything]:
    """Every logger at DEBUG into one handler: set up before the session fixture, so
    that the database connection it opens logs at DEBUG too."""
    handler = _Everything()
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in
                                      list(logging.root.manager.loggerDict))]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    logging.getLogger().addHandler(handler)
    silent = [lg for lg in loggers[1:] if not lg.propagate]
    for lg in silent:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        for lg in silent:
            lg.removeHandler(handler)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled


def test_no_secret_in_any_log_line_of_a_realistic_flow(
        every_log_line: _Everything, limited_app: Callable[..., FastAPI], settings: Settings,
        session: Session) -> None:
    camera_password = "Cam-Pw-" + uuid.uuid4().hex[:10]
    wrong = _wrong()
    app = limited_app(auth_failures_per_minute=2)
    issued = auth_service.issue_token(session=session, principal_name="log-admin",
                                      role="admin", label="t", actor="test")
    admin = _bearer(issued.token)
    with _client(app) as c:
        assert c.get("/api/v1/whoami", headers=admin).status_code == 200
        assert c.get("/api/v1/cameras", headers=_bearer(wrong)).status_code == 401
        added = c.post("/api/v1/cameras", headers=admin, json={
            "name": "log-cam", "url": f"rtsp://operator:{camera_password}@127.0.0.1:8554/x"})
        assert added.status_code == 201, added.text
        assert c.get("/api/v1/cameras/log-cam/timeline", headers=admin).status_code == 200
        assert c.get("/api/v1/cameras/log-cam/clip", params=CLIP_QUERY,
                     headers=admin).status_code == 404
        assert c.get("/api/v1/whoami", headers=_bearer(_wrong())).status_code == 401
        assert c.get("/api/v1/whoami", headers=admin).status_code == 429
    logs = "\n".join(every_log_line.lines)
    assert "sqlalchemy.engine" in logs  # the capture did reach the libraries' loggers
    _assert_nothing_secret(logs, {**_secrets_of(settings), "issued token": issued.token,
                                  "wrong token": wrong, "camera password": camera_password})


@pytest.mark.slow
def test_no_secret_in_the_api_process_output(own_stack: dict[str, str]) -> None:
    """``vigil api`` as deployed (uvicorn, access log on) on a stack of its own, so
    that the committed token and camera stay out of the shared test database."""
    stack_settings = settings_for(own_stack)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*VIGIL, *args], env=own_stack, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stderr
        return done

    cli("stack", "up")
    cli("db", "upgrade")
    token = cli("token", "create", "--role", "admin", "--name", "ops").stdout.strip()
    wrong, camera_password = _wrong(), "Cam-Pw-" + uuid.uuid4().hex[:10]
    output = Path(own_stack["VIGIL_HOME"]) / "api-output.log"
    url = f"http://127.0.0.1:{own_stack['VIGIL_API_PORT']}"
    with output.open("w") as sink:
        api = subprocess.Popen([*VIGIL, "api"], env=own_stack, stdout=sink,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert api.poll() is None, output.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        admin = _bearer(token)
        assert httpx.get(f"{url}/api/v1/whoami", headers=admin).status_code == 200
        assert httpx.get(f"{url}/api/v1/cameras", headers=_bearer(wrong)).status_code == 401
        added = httpx.post(f"{url}/api/v1/cameras", headers=admin, json={
            "name": "log-cam", "url": f"rtsp://operator:{camera_password}@127.0.0.1:8554/x"})
        assert added.status_code == 201, added.text
        assert httpx.get(f"{url}/api/v1/cameras/log-cam/timeline",
                         headers=admin).status_code == 200
        assert httpx.get(f"{url}/api/v1/cameras/log-cam/clip", params=CLIP_QUERY,
                         headers=admin).status_code == 404
    finally:
        api.send_signal(signal.SIGINT)
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()
    logs = output.read_text(errors="replace")
    assert "GET /api/v1/cameras/log-cam/clip" in logs  # the access log was captured
    _assert_nothing_secret(logs, {**_secrets_of(stack_settings), "issued token": token,
                                  "wrong token": wrong, "camera password": camera_password})
