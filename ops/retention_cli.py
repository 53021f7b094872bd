"""`vigil retention ...`, `vigil hold ...` and `vigil storage probe`: rules, previews,
sweeps, evidence holds, and what the object store enforces.

Changes are made on behalf of a named admin (``--as``, default ``admin``: the one
``vigil run`` creates), whom the audit trail names.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from ops.evidence_cli import _principal

retention_app = typer.Typer(help="Retention rules, their preview, and the sweeper.",
                            no_args_is_help=True)
hold_app = typer.Typer(help="Evidence holds: footage kept whatever the rules say.",
                       no_args_is_help=True)
storage_app = typer.Typer(help="The object store.", no_args_is_help=True)

AsAdmin = Annotated[str, typer.Option("--as", help="the admin acting (the audit trail "
                                                   "names them)")]
CameraOpt = Annotated[str | None, typer.Option(help="a camera's name")]
RegionOpt = Annotated[str | None, typer.Option(help="a region's code (with its subtree)")]
DefaultOpt = Annotated[bool, typer.Option("--default", help="the default rule")]


def _console():  # noqa: ANN202 - rich consoles, shared with ops.cli
    from ops.cli import err, out

    return out, err


def _admin(session, name: str):  # noqa: ANN001, ANN202 - ORM types
    from vigil.catalog.models import RoleName
    from vigil.errors import Forbidden

    principal = _principal(session, name)
    if principal.role != RoleName.ADMIN:
        raise Forbidden(f"{name!r} is not an admin: only admins change retention and "
                        "release holds")
    return principal


def _scope(camera: str | None, region: str | None, default: bool):  # noqa: ANN202
    from retention.service import Scope
    from vigil.errors import InvalidInput

    if (camera is not None) + (region is not None) + default != 1:
        raise InvalidInput("give exactly one of --camera, --region or --default")
    return Scope(camera=camera, region=region)


@retention_app.command("list")
def rules_list() -> None:
    """The rules, most general first."""
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    with session_scope() as session:
        rules = service.list_rules(session=session)
    table = Table("scope", "keep days", "changed")
    for r in rules:
        table.add_row(r.scope, str(r.keep_days), r.updated_at.isoformat(timespec="seconds"))
    out.print(table if rules else "no retention rules: footage is kept")


@retention_app.command("set")
def rules_set(
    keep_days: Annotated[int, typer.Argument(help="days of footage to keep")],
    camera: CameraOpt = None, region: RegionOpt = None, default: DefaultOpt = False,
    acting: AsAdmin = "admin",
) -> None:
    """Create or change a rule (never below VIGIL_RETENTION_FLOOR_DAYS)."""
    from ops.cli import _settings
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    scope = _scope(camera, region, default)
    with session_scope() as session:
        service.set_rule(session=session, scope=scope, keep_days=keep_days,
                         floor_days=_settings().retention_floor_days,
                         principal=_admin(session, acting))
    out.print(f"retention rule set: keep {keep_days} days", highlight=False)


@retention_app.command("remove")
def rules_remove(camera: CameraOpt = None, region: RegionOpt = None,
                 default: DefaultOpt = False, acting: AsAdmin = "admin") -> None:
    """Remove a rule: the next more general one governs."""
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    scope = _scope(camera, region, default)
    with session_scope() as session:
        service.remove_rule(session=session, scope=scope, principal=_admin(session, acting))
    out.print("retention rule removed")


@retention_app.command("preview")
def rules_preview(camera: CameraOpt = None) -> None:
    """Per camera, what the next sweep deletes (count, bytes, time range), and what
    holds keep. Nothing is deleted."""
    from ops.cli import _settings
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    with session_scope() as session:
        rows = service.preview(session=session, camera=camera,
                               floor_days=_settings().retention_floor_days)
    table = Table("camera", "rule", "keep days", "chunks", "MB", "from", "to", "held")
    for r in rows:
        table.add_row(r.camera, r.rule or "none (kept)", str(r.keep_days or "-"),
                      str(r.chunks), f"{r.stored_bytes / 1e6:.1f}",
                      r.start_at.isoformat() if r.start_at else "-",
                      r.end_at.isoformat() if r.end_at else "-", str(r.held_chunks))
    out.print(table)


@retention_app.command("sweep")
def rules_sweep(
    camera: CameraOpt = None,
    limit: Annotated[int | None, typer.Option(help="delete at most this many chunks")]
    = None,
) -> None:
    """Delete what the rules expire now (the worker does it every 5 minutes)."""
    from ops.cli import _settings
    from retention import sweep, worm
    from vigil.objectstore import get_object_store

    out, _ = _console()
    settings = _settings()
    worm.sync_legal_holds(settings=settings, store=get_object_store(settings))
    with Progress(transient=True) as progress:
        task = progress.add_task("sweeping", total=None)
        report = sweep.sweep(settings=settings, camera=camera, limit=limit,
                             on_progress=lambda n: progress.update(task, completed=n))
    table = Table("camera", "chunks", "MB", "from", "to")
    for name, c in sorted(report.cameras.items()):
        table.add_row(name, str(c.chunks), f"{c.stored_bytes / 1e6:.1f}",
                      c.start_at.isoformat() if c.start_at else "-",
                      c.end_at.isoformat() if c.end_at else "-")
    out.print(table)
    out.print(f"deleted {report.chunks} chunk(s), {report.stored_bytes:,} bytes; finished "
              f"{report.resumed} left by an interrupted sweep; {len(report.refused)} "
              "refused by the object store", highlight=False)
    if report.refused:
        raise typer.Exit(1)


@hold_app.command("place")
def hold_place(
    case: Annotated[str, typer.Argument(help="the case reference")],
    camera: Annotated[str, typer.Option(help="the camera's name")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    reason: Annotated[str, typer.Option(help="why the footage is held")],
    acting: Annotated[str, typer.Option("--as", help="an admin, or an investigator member "
                                                     "of the case")] = "admin",
) -> None:
    """Hold a camera's range for a case: kept whatever the rules say."""
    from recorder.service import get_camera
    from retention import service
    from retrieval import cases
    from vigil.db import session_scope
    from vigil.intervals import parse_instant

    out, _ = _console()
    with session_scope() as session:
        principal = _principal(session, acting)
        the_case = cases.acting_case(session=session, reference=case, principal=principal)
        hold = service.place_hold(session=session, case=the_case,
                                  camera=get_camera(session=session, name=camera),
                                  start_at=parse_instant(start), end_at=parse_instant(end),
                                  reason=reason, principal=principal)
        hold_id = hold.id
    out.print(f"hold {hold_id} placed")


