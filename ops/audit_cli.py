"""`vigil audit verify` and `vigil audit export`: the audit trail, for auditors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

audit_app = typer.Typer(help="The audit trail: check it, export it.", no_args_is_help=True)


@audit_app.command("verify")
def verify() -> None:
    """Re-compute every event's hash and link from the first; exit 1 when the trail was
    altered (the first broken event is named)."""
    from ops.cli import err, out
    from vigil import audit
    from vigil.db import session_scope

    with session_scope() as session:
        check = audit.check_stored(session)
    if check.failure is not None:
        err.print(f"[bold red]BROKEN[/] after {check.events} intact event(s): "
                  f"{check.failure}", highlight=False)
        raise typer.Exit(1)
    out.print(f"INTACT: {check.events} event(s), head {check.head}", highlight=False)


@audit_app.command("export")
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="file to write")],
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 with offset")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 with offset")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
) -> None:
    """The events that occurred in [from, to), every hashed field included."""
    from ops.cli import out
    from vigil import audit
    from vigil.db import session_scope
    from vigil.intervals import parse_instant

    t0 = parse_instant(start) if start else None
    t1 = parse_instant(end) if end else None
    lines = 0
    with session_scope() as session, output.open("x", encoding="utf-8") as f:
        for chunk in audit.export_lines(audit.stored_events(session, start=t0, end=t1),
                                        fmt=fmt):
            f.write(chunk)
            lines += chunk.count("\n")
    out.print(f"wrote {lines} line(s) to {output}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
