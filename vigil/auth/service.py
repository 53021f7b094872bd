"""Bearer tokens: issued once, stored only as SHA-256 hashes, checked per request.

Tokens are 256 random bits, so a plain SHA-256 of the token is a sound verifier
(no password stretching is needed for high-entropy secrets) and lets the lookup be
an index probe on ``api_tokens.token_hash``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil import audit
from vigil.catalog.models import ApiToken, Camera, Principal, Region, RoleName
from vigil.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from vigil.settings import Settings

TOKEN_PREFIX: Final = "vgl_"  # noqa: S105 - a public marker, not a secret
TOKEN_RANDOM_BYTES: Final = 32
# Longest accepted bearer value; anything longer is rejected before hashing.
MAX_TOKEN_CHARS: Final = 256
# last_used_at is refreshed at most this often, so that reads stay reads.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
# A request after this long without one starts a new session: a login, audited.
LOGIN_IDLE: Final = timedelta(minutes=30)


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once, never stored
    token_id: int
    principal_id: int


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_role(role: str) -> RoleName:
    try:
        return RoleName(role)
    except ValueError:
        allowed = ", ".join(r.value for r in RoleName)
        raise InvalidInput(f"unknown role {role!r}; roles are {allowed}") from None


def ensure_principal(*, session: Session, name: str, role: RoleName) -> Principal:
    """The principal called ``name``, created with ``role`` if it does not exist."""
    name = name.strip()
    if not name:
        raise InvalidInput("a principal needs a name")
    principal = session.scalars(select(Principal).where(Principal.name == name)).one_or_none()
    if principal is None:
        principal = Principal(name=name, role=role.value)
        session.add(principal)
        session.flush()
    elif principal.role != role.value:
        raise Conflict(f"principal {name!r} exists with role {principal.role!r}, "
                       f"not {role.value!r}")
    return principal


def issue_token(*, session: Session, principal_name: str, role: str, label: str,
                actor: str, expires_at: datetime | None = None) -> IssuedToken:
    """Create a token for ``principal_name`` (creating the principal if new)."""
    principal = ensure_principal(session=session, name=principal_name, role=parse_role(role))
    if principal.disabled_at is not None:
        raise Conflict(f"principal {principal.name!r} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    row = ApiToken(principal_id=principal.id, token_hash=hash_token(token),
                   display_prefix=token[:12], label=label, expires_at=expires_at)
    session.add(row)
    session.flush()
    audit.record(session=session, actor=actor, action="token.create",
                 target_type="principal", target_id=str(principal.id),
                 detail={"principal": principal.name, "role": principal.role,
                         "label": label, "token_prefix": row.display_prefix})
    return IssuedToken(token=token, token_id=row.id, principal_id=principal.id)


def authenticate_bearer(*, session: Session, token: str, settings: Settings,
                        now: datetime | None = None) -> Principal:
    """The principal of a bearer value: a Vigil token (``vgl_...``) or, when an OIDC
    issuer is configured, a JWT from it. A first request after ``LOGIN_IDLE`` of
    silence is a login, and audited as one."""
    now = now or datetime.now(UTC)
    if token.startswith(TOKEN_PREFIX) or not settings.oidc_issuer:
        principal, via = authenticate(session=session, token=token, now=now), "token"
    else:
        from vigil.auth import oidc

        principal = oidc.authenticate(session=session, token=token, settings=settings, now=now)
        via = "oidc"
    note_seen(session=session, principal=principal, via=via, now=now)
    return principal


def note_seen(*, session: Session, principal: Principal, via: str, now: datetime) -> None:
    """Keep ``last_seen_at`` (to the minute) and audit a login after an idle spell."""
    last = principal.last_seen_at
    if last is not None and now - last < LAST_USED_RESOLUTION:
        return
    principal.last_seen_at = now
    if last is None or now - last >= LOGIN_IDLE:
        audit.record(session=session, actor=principal.name, principal_id=principal.id,
                     action="auth.login", target_type="principal",
                     target_id=str(principal.id), detail={"via": via})
    session.flush()


def authenticate(*, session: Session, token: str, now: datetime | None = None) -> Principal:
    """The principal a bearer token belongs to; Unauthenticated for anything else.

    The message never says which check failed beyond "invalid or expired", so that
    a caller cannot probe for revoked or disabled tokens. A token Vigil issued (its
    hash is stored) that is revoked, expired or of a disabled principal is refused
    as a ``known_credential``: stale, not guessed.
    """
    now = now or datetime.now(UTC)
    if not token or len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("invalid or expired token")
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
    if row is None:
        raise Unauthenticated("invalid or expired token")
    if (row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
            or row.principal.disabled_at is not None):
        raise Unauthenticated("invalid or expired token", known_credential=True)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.flush()
    return row.principal


def revoke_token(*, session: Session, token_id: int, actor: str) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
        audit.record(session=session, actor=actor, action="token.revoke",
                     target_type="token", target_id=str(token_id),
                     detail={"token_prefix": row.display_prefix})


def set_scope(*, session: Session, principal_name: str, actor: str,
              region_code: str | None = None, everywhere: bool = False,
              camera_names: Sequence[str] | None = None) -> Principal:
    """Bind a principal to a region subtree (or, ``everywhere``, to none) and/or replace
    its explicit camera set (``camera_names``; empty: no camera set). Audited."""
    from vigil.auth import scope

    principal = session.scalars(select(Principal).where(
        Principal.name == principal_name)).one_or_none()
    if principal is None:
        raise NotFound(f"principal {principal_name!r} does not exist")
    if region_code is not None and everywhere:
        raise InvalidInput("a principal is bound to a region or to everywhere, not both")
    before = scope.scope_of(session, principal).describe()
    if everywhere:
        principal.region_id = None
    elif region_code is not None:
        region = session.scalars(select(Region).where(Region.code == region_code)).one_or_none()
        if region is None:
            raise NotFound(f"region {region_code!r} does not exist")
        principal.region_id = region.id
    if camera_names is not None:
        ids = []
        for name in camera_names:
            camera_id = session.scalars(select(Camera.id).where(Camera.name == name)).first()
            if camera_id is None:
                raise NotFound(f"camera {name!r} does not exist")
            ids.append(camera_id)
        scope.set_cameras(session=session, principal=principal, camera_ids=ids, actor=None)
    session.flush()  # scopes are cached per (principal, region); set_cameras forgets
    after = scope.scope_of(session, principal).describe()
    audit.record(session=session, actor=actor, action="principal.scope_set",
                 target_type="principal", target_id=str(principal.id),
                 detail={"principal": principal.name, "before": before, "after": after})
    return principal
