"""FastAPI guards: every API route declares exactly one ``RoleRule``.

A route's rule is an object, not a closure, so that the authorisation matrix can be
read back from the app's route table (``rules_of``) and a route without a rule can
be found by a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from vigil import audit
from vigil.auth import scope
from vigil.auth import service as auth_service
from vigil.auth.scope import OutOfScope
from vigil.catalog.models import Principal, RoleName
from vigil.db import session_factory
from vigil.errors import Forbidden, Unauthenticated
from vigil.settings import get_settings

_bearer = HTTPBearer(auto_error=False,
                     description="A Vigil API token (vgl_...) or an OIDC access token (JWT)")


def serve_request(session: Session) -> Iterator[Session]:
    """Lend ``session`` to one request. Routes that write call ``session.commit()``
    themselves (the request owns the commit); ``get_session`` rolls back anything
    uncommitted.

    A request refused as out of scope is rolled back, then the refusal itself is
    audited and committed: the caller sees a plain 404, the trail sees who probed what.
    """
    try:
        yield session
    except OutOfScope as denied:
        session.rollback()
        audit.record(session=session, actor=denied.actor, principal_id=denied.principal_id,
                     action="scope.denied", target_type=denied.target_type,
                     target_id=denied.target_id)
        session.commit()
        raise


def get_session() -> Iterator[Session]:
    """One session per request (``serve_request``)."""
    session = session_factory()()
    try:
        yield from serve_request(session)
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # The API's rate limits (imported here: retrieval.limits imports this module).
    from retrieval import limits

    limits.refuse_locked_out(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
    try:
        principal = auth_service.authenticate_bearer(
            session=session, token=credentials.credentials, settings=get_settings())
    except Unauthenticated as refused:
        limits.note_auth_failure(request, credentials.credentials, refused)
        raise
    session.commit()  # last_used_at, if it moved
    return principal


class RoleRule:
    """Dependency that admits principals holding one of ``roles``; with ``system``,
    only those whose scope is everything (system-wide operations, vigil/auth/scope.py).
    Everything else about scope is the services' business: they filter and refuse."""

    def __init__(self, *roles: RoleName, system: bool = False) -> None:
        if not roles:
            raise ValueError("a rule must admit at least one role")
        self.roles = frozenset(roles)
        self.system = system

    def __call__(self, request: Request, session: SessionDep,
                 principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if RoleName(principal.role) not in self.roles:
            raise Forbidden(f"role {principal.role!r} may not {request.method} "
                            f"{request.url.path}")
        if self.system:
            scope.require_whole(session, principal, f"{request.method} {request.url.path}")
        return principal

    def __repr__(self) -> str:
        system = ", system" if self.system else ""
        return f"RoleRule({', '.join(sorted(r.value for r in self.roles))}{system})"


def allow(*roles: RoleName, system: bool = False) -> RoleRule:
    return RoleRule(*roles, system=system)


def rules_of(route: APIRoute) -> list[RoleRule]:
    """The RoleRules a route depends on, found anywhere in its dependency tree."""
    found: list[RoleRule] = []
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RoleRule):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    return found


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute of an app, descending into included routers.

    FastAPI keeps an included router as one wrapper route that holds the original
    router; routers here carry their full prefix themselves, so a route's ``path``
    is its public path.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from api_routes(inner.routes)
        elif (inner_routes := getattr(route, "routes", None)) is not None:
            yield from api_routes(inner_routes)


__all__ = ["RoleRule", "SessionDep", "allow", "api_routes", "current_principal", "get_session",
           "rules_of", "serve_request"]
