"""Every API route needs a bearer token and a role; errors are JSON; no secrets out."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session

from retrieval.app import create_app
from tests import factories
from vigil.auth import service as auth_service
from vigil.auth.api import api_routes, rules_of
from vigil.catalog.models import ApiToken, RoleName

# Routes that answer without a token. Nothing else may.
PUBLIC = {("GET", "/healthz")}


def _all_routes() -> list[tuple[str, str, APIRoute]]:
    return sorted((method, r.path, r) for r in api_routes(create_app().routes)
                  for method in r.methods)


def test_the_route_table_is_seen_whole() -> None:
    """Guards the walk below: every schema path of the app must be found by it."""
    app = create_app()
    found = {r.path for r in api_routes(app.routes)}
    assert set(app.openapi()["paths"]) <= found
    assert {"/api/v1/cameras", "/api/v1/whoami", "/healthz"} <= found


@pytest.mark.parametrize(("method", "path", "route"), _all_routes(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_route_has_exactly_one_role_rule(method: str, path: str, route: APIRoute) -> None:
    rules = rules_of(route)
    if (method, path) in PUBLIC:
        assert rules == []
    else:
        assert len(rules) == 1, f"{method} {path} must declare exactly one RoleRule"


@pytest.mark.parametrize(("method", "path", "route"),
                         [r for r in _all_routes() if (r[0], r[1]) not in PUBLIC],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_route_refuses_a_missing_or_bad_token(client, method: str, path: str,
                                                    route: APIRoute) -> None:
    for headers in ({}, {"Authorization": "Bearer vgl_not-a-real-token"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_health_says_only_up(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "up"}


@pytest.mark.parametrize(("role", "status"), [
    ("admin", 200), ("investigator", 200), ("auditor", 200), ("recorder", 403)])
def test_camera_listing_by_role(client, make_token, role: str, status: int) -> None:
    response = client.get("/api/v1/cameras",
                          headers={"Authorization": f"Bearer {make_token(role)}"})
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "forbidden"


def test_camera_credentials_never_leave_the_api(client, make_token, session: Session) -> None:
    factories.camera(session, source_url="rtsp://operator:S3cr3t-Pa55@10.1.2.3:554/live")
    response = client.get("/api/v1/cameras",
                          headers={"Authorization": f"Bearer {make_token('admin')}"})
    assert response.status_code == 200
    assert "S3cr3t-Pa55" not in response.text
    assert "rtsp://operator:***@10.1.2.3:554/live" in response.text


def test_tokens_are_stored_only_as_hashes(session: Session) -> None:
    issued = auth_service.issue_token(session=session, principal_name="alice",
                                      role="investigator", label="t", actor="test")
    row = session.scalars(select(ApiToken).where(ApiToken.id == issued.token_id)).one()
    assert row.token_hash == hashlib.sha256(issued.token.encode()).digest()
    stored = " ".join(str(getattr(row, c.key)) for c in ApiToken.__table__.columns)
    assert issued.token not in stored
    assert issued.token[12:] not in stored  # only a short display prefix is kept


def test_revoked_expired_and_disabled_tokens_are_refused(client, session: Session) -> None:
    def issue(name: str, **kw: object) -> auth_service.IssuedToken:
        return auth_service.issue_token(session=session, principal_name=name,
                                        role="admin", label="t", actor="test", **kw)

    revoked = issue("rev")
    auth_service.revoke_token(session=session, token_id=revoked.token_id, actor="test")
    expired = issue("exp", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    disabled = issue("dis")
    session.get(ApiToken, disabled.token_id).principal.disabled_at = datetime.now(UTC)
    live = issue("live")
    session.flush()
    for issued, status in ((revoked, 401), (expired, 401), (disabled, 401), (live, 200)):
        response = client.get("/api/v1/whoami",
                              headers={"Authorization": f"Bearer {issued.token}"})
        assert response.status_code == status
    assert client.get("/api/v1/whoami", headers={
        "Authorization": f"Bearer {live.token}"}).json()["name"] == "live"


def test_unknown_role_and_role_conflicts_are_clear(session: Session) -> None:
    from vigil.errors import Conflict, InvalidInput

    with pytest.raises(InvalidInput, match="unknown role 'superuser'"):
        auth_service.issue_token(session=session, principal_name="x", role="superuser",
                                 label="t", actor="test")
    auth_service.issue_token(session=session, principal_name="bob", role="auditor",
                             label="t", actor="test")
    with pytest.raises(Conflict, match="exists with role 'auditor'"):
        auth_service.issue_token(session=session, principal_name="bob", role="admin",
                                 label="t", actor="test")


def test_unknown_paths_and_bad_input_answer_json(client, make_token) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_security_headers_are_set(client) -> None:
    response = client.get("/healthz")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_openapi_schema_needs_a_token(client, make_token) -> None:
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/docs").status_code == 404
    assert client.get("/api/v1/openapi.json").status_code == 401
    schema = client.get("/api/v1/openapi.json",
                        headers={"Authorization": f"Bearer {make_token('auditor')}"})
    assert schema.status_code == 200
    assert "/api/v1/cameras" in schema.json()["paths"]


def test_roles_in_code_cover_every_rule() -> None:
    for _method, _path, route in _all_routes():
        for rule in rules_of(route):
            assert rule.roles <= set(RoleName)


def test_admins_register_cameras_and_nobody_else(client, make_token) -> None:
    body = {"name": "gate-1", "url": "rtsp://op:Pw-123456@10.0.0.7/stream1", "chunk_seconds": 30}
    for role in ("investigator", "auditor", "recorder"):
        response = client.post("/api/v1/cameras", json=body,
                               headers={"Authorization": f"Bearer {make_token(role)}"})
        assert response.status_code == 403
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    created = client.post("/api/v1/cameras", json=body, headers=admin)
    assert created.status_code == 201
    assert created.json()["source_url"] == "rtsp://op:***@10.0.0.7/stream1"
    assert created.json()["chunk_target_s"] == 30
    assert client.post("/api/v1/cameras", json=body, headers=admin).status_code == 409
    bad = client.post("/api/v1/cameras", json={**body, "name": "x", "chunk_seconds": 1},
                      headers=admin)
    assert bad.status_code == 422
    assert "Pw-123456" not in bad.text  # input values are never echoed
    weird = client.post("/api/v1/cameras", json={**body, "name": "y", "url": "gopher://z"},
                        headers=admin)
    assert weird.status_code == 422
