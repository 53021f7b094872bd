"""``vigil case ...``, ``vigil export``, ``vigil verify``: evidence from the command line.

Case and export commands act on the catalog directly, as the operator on the server,
on behalf of a named principal (``--as``, an admin or investigator) whom the custody
record names. ``vigil verify`` needs nothing but the package.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

case_app = typer.Typer(no_args_is_help=True, help="Cases and their custody records.")

out = Console()
err = Console(stderr=True)

POLL_S: Final = 0.5
# Say so when no worker has taken an export up after this long.
NO_WORKER_HINT_S: Final = 20.0

AsOption = Annotated[str, typer.Option("--as", help="the principal acting (admin or "
                                                    "investigator); the custody record "
                                                    "names them")]


def _principal(session, name: str):  # noqa: ANN001, ANN202 - ORM types, imported lazily
    from sqlalchemy import select

    from vigil.catalog.models import Principal
    from vigil.errors import NotFound

    principal = session.scalars(select(Principal).where(Principal.name == name)).one_or_none()
    if principal is None or principal.disabled_at is not None:
        raise NotFound(f"principal {name!r} does not exist (create one with "
                       f"`vigil token create --role investigator --name {name}`)")
    return principal


@case_app.command("create")
def case_create(
    title: Annotated[str, typer.Argument(help="what the case is about")],
    acting: AsOption = "admin",
    reference: Annotated[str | None, typer.Option(help="your own case reference (default: "
                                                       "generated)")] = None,
    description: Annotated[str, typer.Option(help="longer description")] = "",
) -> None:
    """Open a case; prints its reference."""
    from retrieval import cases
    from vigil.db import session_scope

    with session_scope() as session:
        case = cases.create_case(session=session, title=title, reference=reference,
                                 description=description,
                                 principal=_principal(session, acting))
        ref = case.reference
    out.print(ref, highlight=False)


@case_app.command("list")
def case_list(acting: AsOption = "admin") -> None:
    """The cases the principal may see."""
    from retrieval import cases
    from vigil.db import session_scope

    table = Table("reference", "title", "status", "opened (UTC)", "members")
    with session_scope() as session:
        for case in cases.list_cases(session=session, principal=_principal(session, acting)):
            table.add_row(case.reference, case.title, case.status.value,
                          case.created_at.isoformat(timespec="seconds"),
                          ", ".join(cases.members(session=session, case=case)))
    out.print(table)


@case_app.command("close")
def case_close(reference: str, reason: Annotated[str, typer.Option(help="why")],
               acting: AsOption = "admin") -> None:
    """Close a case (no more exports)."""
    from retrieval import cases
    from vigil.db import session_scope

    with session_scope() as session:
        cases.close_case(session=session, reference=reference, reason=reason,
                         principal=_principal(session, acting))
    out.print(f"case {reference} closed", highlight=False)


@case_app.command("add-member")
def case_add_member(reference: str, member: str, acting: AsOption = "admin") -> None:
    """Make an investigator a member of the case."""
    from retrieval import cases
    from vigil.db import session_scope

    with session_scope() as session:
        cases.add_member(session=session, reference=reference, member_name=member,
                         principal=_principal(session, acting))
    out.print(f"{member} is a member of case {reference}", highlight=False)


@case_app.command("custody")
def case_custody(reference: str, acting: AsOption = "admin") -> None:
    """The case's chain-of-custody record; exit 1 if its hash chain does not verify."""
    from retrieval import cases
    from vigil import custody
    from vigil.db import session_scope

    table = Table("seq", "at (UTC)", "actor", "action", "export", "detail")
    with session_scope() as session:
        case = cases.get_case(session=session, reference=reference,
                              principal=_principal(session, acting))
        log = cases.custody_log(session=session, case=case)
    for event, _ in log:
        table.add_row(str(event.seq), cases.at_of(event).isoformat(timespec="milliseconds"),
                      event.actor, event.action, (event.export_id or "")[:8],
                      ", ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))[:80])
    out.print(table)
    try:
        count = custody.verify_events(log)
    except custody.CustodyChainBroken as exc:
        err.print(f"[bold red]custody record does not verify:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"custody record verified: {count} event(s), hash chain intact")


def export(
    case: Annotated[str, typer.Argument(help="the case reference")],
    camera: Annotated[list[str], typer.Option(help="camera name (repeat for several "
                                                   "cameras over the same range)")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 with offset")],
    end: Annotated[str, typer.Option("--to", help="ISO 8601 with offset")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the "
                                                                "package (.zip)")],
    watermark_for: Annotated[str | None, typer.Option(
        help="recipient named on a watermarked copy (no copy without it)")] = None,
    purpose: Annotated[str, typer.Option(help="why the footage is exported")]
    = "evidence export",
    acting: AsOption = "admin",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the package")] = 3600.0,
) -> None:
    """Export camera footage of a case as a verifiable evidence package."""
    from retrieval import exports
    from vigil.db import session_scope
    from vigil.errors import InvalidInput
    from vigil.intervals import parse_instant
    from vigil.tasks import configure

    if output.exists():
        raise InvalidInput(f"{output} exists; choose another output path")
    if not output.parent.is_dir():
        raise InvalidInput(f"{output.parent} is not a directory")
    t0, t1 = parse_instant(start), parse_instant(end)
    configure()
    with session_scope() as session:
        export_row = exports.request_export(
            session=session, reference=case, purpose=purpose, recipient=watermark_for,
            principal=_principal(session, acting),
            items=[exports.ItemRequest(camera=c, start_at=t0, end_at=t1) for c in camera])
        export_id = export_row.id
    exports.enqueue(export_id)
    err.print(f"export {export_id} queued", highlight=False)
    status = _follow(export_id, timeout)
    if status != "succeeded":
        raise typer.Exit(1)
    with session_scope() as session:
        principal = _principal(session, acting)
        export_row, case_row = exports.get_export(session=session, export_id=export_id,
                                                  principal=principal)
        from vigil.settings import get_settings

        exports.download_package(session=session, settings=get_settings(), export=export_row,
                                 case=case_row, principal=principal, dst=output, via="cli")
        digest = export_row.package_sha256.hex() if export_row.package_sha256 else ""
    out.print(f"{output} ({output.stat().st_size} bytes, sha256 {digest})", highlight=False)


def _follow(export_id, timeout: float) -> str:  # noqa: ANN001 - uuid
    """A progress bar of the export's stage and percent until it ends."""
    from vigil.catalog.models import Export
    from vigil.db import session_scope

    started = time.monotonic()
    hinted = False
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("queued", total=100)
        while True:
            with session_scope() as session:
                row = session.get(Export, export_id)
                assert row is not None
                status, stage, pct, error = row.status.value, row.stage, row.progress_pct, \
                    row.error
            progress.update(task, description=stage, completed=pct)
            if status in ("succeeded", "failed"):
                break
            if status == "queued" and not hinted and time.monotonic() - started > NO_WORKER_HINT_S:
                err.print("no worker has taken the export up yet: is `vigil worker` (or "
                          "`make run`) running?")
                hinted = True
            if time.monotonic() - started > timeout:
                err.print(f"gave up waiting after {timeout:.0f} s; the export goes on "
                          f"(`vigil export-status {export_id}`)")
                return status
            time.sleep(POLL_S)
    if status == "failed":
        err.print(f"[bold red]export failed:[/] {error}", highlight=False)
    return status


def export_status(export_id: str, acting: AsOption = "admin") -> None:
    """An export's status, stage and progress."""
    from retrieval import exports
    from vigil.db import session_scope

    with session_scope() as session:
        row, case = exports.get_export(session=session, export_id=export_id,
                                       principal=_principal(session, acting))
        out.print(f"export {row.id} (case {case.reference}): {row.status.value}, "
                  f"{row.stage} {row.progress_pct}%"
                  + (f"; {row.error}" if row.error else ""), highlight=False)


def verify(
    package: Annotated[Path, typer.Argument(help="the package (.zip)", exists=True,
                                            dir_okay=False, readable=True)],
    trusted_key: Annotated[list[Path] | None, typer.Option(
        help="a signing public key you trust (PEM or raw), e.g. from the issuing "
             "office's website; repeatable")] = None,
    no_restitch: Annotated[bool, typer.Option(
        "--no-restitch", help="skip re-stitching the clip from the originals")] = False,
) -> None:
    """Verify an evidence package offline: no server, network or database.

    Exit 0 when every check passes; otherwise 1, with every failure named."""
    from retrieval import verify as verifier

    keys = [verifier.load_public_key(p.read_bytes()) for p in trusted_key or []]
    with Progress(TextColumn("verifying"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("verify", total=1.0)
        report = verifier.verify_package(
            package, trusted_keys=keys, restitch=not no_restitch,
            on_progress=lambda f: progress.update(task, completed=f))
    out.print(verifier.render(report), highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(case_app, name="case")
    app.command("export")(export)
    app.command("export-status")(export_status)
    app.command("verify")(verify)
