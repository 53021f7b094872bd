"""``vigil principal ...``, ``vigil approval ...``: who may see what, and who releases
which exports (vigil/auth/scope.py, retrieval/approval.py).

The commands act on the catalog directly, as the operator on the server; approvals
are given on behalf of a named admin (``--as``), whom the custody record names.
"""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops.evidence_cli import AsOption, _principal

principal_app = typer.Typer(no_args_is_help=True, help="Principals and their scopes.")
approval_app = typer.Typer(no_args_is_help=True,
                           help="Export approval: policies, pending exports, decisions.")

out = Console()


@principal_app.command("scope")
def principal_scope(
    name: Annotated[str, typer.Argument(help="the principal")],
    region: Annotated[str | None, typer.Option(help="bind to this region's subtree "
                                                    "(region code)")] = None,
    everywhere: Annotated[bool, typer.Option(help="bind to no region")] = False,
    camera: Annotated[list[str] | None, typer.Option(
        help="an explicit camera (repeat); replaces the camera set")] = None,
    no_cameras: Annotated[bool, typer.Option(help="drop the explicit camera set")] = False,
) -> None:
    """Set what a principal may see: a region subtree and, for partner departments, an
    explicit camera set within it."""
    from vigil.auth import scope
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    cameras = [] if no_cameras else camera
    with session_scope() as session:
        principal = auth_service.set_scope(session=session, principal_name=name, actor="cli",
                                           region_code=region, everywhere=everywhere,
                                           camera_names=cameras)
        out.print(f"{principal.name}: {scope.scope_of(session, principal).describe()}",
                  highlight=False)


@principal_app.command("show")
def principal_show(name: Annotated[str, typer.Argument(help="the principal")]) -> None:
    """A principal's role and scope."""
    from vigil.auth import scope
    from vigil.db import session_scope

    with session_scope() as session:
        principal = _principal(session, name)
        out.print(f"{principal.name} ({principal.role}): "
                  f"{scope.scope_of(session, principal).describe()}", highlight=False)


@approval_app.command("set")
def approval_set(
    region: Annotated[str | None, typer.Option(help="region code; omit for the "
                                                    "default policy")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        min=0.1, max=14_400.0,
        help="exports longer than this need approval; omit: no length does")] = None,
    sensitive: Annotated[bool, typer.Option(
        "--sensitive/--no-sensitive", help="exports of sensitive cameras need approval")
    ] = True,
    acting: AsOption = "admin",
) -> None:
    """Create or change an export approval policy."""
    from retrieval import approval
    from vigil.db import session_scope

    if max_minutes is not None and not math.isfinite(max_minutes):
        raise typer.BadParameter("a number of minutes", param_hint="--max-minutes")
    seconds = None if max_minutes is None else round(max_minutes * 60)
    with session_scope() as session:
        approval.set_policy(session=session, principal=_principal(session, acting),
                            region_code=region, max_duration_s=seconds,
                            sensitive_cameras=sensitive)
    out.print(f"approval policy for {region or 'default'} set")


@approval_app.command("list")
def approval_list(acting: AsOption = "admin") -> None:
    """The approval policies."""
    from retrieval import approval
    from vigil.db import session_scope

    table = Table("scope", "needs approval beyond", "sensitive cameras", "updated")
    with session_scope() as session:
        for p in approval.list_policies(session=session,
                                        principal=_principal(session, acting)):
            table.add_row(p.scope, "—" if p.max_duration_s is None
                          else f"{p.max_duration_s / 60:g} min",
                          "need approval" if p.sensitive_cameras else "no",
                          p.updated_at.isoformat(timespec="seconds"))
    out.print(table)


@approval_app.command("pending")
def approval_pending(acting: AsOption = "admin") -> None:
    """Exports awaiting approval that the admin named by --as may decide on."""
    from retrieval import approval
    from vigil.db import session_scope

    table = Table("export", "case", "requested", "why")
    with session_scope() as session:
        for export, case in approval.pending(session=session,
                                             principal=_principal(session, acting)):
            table.add_row(str(export.id), case.reference,
                          export.created_at.isoformat(timespec="seconds"),
                          export.approval_reason or "")
    out.print(table)


def _decide(export_id: str, note: str, acting: str, approve: bool) -> None:
    from retrieval import approval, exports
    from vigil.db import session_scope

    with session_scope() as session:
        principal = _principal(session, acting)
        export, case = exports.get_export(session=session, export_id=export_id,
                                          principal=principal)
        approval.decide(session=session, export=export, case=case, principal=principal,
                        approve=approve, note=note)
    out.print(f"export {export_id} {'approved' if approve else 'rejected'}")


@approval_app.command("approve")
def approval_approve(export_id: str, note: Annotated[str, typer.Option(help="why")],
                     acting: AsOption = "admin") -> None:
    """Release an export's package (an admin other than its requester)."""
    _decide(export_id, note, acting, approve=True)


@approval_app.command("reject")
def approval_reject(export_id: str, note: Annotated[str, typer.Option(help="why")],
                    acting: AsOption = "admin") -> None:
    """Refuse an export's package: it is never released."""
    _decide(export_id, note, acting, approve=False)


def register(app: typer.Typer) -> None:
    app.add_typer(principal_app, name="principal")
    app.add_typer(approval_app, name="approval")
