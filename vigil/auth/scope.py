"""Tiered access (分级授权): what part of the system a principal may see.

A principal is bound to a region subtree (``Principal.region_id``; NULL: every
region) and, for partner departments, optionally to an explicit camera set
(``principal_cameras``). Its scope is the intersection: cameras of the subtree, and
of those only the listed ones when there is a list. Cases carry the region of the
person who opened them.

Everything outside the scope is answered as absent (``OutOfScope`` is a
``NotFound`` with the same message), so that existence is not leaked, and each such
refusal is audited (``vigil/auth/api.py`` records it after rolling the request back).
System-wide operations (keys, the audit trail, the default retention rule, storage
state) need a principal whose scope is everything (``Scope.whole``).

The rules themselves are pure (``covers_*``); the SQL predicates and the loading of
a principal's scope are the thin adapters below them (docs/design/access.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, select, true
from sqlalchemy.orm import Session

from vigil.catalog.models import Camera, Principal, PrincipalCamera, Region
from vigil.errors import Forbidden, NotFound

# Session.info key under which scopes are cached, per principal id and region.
_CACHE: Final = "vigil.scopes"


class OutOfScope(NotFound):
    """Something exists but lies outside the caller's scope. Answered exactly as absent
    (404, the same message); the API audits it as ``scope.denied``."""

    def __init__(self, message: str, *, principal: Principal, target_type: str,
                 target_id: str) -> None:
        super().__init__(message)
        self.principal_id = principal.id
        self.actor = principal.name
        self.target_type = target_type
        self.target_id = target_id


@dataclass(frozen=True)
class Scope:
    """A principal's reach. ``region_path`` None: every region; ``camera_ids`` None:
    every camera of the region subtree."""

    region_path: str | None = None
    camera_ids: frozenset[int] | None = None

    @property
    def whole(self) -> bool:
        return self.region_path is None and self.camera_ids is None

    def describe(self) -> dict[str, Any]:
        return {"region_path": self.region_path,
                "cameras": None if self.camera_ids is None else sorted(self.camera_ids)}

    # --- the rules (pure) --------------------------------------------------------------

    def covers_region_path(self, path: str | None) -> bool:
        """A region (by path; None: no region) lies in the subtree. Things without a
        region belong to whole-region scopes only."""
        if self.region_path is None:
            return True
        return path is not None and path.startswith(self.region_path)

    def covers_camera(self, *, camera_id: int, region_path: str | None) -> bool:
        return self.covers_region_path(region_path) and (
            self.camera_ids is None or camera_id in self.camera_ids)

    def covers_case(self, *, region_path: str | None, member: bool) -> bool:
        """A case lies in the region subtree; a principal bound to a camera set (a
        partner department) sees only the cases it is a member of."""
        return self.covers_region_path(region_path) and (self.camera_ids is None or member)

    # --- SQL predicates ----------------------------------------------------------------

    def region_clause(self, region_id: Any) -> ColumnElement[bool]:
        """``region_id`` (a column) lies in the subtree."""
        if self.region_path is None:
            return true()
        return region_id.in_(select(Region.id).where(Region.path.startswith(self.region_path)))

    def camera_clause(self, camera_id: Any = Camera.id,
                      region_id: Any = Camera.region_id) -> ColumnElement[bool]:
        """A camera (by its id and region columns) lies in the scope."""
        clauses = [self.region_clause(region_id)]
        if self.camera_ids is not None:
            clauses.append(camera_id.in_(sorted(self.camera_ids)))
        return and_(*clauses)

    def camera_id_clause(self, camera_id: Any) -> ColumnElement[bool]:
        """A camera id column (of holds, exports, rules...) names a camera in scope."""
        if self.whole:
            return true()
        return camera_id.in_(select(Camera.id).where(self.camera_clause()))


def scope_of(session: Session, principal: Principal) -> Scope:
    """The principal's scope, read once per session."""
    cache: dict[tuple[int, int | None], Scope] = session.info.setdefault(_CACHE, {})
    key = (principal.id, principal.region_id)
    if (found := cache.get(key)) is not None:
        return found
    path = None
    if principal.region_id is not None:
        path = session.scalars(select(Region.path).where(
            Region.id == principal.region_id)).one()
    ids = frozenset(session.scalars(select(PrincipalCamera.camera_id).where(
        PrincipalCamera.principal_id == principal.id)))
    scope = Scope(region_path=path, camera_ids=ids or None)
    cache[key] = scope
    return scope