@hold_app.command("release")
def hold_release(
    hold_id: Annotated[int, typer.Argument(help="the hold's id (vigil hold list)")],
    reason: Annotated[str, typer.Option(help="why it is released")],
    acting: AsAdmin = "admin",
) -> None:
    """Release a hold (admins only): the footage falls back under its rule."""
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    with session_scope() as session:
        service.release_hold(session=session, hold_id=hold_id, reason=reason,
                             principal=_admin(session, acting))
    out.print(f"hold {hold_id} released")


@hold_app.command("list")
def hold_list(
    case: Annotated[str | None, typer.Option(help="a case reference")] = None,
    camera: CameraOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="released holds too")] = False,
) -> None:
    """Holds, unreleased ones unless --all."""
    from retention import service
    from vigil.db import session_scope

    out, _ = _console()
    with session_scope() as session:
        holds = service.list_holds(session=session, case=case, camera=camera,
                                   include_released=all_)
    table = Table("id", "case", "camera", "from", "to", "reason", "released")
    for h in holds:
        table.add_row(str(h.id), h.case, h.camera, h.start_at.isoformat(),
                      h.end_at.isoformat(), h.reason,
                      f"{h.released_at:%Y-%m-%d %H:%M} ({h.release_reason})"
                      if h.released_at else "")
    out.print(table)


@storage_app.command("probe")
def storage_probe() -> None:
    """Check what the object store enforces (lock a canary, try to delete it)."""
    from ops.cli import _settings
    from retention import worm
    from vigil.db import session_scope
    from vigil.objectstore import get_object_store

    out, _ = _console()
    state = worm.probe(get_object_store(_settings()))
    with session_scope() as session:
        worm.record(session=session, state=state)
    out.print(f"S3 legal holds: {state.legal_hold} ({state.detail})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(retention_app, name="retention")
    app.add_typer(hold_app, name="hold")
    app.add_typer(storage_app, name="storage")
