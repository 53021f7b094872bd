"""The API's OpenAPI schema fuzzed with schemathesis, in-process: no input makes a 5xx.

Every operation of the schema, as an admin and as an investigator, on the test's
rolled-back transaction (as conftest's ``client``; each request's uncommitted work is
rolled back, as ``vigil.auth.api.get_session`` does). Deterministic (``derandomize``)
and bounded (``MAX_EXAMPLES`` generated requests per operation and role, besides
schemathesis' coverage cases); the rate limits are lifted so that they cannot make the
run flaky. ``REGRESSIONS`` are server errors found while fuzzing, kept as fixed cases.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy.orm import Session

from retrieval import limits
from retrieval.app import create_app
from tests import factories
from vigil.auth.api import get_session, serve_request
from vigil.settings import Settings

MAX_EXAMPLES = 15
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
FUZZ = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
CAMERA = "fuzz-cam"
CASE = "FUZZ-1"


@pytest.fixture
def fuzzed_app(settings: Settings, session: Session,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    monkeypatch.setattr(settings, "auth_failures_per_minute", 1_000_000)
    monkeypatch.setattr(settings, "heavy_requests_per_minute", 1_000_000)
    factories.camera(session, name=CAMERA)  # something for names to find besides 404s
    app = create_app()

    def test_session() -> Iterator[Session]:
        try:
            yield from serve_request(session)
        finally:
            session.rollback()  # to the last commit (a savepoint), as get_session does

    app.dependency_overrides[get_session] = test_session
    app.state.limiter = limits.Limiter(limits.storage_uri(settings),
                                       namespace=f"fuzz-{uuid.uuid4().hex}")
    yield app


@pytest.fixture
def admin_token(make_token) -> str:  # noqa: ANN001 - conftest's factory
    return make_token("admin")


@pytest.fixture
def investigator_token(make_token) -> str:  # noqa: ANN001 - conftest's factory
    return make_token("investigator")


def _no_server_error(case: schemathesis.Case, app: FastAPI, token: str) -> None:
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {token}"},
                           checks=[not_a_server_error])


@SCHEMA.parametrize()
@FUZZ
def test_no_server_error_as_admin(case: schemathesis.Case, fuzzed_app: FastAPI,
                                  admin_token: str) -> None:
    _no_server_error(case, fuzzed_app, admin_token)


@SCHEMA.parametrize()
@FUZZ
def test_no_server_error_as_investigator(case: schemathesis.Case, fuzzed_app: FastAPI,
                                         investigator_token: str) -> None:
    _no_server_error(case, fuzzed_app, investigator_token)


# (method, path, JSON body, expected status): each answered 500 before its fix.
NUL = "\u0000"
ITEM = {"camera": CAMERA, "from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:01:00Z"}
REGRESSIONS = {
    # A NUL character reached PostgreSQL (psycopg.DataError): now 422 (retrieval/app.py).
    "nul_in_a_path": ("GET", "/api/v1/cases/%00", None, 422),
    "nul_in_a_query": ("GET", "/api/v1/health/cameras?region=%00", None, 422),
    "nul_in_a_body": ("POST", "/api/v1/cameras", {"name": f"x{NUL}", "url": "rtsp://h/x"}, 422),
    "nul_in_a_camera_url": ("POST", "/api/v1/cameras", {"name": "x", "url": f"rtsp://h/{NUL}"},
                            422),
    "nul_in_a_hold": ("POST", f"/api/v1/cases/{CASE}/holds", {
        "camera": NUL, "from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z",
        "reason": "r"}, 422),
    "nul_in_a_member": ("POST", f"/api/v1/cases/{CASE}/members", {"principal": NUL}, 422),
    "nul_in_a_retention_rule": ("PUT", "/api/v1/retention/rules",
                                {"camera": NUL, "keep_days": 30}, 422),
    # A path id beyond bigint (NumericValueOutOfRange): now 422 (retrieval/app.py).
    "hold_id_beyond_bigint": ("POST", "/api/v1/holds/99999999999999999999/release",
                              {"reason": "r"}, 422),
    # Times that overflow datetime once converted to UTC or moved back a day or a
    # chunk's length: now 422 (vigil/intervals.py parse_instant, vigil/catalog/queries.py).
    "time_past_datetime_max_in_utc": (
        "GET", f"/api/v1/cameras/{CAMERA}/timeline?from=9999-12-31T23:00:00-14:00", None, 422),
    "day_back_from_datetime_min": (
        "GET", f"/api/v1/cameras/{CAMERA}/timeline?to=0001-01-01T00:00:00Z", None, 422),
    "clip_at_datetime_min": (
        "GET", f"/api/v1/cameras/{CAMERA}/clip?from=0001-01-01T00:00:00Z"
        "&to=0001-01-01T00:01:00Z", None, 422),
    "export_at_datetime_min": ("POST", f"/api/v1/cases/{CASE}/exports", {
        "items": [{**ITEM, "from": "0001-01-01T00:00:00Z", "to": "0001-01-01T00:01:00Z"}],
        "purpose": "p"}, 422),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_server_errors_found_by_fuzzing_stay_fixed(name: str, fuzzed_app: FastAPI,
                                                   admin_token: str) -> None:
    method, path, body, status = REGRESSIONS[name]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with TestClient(fuzzed_app, base_url="http://127.0.0.1") as c:
        assert c.post("/api/v1/cases", json={"title": "fuzz", "reference": CASE},
                      headers=headers).status_code == 201
        response = c.request(method, path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "invalid_input"