def visible_camera_ids(session: Session, principal: Principal) -> frozenset[int] | None:
    """Ids of the cameras in the principal's scope; None when that is every camera."""
    reach = scope_of(session, principal)
    if reach.whole:
        return None
    return frozenset(session.scalars(select(Camera.id).where(reach.camera_clause())))


def forget(session: Session) -> None:
    """Drop cached scopes (after a principal's scope changed in this session)."""
    session.info.pop(_CACHE, None)


def region_path_of(session: Session, region_id: int | None) -> str | None:
    if region_id is None:
        return None
    return session.scalars(select(Region.path).where(Region.id == region_id)).one()


def require_whole(session: Session, principal: Principal, what: str) -> None:
    """System-wide operations are for principals whose scope is everything."""
    if not scope_of(session, principal).whole:
        raise Forbidden(f"{what} is system-wide: it needs a principal bound to no region "
                        "and no camera set")


def require_region_authority(session: Session, principal: Principal, what: str) -> None:
    """Settings of whole regions (retention rules, approval policies) are not for a
    principal bound to a camera set: it may see a few cameras of a region, not
    govern the region."""
    if scope_of(session, principal).camera_ids is not None:
        raise Forbidden(f"{what} of regions are not set by a principal bound to a "
                        "camera set")


def above(session: Session, principal: Principal, camera: Camera) -> bool:
    """The principal sits above the camera's own region: bound to nothing, or to a
    region of which the camera's is a strict descendant."""
    reach = scope_of(session, principal)
    if reach.camera_ids is not None:
        return False
    if reach.region_path is None:
        return True
    path = region_path_of(session, camera.region_id)
    return path is not None and path != reach.region_path and path.startswith(
        reach.region_path)


def check_camera(session: Session, principal: Principal, camera: Camera) -> Camera:
    """``camera`` if it lies in the principal's scope; ``OutOfScope`` (as absent) if not."""
    scope = scope_of(session, principal)
    if not scope.covers_camera(camera_id=camera.id,
                               region_path=region_path_of(session, camera.region_id)):
        raise OutOfScope(f"camera {camera.name!r} does not exist", principal=principal,
                         target_type="camera", target_id=str(camera.id))
    return camera


def check_region(session: Session, principal: Principal, region: Region,
                 echoed: str) -> Region:
    """``region`` if it lies in the principal's subtree; as absent (``echoed`` names it
    in the message as the caller did) if not."""
    if not scope_of(session, principal).covers_region_path(region.path):
        raise OutOfScope(f"region {echoed!r} does not exist", principal=principal,
                         target_type="region", target_id=str(region.id))
    return region


def set_cameras(*, session: Session, principal: Principal, camera_ids: Iterable[int],
                actor: Principal | None) -> None:
    """Replace the principal's explicit camera set (empty: no camera set)."""
    wanted = set(camera_ids)
    have = set(session.scalars(select(PrincipalCamera.camera_id).where(
        PrincipalCamera.principal_id == principal.id)))
    for camera_id in have - wanted:
        session.delete(session.get(PrincipalCamera, (principal.id, camera_id)))
    for camera_id in sorted(wanted - have):
        session.add(PrincipalCamera(principal_id=principal.id, camera_id=camera_id,
                                    added_by=None if actor is None else actor.id))
    session.flush()
    forget(session)


__all__ = ["OutOfScope", "Scope", "above", "check_camera", "check_region", "forget",
           "region_path_of", "require_region_authority", "require_whole", "scope_of",
           "set_cameras", "visible_camera_ids"]
