"""``vigil jwt ...``: OIDC token administration (vigil/auth/oidc.py).

Revocations are made on behalf of a named admin (``--as``, default ``admin``: the one
``vigil run`` creates), whom the audit trail names.
"""

from __future__ import annotations

from typing import Annotated

import typer

jwt_app = typer.Typer(help="OIDC bearer JWTs: revoke one before it expires.",
                      no_args_is_help=True)


@jwt_app.command("revoke")
def revoke(
    jti: Annotated[str, typer.Argument(help="the token's jti claim")],
    expires: Annotated[str, typer.Option(
        "--expires", help="the token's exp (or later), ISO 8601 with offset; the "
                          "revocation is kept until then")],
    issuer: Annotated[str | None, typer.Option(
        help="the token's issuer (default: VIGIL_OIDC_ISSUER)")] = None,
    acting: Annotated[str, typer.Option("--as", help="the admin acting (the audit trail "
                                                     "names them)")] = "admin",
) -> None:
    """Refuse the token with this jti from now on, however long it has left."""
    from ops.cli import _settings, out
    from ops.evidence_cli import _principal
    from vigil.auth import oidc
    from vigil.catalog.models import RoleName
    from vigil.db import session_scope
    from vigil.errors import Forbidden, InvalidInput
    from vigil.intervals import parse_instant

    expires_at = parse_instant(expires)
    issuer = issuer or _settings().oidc_issuer
    if not issuer:
        raise InvalidInput("give --issuer, or set VIGIL_OIDC_ISSUER")
    with session_scope() as session:
        admin = _principal(session, acting)
        if admin.role != RoleName.ADMIN:
            raise Forbidden(f"{acting!r} is not an admin: only admins revoke tokens")
        oidc.revoke_jwt(session=session, jti=jti, issuer=issuer, expires_at=expires_at,
                        actor=admin.name, principal_id=admin.id)
    out.print(f"revoked jti {jti!r} of {issuer} until {expires_at.isoformat()}",
              highlight=False)


@jwt_app.command("prune")
def prune() -> None:
    """Forget revocations of tokens that have expired (they are refused for their age)."""
    from datetime import UTC, datetime

    from ops.cli import out
    from vigil.auth import oidc
    from vigil.db import session_scope

    with session_scope() as session:
        removed = oidc.prune_revoked(session=session, now=datetime.now(UTC))
    out.print(f"forgot {removed} expired revocation(s)", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(jwt_app, name="jwt")
