"""`vigil scrub`: re-read stored chunks and check them against the catalog.

Exit status: 1 when any mismatch was found (even if the scrub then stopped early: a
mismatch is the finding to act on), 2 when the scrub could not run or stopped early
(object store or database unavailable, bad arguments), 0 otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from retention.scrub import ScrubReport

out = Console()
err = Console(stderr=True)

EXIT_MISMATCH: Final = 1
EXIT_ERROR: Final = 2


def scrub(
    sample: Annotated[float | None, typer.Option(
        help="fraction of the chunks to check, in (0, 1] (default: VIGIL_SCRUB_SAMPLE)")]
    = None,
    every: Annotated[bool, typer.Option("--all", help="check every chunk")] = False,
    camera: Annotated[str | None, typer.Option(help="only this camera's chunks")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="check at most this many")] = None,
) -> None:
    """Re-read stored chunks; check size, decryption, hash and chain link against the
    catalog. Exit 1 on any mismatch, 2 when the scrub could not complete."""
    from sqlalchemy.exc import DBAPIError

    from retention import scrub as scrub_service
    from vigil.settings import get_settings

    if every and sample is not None:
        raise typer.BadParameter("give --sample or --all, not both")
    if sample is not None and not 0.0 < sample <= 1.0:
        raise typer.BadParameter(f"--sample must be in (0, 1], not {sample}")
    settings = get_settings()
    chosen = None if every else (sample if sample is not None else settings.scrub_sample)
    columns = (TextColumn("scrubbing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("scrub", total=None)
            report = scrub_service.scrub(
                settings=settings, sample=chosen, limit=limit, camera=camera,
                on_progress=lambda done, expected: progress.update(
                    task, completed=done, total=max(done, expected or 0) or None))
    except DBAPIError as exc:
        err.print(f"[bold red]error:[/] the database is unreachable "
                  f"({type(exc.orig).__name__ if exc.orig else 'error'})", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None
    _print(report)
    if report.mismatch_count:
        raise typer.Exit(EXIT_MISMATCH)
    if not report.complete:
        raise typer.Exit(EXIT_ERROR)


def _print(report: ScrubReport) -> None:
    from retention.scrub import MAX_LISTED

    if report.mismatches:
        table = Table(title="mismatches")
        for name in ("camera", "seq", "check"):
            table.add_column(name, no_wrap=True)
        table.add_column("object", overflow="fold")
        table.add_column("message")
        for m in report.mismatches:
            table.add_row(m.chunk.camera, str(m.chunk.seq), m.check.value,
                          m.chunk.object_key, m.message)
        out.print(table)
        if report.mismatch_count > MAX_LISTED:
            out.print(f"(the first {MAX_LISTED} listed; every one is in the audit trail)")
    by_check = ", ".join(f"{check} {n}" for check, n in sorted(report.counts.items()))
    out.print(f"scrub {report.run_id}: {report.checked} chunk(s) checked, "
              f"{report.bytes_read / 1e6:.1f} MB read, {report.mismatch_count} mismatch(es)"
              + (f" ({by_check})" if by_check else ""), highlight=False)
    if report.chain_unchecked:
        out.print(f"{report.chain_unchecked} chain link(s) not checked: the predecessor is "
                  "not in the catalog", highlight=False)
    if report.removed:
        out.print(f"{report.removed} chunk(s) left the catalog (retention) during the scrub",
                  highlight=False)
    if not report.complete:
        err.print(f"[bold red]incomplete:[/] {report.stopped_by}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("scrub")(scrub)
