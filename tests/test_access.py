"""Tiered access: scopes, the authorisation matrix, export approval.

The matrix is generated from the app's route table: every route must have an entry
in ``ROUTES`` (a new route without one fails), and every route is called by every
role, inside and outside the caller's scope.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from retrieval import approval
from tests import factories
from vigil.auth import scope
from vigil.auth import service as auth_service
from vigil.auth.api import api_routes, rules_of
from vigil.catalog.models import (
    ApprovalPolicy,
    ApprovalState,
    AuditEvent,
    Camera,
    Case,
    CaseMember,
    Export,
    ExportItem,
    Hold,
    Principal,
    Region,
    RetentionRule,
    RoleName,
)
from vigil.errors import Conflict, Forbidden

# --- the pure rules ----------------------------------------------------------------------


def test_a_scope_is_a_region_subtree_narrowed_by_a_camera_set() -> None:
    whole = scope.Scope()
    city = scope.Scope(region_path="1/5/")
    partner = scope.Scope(region_path="1/", camera_ids=frozenset({7}))
    assert whole.whole and not city.whole and not partner.whole
    assert whole.covers_camera(camera_id=3, region_path=None)
    assert city.covers_camera(camera_id=3, region_path="1/5/9/")
    assert city.covers_camera(camera_id=3, region_path="1/5/")
    assert not city.covers_camera(camera_id=3, region_path="1/6/")
    assert not city.covers_camera(camera_id=3, region_path="1/50/")  # a prefix, not a path
    assert not city.covers_camera(camera_id=3, region_path=None)  # no region: whole only
    assert partner.covers_camera(camera_id=7, region_path="1/6/")
    assert not partner.covers_camera(camera_id=8, region_path="1/6/")
    assert not partner.covers_camera(camera_id=7, region_path="2/")
    # Cases: the region; a camera-set principal only the cases it is a member of.
    assert city.covers_case(region_path="1/5/", member=False)
    assert not partner.covers_case(region_path="1/5/", member=False)
    assert partner.covers_case(region_path="1/5/", member=True)


def test_approval_reasons_apply_every_policy_up_the_tree() -> None:
    policies = approval.PolicySet(
        by_region={1: approval.Policy(3600, False, "region P"),
                   5: approval.Policy(600, True, "region A")},
        default=None)
    short = timedelta(minutes=5)
    assert approval.reasons(policies, [approval.ItemFacts("a", "1/5/", False, short)]) == []
    long = timedelta(minutes=20)
    assert approval.reasons(policies, [approval.ItemFacts("a", "1/5/", False, long)]) == [
        "20 min of footage is more than 10 min (region A)"]
    # Region P (above A) allows an hour and does not care for sensitive cameras.
    assert approval.reasons(policies, [approval.ItemFacts("b", "1/6/", True, long)]) == []
    assert approval.reasons(policies, [approval.ItemFacts("a", "1/5/", True, short)]) == [
        "camera a is sensitive (region A)"]
    # Where no policy reaches, sensitive cameras still need approval; length does not.
    assert approval.reasons(approval.PolicySet({}, None), [
        approval.ItemFacts("c", None, True, timedelta(hours=9))]) == [
        "camera c is sensitive (built-in)"]
    # Two cameras under different policies: each policy applies to the whole export.
    both = [approval.ItemFacts("a", "1/5/", False, short),
            approval.ItemFacts("b", "1/6/", False, timedelta(minutes=6))]
    assert approval.reasons(policies, both) == [
        "11 min of footage is more than 10 min (region A)"]
    # A lower tier cannot loosen what a higher one set: the city's "no limit, sensitive
    # cameras are fine" does not lift the province's rules.
    loose_city = approval.PolicySet(
        by_region={1: approval.Policy(600, True, "region P"),
                   5: approval.Policy(None, False, "region A")}, default=None)
    assert approval.reasons(loose_city, [approval.ItemFacts("a", "1/5/", True, long)]) == [
        "camera a is sensitive (region P)", "20 min of footage is more than 10 min (region P)"]


# --- a world of two cities ---------------------------------------------------------------

Side = Literal["A", "B"]
ROLES = (RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR, RoleName.RECORDER)
PAST = datetime(2026, 1, 5, 10, tzinfo=UTC)


@dataclass
class World:
    province: Region
    regions: dict[str, Region]
    cameras: dict[str, Camera]
    cases: dict[str, Case]
    exports: dict[str, Export]
    holds: dict[str, Hold]
    # Per role: a principal bound to city A, one bound to nothing.
    regional: dict[RoleName, str] = field(default_factory=dict)
    whole: dict[RoleName, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    spare_members: dict[str, list[str]] = field(default_factory=dict)

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def _principal(session: Session, role: RoleName, region: Region | None) -> tuple[str, str]:
    name = f"{role.value}-{'all' if region is None else region.code}-{uuid.uuid4().hex[:6]}"
    issued = auth_service.issue_token(session=session, principal_name=name, role=role.value,
                                      label="test", actor="test")
    session.get(Principal, issued.principal_id).region_id = (  # type: ignore[union-attr]
        None if region is None else region.id)
    return name, issued.token


def _case(session: Session, principal_name: str, region: Region) -> Case:
    creator = session.scalars(select(Principal).where(Principal.name == principal_name)).one()
    case = Case(reference=f"T-{uuid.uuid4().hex[:8]}", title="t", region_id=region.id,
                created_by=creator.id)
    session.add(case)
    session.flush()
    session.add(CaseMember(case_id=case.id, principal_id=creator.id, added_by=creator.id))
    return case


@pytest.fixture
def world(session: Session) -> Iterator[World]:
    province = factories.region(session)
    regions = {side: factories.region(session, parent=province) for side in "AB"}
    cameras = {side: factories.camera(session, region_id=regions[side].id) for side in "AB"}
    w = World(province=province, regions=regions, cameras=cameras, cases={}, exports={},
              holds={})
    for role in ROLES:
        name, token = _principal(session, role, regions["A"])
        w.regional[role], w.tokens[name] = name, token
        name, token = _principal(session, role, None)
        w.whole[role], w.tokens[name] = name, token
    # Case B is opened by an investigator of city B: nobody of city A is a member.
    b_investigator, _ = _principal(session, RoleName.INVESTIGATOR, regions["B"])
    w.cases["A"] = _case(session, w.regional[RoleName.INVESTIGATOR], regions["A"])
    w.cases["B"] = _case(session, b_investigator, regions["B"])
    for side in "AB":
        w.spare_members[side] = [_principal(session, RoleName.INVESTIGATOR, regions[side])[0]
                                 for _ in range(8)]
        requester = w.cases[side].created_by
        export = Export(case_id=w.cases[side].id, requested_by=requester, purpose="t",
                        approval=ApprovalState.PENDING, approval_reason="test")
        session.add(export)
        session.flush()
        session.add(ExportItem(export_id=export.id, camera_id=cameras[side].id,
                               start_at=PAST, end_at=PAST + timedelta(minutes=5)))
        w.exports[side] = export
        hold = Hold(case_id=w.cases[side].id, camera_id=cameras[side].id, start_at=PAST,
                    end_at=PAST + timedelta(hours=1), reason="t", created_by=requester)
        session.add(hold)
        session.add(RetentionRule(camera_id=cameras[side].id, keep_days=90,
                                  created_by=requester))
        session.add(ApprovalPolicy(region_id=regions[side].id, max_duration_s=600,
                                   created_by=requester))
        session.flush()
        w.holds[side] = hold
    session.commit()  # refusals roll the request back: the world must be committed
    yield w


# --- the route table -------------------------------------------------------------------

Kind = Literal["object", "listing", "system", "open"]


@dataclass(frozen=True)
class Call:
    """How to call a route at side A or B of the world, and what it is about.

    object: a thing of one side (404 outside the scope); listing: a list that shows
    side A and hides side B from a city-A principal (``names``); system: needs a
    principal bound to nothing (403 otherwise); open: nothing scoped."""

    kind: Kind
    request: Callable[[World, Side], dict[str, Any]]
    names: Callable[[World, Side], str] | None = None
    listed: Callable[[Any], list[str]] | None = None


def _ago(hours: float) -> str:
    return (PAST + timedelta(hours=hours)).isoformat()


def _camera_name(w: World, s: Side) -> str:
    return w.cameras[s].name


def _ref(w: World, s: Side) -> str:
    return w.cases[s].reference


def _names(key: str) -> Callable[[Any], list[str]]:
    return lambda body: [str(item[key]) for item in body]


ROUTES: dict[tuple[str, str], Call] = {
    # Listings first: the calls after them change what there is to list.
    ("GET", "/api/v1/cameras"): Call(
        "listing", lambda w, s: {}, _camera_name, _names("name")),
    ("GET", "/api/v1/health/cameras"): Call(
        "listing", lambda w, s: {}, _camera_name, _names("name")),
    ("GET", "/api/v1/health/regions"): Call(
        "listing", lambda w, s: {}, lambda w, s: w.regions[s].code, _names("code")),
    ("GET", "/api/v1/cases"): Call("listing", lambda w, s: {}, _ref, _names("reference")),
    ("GET", "/api/v1/approvals"): Call(
        "listing", lambda w, s: {}, lambda w, s: str(w.exports[s].id), _names("id")),
    ("GET", "/api/v1/approval/policies"): Call(
        "listing", lambda w, s: {}, lambda w, s: f"region {w.regions[s].code}",
        _names("scope")),
    ("GET", "/api/v1/retention/rules"): Call(
        "listing", lambda w, s: {}, lambda w, s: f"camera {_camera_name(w, s)}",
        _names("scope")),
    ("GET", "/api/v1/retention/preview"): Call(
        "listing", lambda w, s: {}, _camera_name, _names("camera")),
    ("GET", "/api/v1/holds"): Call(
        "listing", lambda w, s: {}, lambda w, s: str(w.holds[s].id), _names("id")),
    ("POST", "/api/v1/cameras"): Call("object", lambda w, s: {"json": {
        "name": f"new-{uuid.uuid4().hex[:8]}", "url": "rtsp://127.0.0.1:8554/x",
        "region": w.regions[s].code}}),
    ("PATCH", "/api/v1/cameras/{name}"): Call("object", lambda w, s: {
        "path": {"name": _camera_name(w, s)}, "json": {"sensitive": False}}),
    ("GET", "/api/v1/whoami"): Call("open", lambda w, s: {}),
    ("GET", "/api/v1/openapi.json"): Call("open", lambda w, s: {}),
    ("GET", "/api/v1/cameras/{name}/timeline"): Call("object", lambda w, s: {
        "path": {"name": _camera_name(w, s)}, "params": {"from": _ago(0), "to": _ago(1)}}),
    # A range over the preview limit: 422 once the camera is found in scope.
    ("GET", "/api/v1/cameras/{name}/clip"): Call("object", lambda w, s: {
        "path": {"name": _camera_name(w, s)}, "params": {"from": _ago(0), "to": _ago(2)}}),
    ("POST", "/api/v1/cases"): Call("open", lambda w, s: {"json": {"title": "new"}}),
    ("GET", "/api/v1/cases/{reference}"): Call(
        "object", lambda w, s: {"path": {"reference": _ref(w, s)}}),
    ("POST", "/api/v1/cases/{reference}/members"): Call("object", lambda w, s: {
        "path": {"reference": _ref(w, s)}, "json": {"principal": w.spare_members[s].pop()}}),
    ("GET", "/api/v1/cases/{reference}/custody"): Call(
        "object", lambda w, s: {"path": {"reference": _ref(w, s)}}),
    # No recording in the range: 422 once the case and camera are found in scope.
    ("POST", "/api/v1/cases/{reference}/exports"): Call("object", lambda w, s: {
        "path": {"reference": _ref(w, s)}, "json": {"purpose": "t", "items": [
            {"camera": _camera_name(w, s), "from": _ago(-30), "to": _ago(-29)}]}}),
    ("GET", "/api/v1/exports/{export_id}"): Call(
        "object", lambda w, s: {"path": {"export_id": str(w.exports[s].id)}}),
    # Queued, so 409 once found in scope.
    ("GET", "/api/v1/exports/{export_id}/package"): Call(
        "object", lambda w, s: {"path": {"export_id": str(w.exports[s].id)}}),
    ("POST", "/api/v1/exports/{export_id}/approve"): Call("object", lambda w, s: {
        "path": {"export_id": str(w.exports[s].id)}, "json": {"note": "fine"}}),
    ("POST", "/api/v1/exports/{export_id}/reject"): Call("object", lambda w, s: {
        "path": {"export_id": str(w.exports[s].id)}, "json": {"note": "no"}}),
    ("PUT", "/api/v1/approval/policies"): Call("object", lambda w, s: {"json": {
        "region": w.regions[s].code, "max_duration_s": 900}}),
    ("POST", "/api/v1/verify"): Call("open", lambda w, s: {
        "content": b"not a zip", "headers": {"Content-Type": "application/zip"}}),
    ("PUT", "/api/v1/retention/rules"): Call("object", lambda w, s: {"json": {
        "camera": _camera_name(w, s), "keep_days": 60}}),
    ("POST", "/api/v1/retention/rules/remove"): Call("object", lambda w, s: {"json": {
        "camera": _camera_name(w, s)}}),
    ("POST", "/api/v1/cases/{reference}/holds"): Call("object", lambda w, s: {
        "path": {"reference": _ref(w, s)}, "json": {
            "camera": _camera_name(w, s), "from": _ago(0), "to": _ago(1), "reason": "t"}}),
    ("POST", "/api/v1/holds/{hold_id}/release"): Call("object", lambda w, s: {
        "path": {"hold_id": w.holds[s].id}, "json": {"reason": "done"}}),
    ("GET", "/api/v1/storage/worm"): Call("open", lambda w, s: {}),
    ("GET", "/api/v1/keys"): Call("open", lambda w, s: {}),
    ("POST", "/api/v1/keys/rotate"): Call(
        "system", lambda w, s: {"json": {"purpose": "package_signing"}}),
    ("GET", "/api/v1/audit/verify"): Call("system", lambda w, s: {}),
    ("GET", "/api/v1/audit/events"): Call("system", lambda w, s: {
        "params": {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}}),
    ("GET", "/api/v1/audit/checkpoints"): Call("system", lambda w, s: {}),
    # The lead's case actions last: closing case A ends what can be done to it.
    ("POST", "/api/v1/cases/{reference}/close"): Call("object", lambda w, s: {
        "path": {"reference": _ref(w, s)}, "json": {"reason": "done"}}),
}
PUBLIC = {("GET", "/healthz")}


def _app_routes() -> list[tuple[str, str, frozenset[RoleName], bool]]:
    from retrieval.app import create_app

    found = []
    for route in api_routes(create_app().routes):
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            rules = rules_of(route)
            roles = frozenset().union(*(r.roles for r in rules)) if rules else frozenset()
            found.append((method, route.path, roles, any(r.system for r in rules)))
    return found


def test_every_route_is_in_the_matrix() -> None:
    routes = {(m, p) for m, p, _, _ in _app_routes()}
    missing = sorted(routes - set(ROUTES) - PUBLIC)
    assert not missing, f"routes without an entry in the authorisation matrix: {missing}"
    # Entries for routes that do not exist would test nothing.
    stale = sorted(set(ROUTES) - routes)
    assert not stale, f"matrix entries for routes that do not exist: {stale}"
    # System routes are declared so, and only they.
    for method, path, _, system in _app_routes():
        if (method, path) in ROUTES:
            assert system == (ROUTES[method, path].kind == "system"), (method, path)


def _call(client: Any, w: World, method: str, path: str, who: str, side: Side) -> Any:
    spec = dict(ROUTES[method, path].request(w, side))
    url = path.format(**spec.pop("path", {}))
    headers = {**w.headers(who), **spec.pop("headers", {})}
    return client.request(method, url, headers=headers, **spec)


def _denials(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "scope.denied"))


def test_authorisation_matrix(client: Any, session: Session, world: World) -> None:
    """Every route x every role x inside and outside the scope."""
    w = world
    checked = 0
    ordered = sorted(_app_routes(), key=lambda r: list(ROUTES).index((r[0], r[1]))
                     if (r[0], r[1]) in ROUTES else -1)
    for method, path, roles, _system in ordered:
        if (method, path) in PUBLIC:
            continue
        call = ROUTES[method, path]
        for role in ROLES:
            where = f"{role.value} {method} {path}"
            if role not in roles:
                for who in (w.regional[role], w.whole[role]):
                    r = _call(client, w, method, path, who, "A")
                    assert r.status_code == 403, (where, r.status_code, r.text)
                checked += 1
                continue
            if call.kind == "system":
                r = _call(client, w, method, path, w.whole[role], "A")
                assert r.status_code < 400 or r.status_code == 409, (where, r.text)
                r = _call(client, w, method, path, w.regional[role], "A")
                assert r.status_code == 403, (where, r.status_code, r.text)
            elif call.kind == "open":
                r = _call(client, w, method, path, w.regional[role], "A")
                assert r.status_code not in (401, 403, 404) and r.status_code < 500, (
                    where, r.status_code, r.text)
            elif call.kind == "listing":
                assert call.names is not None and call.listed is not None
                r = _call(client, w, method, path, w.regional[role], "A")
                assert r.status_code == 200, (where, r.text)
                listed = call.listed(r.json())
                mine, theirs = call.names(w, "A"), call.names(w, "B")
                assert theirs not in listed, (where, "shows the other city", listed)
                if role != RoleName.INVESTIGATOR or path != "/api/v1/approvals":
                    assert mine in listed or _hidden_by_design(path, role), (where, listed)
                r = _call(client, w, method, path, w.whole[role], "A")
                assert theirs in call.listed(r.json()) or _hidden_by_design(path, role), where
            else:
                r = _call(client, w, method, path, w.regional[role], "A")
                assert r.status_code not in (401, 403, 404) and r.status_code < 500, (
                    where, "inside the scope", r.status_code, r.text)
                before = _denials(session)
                r = _call(client, w, method, path, w.regional[role], "B")
                assert r.status_code == 404, (where, "outside the scope", r.status_code, r.text)
                assert r.json()["error"]["code"] == "not_found"
                assert _denials(session) == before + 1, (where, "refusal not audited")
            checked += 1
    assert checked >= 4 * (len(ROUTES) - 1)


def _hidden_by_design(path: str, role: RoleName) -> bool:
    """Investigators see the holds and cases of the cases they are members of only."""
    return role == RoleName.INVESTIGATOR and path in ("/api/v1/holds", "/api/v1/cases")


def test_outside_the_scope_reads_exactly_as_absent(client: Any, world: World) -> None:
    w = world
    who = w.headers(w.regional[RoleName.ADMIN])
    absent = client.get("/api/v1/cameras/no-such-camera/timeline", headers=who)
    hidden = client.get(f"/api/v1/cameras/{w.cameras['B'].name}/timeline", headers=who)
    assert absent.status_code == hidden.status_code == 404
    assert hidden.json()["error"]["message"] == absent.json()["error"]["message"].replace(
        "no-such-camera", w.cameras["B"].name)
    for url in (f"/api/v1/cases/{w.cases['B'].reference}", "/api/v1/cases/NO-SUCH"):
        body = client.get(url, headers=who).json()
        assert body["error"]["code"] == "not_found"
        assert body["error"]["message"].endswith("does not exist")


def test_a_partner_department_sees_only_its_cameras(client: Any, session: Session,
                                                    world: World) -> None:
    w = world
    name, token = _principal(session, RoleName.AUDITOR, w.province)
    auth_service.set_scope(session=session, principal_name=name, actor="test",
                           camera_names=[w.cameras["B"].name])
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    listed = [c["name"] for c in client.get("/api/v1/cameras", headers=headers).json()]
    assert w.cameras["B"].name in listed and w.cameras["A"].name not in listed
    assert client.get(f"/api/v1/cameras/{w.cameras['A'].name}/timeline",
                      headers=headers).status_code == 404
    assert client.get(f"/api/v1/cameras/{w.cameras['B'].name}/timeline",
                      headers=headers).status_code == 200
    # Cases: a camera-set principal sees only those it is a member of (none).
    assert client.get("/api/v1/cases", headers=headers).json() == []
    assert client.get(f"/api/v1/cases/{w.cases['B'].reference}",
                      headers=headers).status_code == 404
    # The scope change itself is audited, before and after.
    event = session.scalars(select(AuditEvent).where(
        AuditEvent.action == "principal.scope_set").order_by(AuditEvent.id.desc())).first()
    assert event is not None and event.detail["after"]["cameras"] == [w.cameras["B"].id]


def test_a_regional_admin_registers_cameras_only_in_its_region(client: Any, session: Session,
                                                               world: World) -> None:
    w = world
    who = w.headers(w.regional[RoleName.ADMIN])
    r = client.post("/api/v1/cameras", headers=who,
                    json={"name": f"x-{uuid.uuid4().hex[:6]}", "url": "rtsp://127.0.0.1/x"})
    assert r.status_code == 422 and "region" in r.json()["error"]["message"]
    r = client.post("/api/v1/cameras", headers=who, json={
        "name": f"x-{uuid.uuid4().hex[:6]}", "url": "rtsp://127.0.0.1/x",
        "region": w.province.code})  # above its own region: outside
    assert r.status_code == 404


def _admin_of(session: Session, region: Region | None,
              cameras: list[Camera] | None = None) -> dict[str, str]:
    name, token = _principal(session, RoleName.ADMIN, region)
    if cameras is not None:
        auth_service.set_scope(session=session, principal_name=name, actor="test",
                               camera_names=[c.name for c in cameras])
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def test_a_camera_set_admin_does_not_govern_regions(client: Any, session: Session,
                                                    world: World) -> None:
    w = world
    partner = _admin_of(session, None, [w.cameras["A"]])
    for url, body in (("/api/v1/retention/rules", {"region": w.regions["B"].code,
                                                   "keep_days": 31}),
                      ("/api/v1/approval/policies", {"region": w.regions["B"].code})):
        r = client.put(url, headers=partner, json=body)
        assert r.status_code == 403, (url, r.text)
    # Its own camera's rule it may set.
    r = client.put("/api/v1/retention/rules", headers=partner,
                   json={"camera": w.cameras["A"].name, "keep_days": 31})
    assert r.status_code == 200, r.text


def test_holds_of_cases_outside_the_scope_are_neither_listed_nor_released(
        client: Any, session: Session, world: World) -> None:
    """A province case holds a city camera: the city's admin sees the camera, not the
    case, so neither the hold (its case and reason) nor its release."""
    w = world
    province_investigator, _ = _principal(session, RoleName.INVESTIGATOR, w.province)
    secret = _case(session, province_investigator, w.province)
    hold = Hold(case_id=secret.id, camera_id=w.cameras["A"].id, start_at=PAST,
                end_at=PAST + timedelta(hours=1), reason="informant X",
                created_by=secret.created_by)
    session.add(hold)
    session.commit()
    city_admin = w.headers(w.regional[RoleName.ADMIN])
    listed = client.get("/api/v1/holds", headers=city_admin).json()
    assert hold.id not in [h["id"] for h in listed]
    assert secret.reference not in [h["case"] for h in listed]
    assert w.holds["A"].id in [h["id"] for h in listed]
    r = client.post(f"/api/v1/holds/{hold.id}/release", headers=city_admin,
                    json={"reason": "mine now"})
    assert r.status_code == 404
    session.refresh(hold)
    assert hold.released_at is None
    province_admin = _admin_of(session, w.province)
    assert hold.id in [h["id"] for h in client.get("/api/v1/holds",
                                                   headers=province_admin).json()]


def test_custody_events_about_cameras_outside_the_scope_are_redacted(
        client: Any, session: Session, world: World) -> None:
    from retention import service as retention_service
    from retrieval import cases as cases_service

    w = world
    province_investigator, _ = _principal(session, RoleName.INVESTIGATOR, w.province)
    case = w.cases["A"]
    session.add(CaseMember(case_id=case.id, principal_id=session.scalars(
        select(Principal.id).where(Principal.name == province_investigator)).one(),
        added_by=case.created_by))
    holder = session.scalars(select(Principal).where(
        Principal.name == province_investigator)).one()
    retention_service.place_hold(session=session, case=case, camera=w.cameras["B"],
                                 start_at=PAST, end_at=PAST + timedelta(hours=1),
                                 reason="camera B saw the car", principal=holder)
    retention_service.place_hold(session=session, case=case, camera=w.cameras["A"],
                                 start_at=PAST, end_at=PAST + timedelta(hours=1),
                                 reason="camera A saw the door", principal=holder)
    session.commit()
    city = client.get(f"/api/v1/cases/{case.reference}/custody",
                      headers=w.headers(w.regional[RoleName.INVESTIGATOR])).json()
    text = str(city)
    assert w.cameras["B"].name not in text and "saw the car" not in text
    assert "saw the door" in text and city["verified"] is True
    assert cases_service.REDACTED in [e["detail"] for e in city["events"]]
    whole = client.get(f"/api/v1/cases/{case.reference}/custody",
                       headers=w.headers(w.whole[RoleName.AUDITOR])).json()
    assert "saw the car" in str(whole)
    # Same events, same hashes: only details differ.
    assert [e["hash"] for e in city["events"]] == [e["hash"] for e in whole["events"]]


def test_only_a_principal_above_a_cameras_region_clears_its_sensitive_mark(
        client: Any, session: Session, world: World) -> None:
    w = world
    name = w.cameras["A"].name
    city_admin = w.headers(w.regional[RoleName.ADMIN])
    assert client.patch(f"/api/v1/cameras/{name}", headers=city_admin,
                        json={"sensitive": True}).status_code == 200
    r = client.patch(f"/api/v1/cameras/{name}", headers=city_admin, json={"sensitive": False})
    assert r.status_code == 403, r.text
    province_admin = _admin_of(session, w.province)
    r = client.patch(f"/api/v1/cameras/{name}", headers=province_admin,
                     json={"sensitive": False})
    assert r.status_code == 200 and r.json()["sensitive"] is False


def test_a_health_report_of_a_region_outside_the_scope_is_absent_and_audited(
        client: Any, session: Session, world: World) -> None:
    w = world
    before = _denials(session)
    r = client.get("/api/v1/health/cameras", params={"region": w.regions["B"].code},
                   headers=w.headers(w.regional[RoleName.AUDITOR]))
    assert r.status_code == 404 and _denials(session) == before + 1
    r = client.get("/api/v1/health/cameras", params={"region": w.regions["A"].code},
                   headers=w.headers(w.regional[RoleName.AUDITOR]))
    assert r.status_code == 200


# --- export approval ------------------------------------------------------------------


def test_a_pending_export_is_released_by_a_second_admin_in_scope(session: Session,
                                                                 world: World) -> None:
    w = world
    export, case = w.exports["A"], w.cases["A"]

    def principal(name: str) -> Principal:
        return session.scalars(select(Principal).where(Principal.name == name)).one()

    with pytest.raises(Conflict, match="awaits a second person's approval"):
        approval.check_released(export)
    investigator = principal(w.regional[RoleName.INVESTIGATOR])
    with pytest.raises(Forbidden, match="approved by admins"):
        approval.decide(session=session, export=export, case=case, principal=investigator,
                        approve=True, note="me")
    # The requester may not approve their own export, even as an admin.
    investigator.role = RoleName.ADMIN.value
    with pytest.raises(Forbidden, match="other than its requester"):
        approval.decide(session=session, export=export, case=case, principal=investigator,
                        approve=True, note="me")
    investigator.role = RoleName.INVESTIGATOR.value
    other_city = principal(_principal(session, RoleName.ADMIN, w.regions["B"])[0])
    with pytest.raises(scope.OutOfScope):
        approval.decide(session=session, export=export, case=case, principal=other_city,
                        approve=True, note="not mine")
    admin = principal(w.regional[RoleName.ADMIN])
    assert [e.id for e, _ in approval.pending(session=session, principal=admin)] == [
        export.id]
    approval.decide(session=session, export=export, case=case, principal=admin,
                    approve=True, note="proportionate")
    approval.check_released(export)  # no longer raises
    assert export.approval == ApprovalState.APPROVED and export.decided_by == admin.id
    with pytest.raises(Conflict, match="not awaiting approval"):
        approval.decide(session=session, export=export, case=case, principal=admin,
                        approve=False, note="changed my mind")
    from retrieval import cases as cases_service

    actions = [e.action for e, _ in cases_service.custody_log(session=session, case=case)]
    assert actions[-1] == "export_approved"
    rejected = w.exports["B"]
    approval.decide(session=session, export=rejected, case=w.cases["B"],
                    principal=principal(w.whole[RoleName.ADMIN]), approve=False, note="no")
    with pytest.raises(Conflict, match="rejected"):
        approval.check_released(rejected)


def test_an_export_request_is_held_for_approval_by_its_cameras_policy(
        session: Session, world: World) -> None:
    """Through the request path: the policy of city A (10 min) and a sensitive camera."""
    w = world
    cam = w.cameras["A"]
    export = Export(case_id=w.cases["A"].id, requested_by=w.cases["A"].created_by,
                    purpose="t")
    session.add(export)
    session.flush()
    assert approval.decide_at_request(session=session, export=export, items=[
        (cam, timedelta(minutes=5))]) == []
    assert export.approval == ApprovalState.NOT_REQUIRED
    cam.sensitive = True
    why = approval.decide_at_request(session=session, export=export, items=[
        (cam, timedelta(minutes=15))])
    assert export.approval == ApprovalState.PENDING
    assert why == [f"camera {cam.name} is sensitive (region {w.regions['A'].code})",
                   f"15 min of footage is more than 10 min (region {w.regions['A'].code})"]
    assert export.approval_reason == "; ".join(why)


# --- what the audit trail covers ---------------------------------------------------------


def test_the_trail_records_logins_views_and_every_change(client: Any, session: Session,
                                                         world: World) -> None:
    """Logins, views, verifications, rule, policy, hold, key and camera changes each
    leave an event naming who did it (exports, downloads and previews: test_exports)."""
    w = world
    admin = w.whole[RoleName.ADMIN]
    headers = w.headers(admin)
    cam, case = w.cameras["A"], w.cases["A"]
    first = session.scalar(select(func.max(AuditEvent.id)))
    calls = [
        ("GET", f"/api/v1/cameras/{cam.name}/timeline", {}),
        ("GET", f"/api/v1/cases/{case.reference}", {}),
        ("GET", f"/api/v1/cases/{case.reference}/custody", {}),
        ("PATCH", f"/api/v1/cameras/{cam.name}", {"json": {"sensitive": True}}),
        ("POST", "/api/v1/cameras", {"json": {"name": f"n-{uuid.uuid4().hex[:6]}",
                                              "url": "rtsp://127.0.0.1/x"}}),
        ("PUT", "/api/v1/retention/rules", {"json": {"camera": cam.name, "keep_days": 45}}),
        ("PUT", "/api/v1/approval/policies", {"json": {"max_duration_s": 1200}}),
        ("POST", f"/api/v1/cases/{case.reference}/holds", {"json": {
            "camera": cam.name, "from": _ago(0), "to": _ago(1), "reason": "t"}}),
        ("POST", f"/api/v1/holds/{w.holds['A'].id}/release", {"json": {"reason": "done"}}),
        ("POST", "/api/v1/keys/rotate", {"json": {"purpose": "package_signing"}}),
        ("POST", "/api/v1/verify", {"content": b"PK\x05\x06" + bytes(18),
                                    "headers": {"Content-Type": "application/zip"}}),
    ]
    for method, url, kwargs in calls:
        extra = kwargs.pop("headers", {})
        r = client.request(method, url, headers={**headers, **extra}, **kwargs)
        assert r.status_code < 400, (method, url, r.text)
    events = session.scalars(select(AuditEvent).where(AuditEvent.id > first)
                             .order_by(AuditEvent.id)).all()
    mine = [e.action for e in events if e.actor == admin]
    assert mine[0] == "auth.login"  # the first request after a long silence
    assert mine.count("auth.login") == 1  # and not every request
    for action in ("timeline.view", "case.view", "custody.view", "camera.update",
                   "camera.add", "retention.rule_set", "approval.policy_set", "hold.placed",
                   "hold.released", "keys.rotated", "package.verify"):
        assert action in mine, (action, mine)
    verified = next(e for e in events if e.action == "package.verify")
    assert verified.detail["ok"] is False and verified.target_id == (
        hashlib.sha256(b"PK\x05\x06" + bytes(18)).hexdigest())
