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

from vigil.auth import service as auth_service
from vigil.catalog.models import Principal, RoleName
from vigil.db import session_factory
from vigil.errors import Forbidden, Unauthenticated
from vigil.settings import get_settings

_bearer = HTTPBearer(auto_error=False, description="A Vigil API token (vgl_...)")


def get_session() -> Iterator[Session]:
    """One session per request. Routes that write call ``session.commit()``
    themselves (the request owns the commit); anything uncommitted is rolled back."""
    session = session_factory()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def current_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
    principal = auth_service.authenticate_bearer(session=session, token=credentials.credentials,
                                                 settings=get_settings())
    session.commit()  # last_used_at, if it moved
    return principal


class RoleRule:
    """Dependency that admits principals holding one of ``roles``."""

    def __init__(self, *roles: RoleName) -> None:
        if not roles:
            raise ValueError("a rule must admit at least one role")
        self.roles = frozenset(roles)

    def __call__(self, request: Request,
                 principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if RoleName(principal.role) not in self.roles:
            raise Forbidden(f"role {principal.role!r} may not {request.method} "
                            f"{request.url.path}")
        return principal

    def __repr__(self) -> str:
        return f"RoleRule({', '.join(sorted(r.value for r in self.roles))})"


def allow(*roles: RoleName) -> RoleRule:
    return RoleRule(*roles)


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
           "rules_of"]
