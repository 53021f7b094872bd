"""`vigil keys ...`: list and rotate keys, re-wrap data keys.

The commands act on the catalog and the key ring directly, as the operator on the
server. Key material is never printed: KEKs are shown by identity, signing keys by
the fingerprint of their public key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

keys_app = typer.Typer(help="Keys: list, rotate, re-wrap.", no_args_is_help=True)

out = Console()
err = Console(stderr=True)


class Rotatable(StrEnum):
    """The purposes ``keys.rotate`` accepts (``keys.ROTATABLE``; a test keeps them equal).
    Spelled out here so that the CLI starts without importing the catalog."""

    KEK = "kek"
    CHECKPOINT_SIGNING = "checkpoint_signing"
    PACKAGE_SIGNING = "package_signing"
    AUDIT_SIGNING = "audit_signing"


def _when(at) -> str:  # noqa: ANN001 - datetime | None
    return at.isoformat(timespec="seconds") if at is not None else "-"


@keys_app.command("list")
def keys_list() -> None:
    """Every key: purpose, version, state, fingerprint (signing keys), data keys (KEKs)."""
    from vigil import keys
    from vigil.db import session_scope

    table = Table("purpose", "version", "state", "fingerprint (sha256 of public key)",
                  "data keys", "created (UTC)", "retired (UTC)")
    with session_scope() as session:
        for item in keys.list_keys(session=session):
            k = item.key
            table.add_row(k.purpose.value, str(k.version), k.state.value, k.fingerprint or "-",
                          "-" if item.data_keys is None else str(item.data_keys),
                          _when(k.created_at), _when(k.retired_at))
    out.print(table)


@keys_app.command("rotate")
def keys_rotate(
    purpose: Annotated[Rotatable, typer.Option(help="which key")],
    acting: Annotated[str | None, typer.Option(
        "--as", help="an admin principal the audit trail names (default: the actor 'cli')")]
    = None,
) -> None:
    """Make a new version of a key active and retire the old one.

    The old one is kept, to unwrap or to verify. After a KEK rotation the worker
    re-wraps data keys within a minute, or run `vigil keys rewrap`."""
    from vigil import keys
    from vigil.catalog.models import KeyPurpose
    from vigil.db import session_scope

    with session_scope() as session:
        actor, principal_id = _actor(session, acting)
        new = keys.rotate(session=session, provider=keys.file_key_ring(_home()),
                          purpose=KeyPurpose(purpose.value), actor=actor,
                          principal_id=principal_id)
        version, fingerprint = new.version, new.fingerprint
    out.print(f"{purpose.value} rotated: version {version} is active"
              + (f" (fingerprint {fingerprint})" if fingerprint else ""), highlight=False)
    if purpose is Rotatable.KEK:
        err.print("data keys are re-wrapped by the worker, or now with `vigil keys rewrap`")


@keys_app.command("rewrap")
def keys_rewrap() -> None:
    """Re-wrap every data key still under a retired KEK, now.

    Then destroy the retired KEKs that no data key needs, once their grace period
    (`KEK_DESTROY_GRACE`) has passed."""
    from vigil import key_tasks, keys
    from vigil.db import session_scope

    columns = (TextColumn("re-wrapping"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with session_scope() as session:
        total = keys.pending_rewrap(session=session)
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task("rewrap", total=total)
            outcome = key_tasks.rewrap_all(
                session=session, provider=keys.file_key_ring(_home()), actor="cli",
                on_batch=lambda n: progress.advance(task, n))
    out.print(f"{outcome.rewrapped} data key(s) re-wrapped, {outcome.remaining} left; "
              "retired KEK version(s) destroyed: "
              f"{', '.join(map(str, outcome.destroyed_versions)) or 'none'}", highlight=False)


def _home():  # noqa: ANN202 - Path
    from vigil.settings import get_settings

    return get_settings().home_dir


def _actor(session, name: str | None) -> tuple[str, int | None]:  # noqa: ANN001 - Session
    """("cli", None), or a named admin principal's name and id."""
    if name is None:
        return "cli", None
    from sqlalchemy import select

    from vigil.catalog.models import Principal, RoleName
    from vigil.errors import Forbidden, NotFound

    principal = session.scalars(select(Principal).where(Principal.name == name)).one_or_none()
    if principal is None or principal.disabled_at is not None:
        raise NotFound(f"principal {name!r} does not exist")
    if RoleName(principal.role) != RoleName.ADMIN:
        raise Forbidden(f"principal {name!r} is {principal.role}; only an admin rotates keys")
    return principal.name, principal.id


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
