"""Bearer tokens: issued once, stored only as SHA-256 hashes, checked per request.

Tokens are 256 random bits, so a plain SHA-256 of the token is a sound verifier
(no password stretching is needed for high-entropy secrets) and lets the lookup be
an index probe on ``api_tokens.token_hash``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from vigil import audit
from vigil.catalog.models import ApiToken, Principal, RoleName
from vigil.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from vigil.settings import Settings

TOKEN_PREFIX: Final = "vgl_"  # noqa: S105 - a public marker, not a secret
TOKEN_RANDOM_BYTES: Final = 32
# Longest accepted bearer value; anything longer is rejected before hashing.
MAX_TOKEN_CHARS: Final = 256
# last_used_at is refreshed at most this often, so that reads stay reads.
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)


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
    issuer is configured, a JWT from it."""
    if token.startswith(TOKEN_PREFIX) or not settings.oidc_issuer:
        return authenticate(session=session, token=token, now=now)
    from vigil.auth import oidc

    return oidc.authenticate(session=session, token=token, settings=settings, now=now)


def authenticate(*, session: Session, token: str, now: datetime | None = None) -> Principal:
    """The principal a bearer token belongs to; Unauthenticated for anything else.

    The message never says which check failed beyond "invalid or expired", so that
    a caller cannot probe for revoked or disabled tokens.
    """
    now = now or datetime.now(UTC)
    if not token or len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("invalid or expired token")
    row = session.scalars(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
    if (row is None or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
            or row.principal.disabled_at is not None):
        raise Unauthenticated("invalid or expired token")
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
