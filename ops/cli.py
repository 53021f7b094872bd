"""``vigil``: the one command-line entry point. Each bounded context adds its commands here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ops import (
    access_cli,
    audit_cli,
    evidence_cli,
    keys_cli,
    oidc_cli,
    retention_cli,
    scrub_cli,
)
from vigil.errors import VigilError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Vigil: video recording, storage and verifiable evidence retrieval.")
stack_app = typer.Typer(no_args_is_help=True, help="The embedded stack of real servers.")
db_app = typer.Typer(no_args_is_help=True, help="The catalog database.")
token_app = typer.Typer(no_args_is_help=True, help="API bearer tokens.")
app.add_typer(stack_app, name="stack")
app.add_typer(db_app, name="db")
camera_app = typer.Typer(no_args_is_help=True, help="Cameras.")
app.add_typer(token_app, name="token")
app.add_typer(camera_app, name="camera")

out = Console()
err = Console(stderr=True)


def _settings():  # noqa: ANN202 - typed through load_settings
    from vigil.settings import get_settings

    return get_settings()


# --- stack ---------------------------------------------------------------------------


@stack_app.command("up")
def stack_up() -> None:
    """Start PostgreSQL, the S3 server and Redis; wait until every one answers."""
    from ops import stack

    started = stack.up(_settings(), on_event=lambda m: err.print(f"  {m}"))
    out.print(f"stack up ({', '.join(started) or 'nothing'} started)")


@stack_app.command("down")
def stack_down(
    servers: Annotated[list[str] | None, typer.Argument(
        help="only these: postgres, s3, redis (default: all)")] = None,
) -> None:
    """Stop exactly the servers `stack up` started (by pid and start time)."""
    from ops import stack

    known = {s.name for s in stack.servers(_settings())}
    unknown = set(servers or ()) - known
    if unknown:
        raise typer.BadParameter(f"unknown server(s) {', '.join(sorted(unknown))}; "
                                 f"servers are {', '.join(sorted(known))}")
    stopped = stack.down(_settings(), names=servers or None,
                         on_event=lambda m: err.print(f"  {m}"))
    out.print(f"stack down ({', '.join(stopped) or 'nothing was running'})")


@stack_app.command("status")
def stack_status() -> None:
    """Which servers run, and whether each answers. Exit 1 unless all answer."""
    from ops import stack

    table = Table("server", "pid", "running", "answering", "log")
    states = stack.status(_settings())
    for s in states:
        table.add_row(s.name, str(s.pid or "-"), "yes" if s.running else "no",
                      "yes" if s.answering else "no", str(s.log))
    out.print(table)
    if not all(s.answering for s in states):
        raise typer.Exit(1)


# --- database ------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the catalog migrations (alembic upgrade)."""
    from vigil import migrate

    migrate.upgrade(revision=revision)
    out.print(f"database at {revision}")


# --- tokens --------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="admin, investigator, auditor or recorder")],
    name: Annotated[str, typer.Option(help="the principal (person or service) it is for")],
    label: Annotated[str, typer.Option(help="what this token is for")] = "cli",
) -> None:
    """Create a bearer token (and its principal if new). The token is shown once."""
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    with session_scope() as session:
        issued = auth_service.issue_token(session=session, principal_name=name,
                                          role=role, label=label, actor="cli")
    err.print(f"token for {name} ({role}); store it now, it is not kept:")
    print(issued.token)


# --- cameras and recording -----------------------------------------------------------


@camera_app.command("add")
def camera_add(
    name: Annotated[str, typer.Argument(help="a unique name")],
    url: Annotated[str, typer.Argument(help="rtsp://..., rtmp://..., srt://..., udp://..., "
                                            "or a file")],
    region: Annotated[str | None, typer.Option(help="region code")] = None,
    chunk_seconds: Annotated[int, typer.Option(help="target chunk length, 2-300 s")] = 60,
) -> None:
    """Register a camera."""
    from recorder import service as recorder_service
    from vigil.db import session_scope
    from vigil.redact import redact_url

    with session_scope() as session:
        cam = recorder_service.add_camera(session=session, name=name, url=url,
                                          region_code=region, chunk_seconds=chunk_seconds,
                                          actor="cli")
        out.print(f"camera {cam.name} (id {cam.id}) {redact_url(url)}", highlight=False)


@camera_app.command("sensitive")
def camera_sensitive(
    name: Annotated[str, typer.Argument(help="the camera")],
    on: Annotated[bool, typer.Option("--on/--off", help="sensitive or not")] = True,
) -> None:
    """Mark a camera sensitive: its exports may need a second person's approval."""
    from recorder import service as recorder_service
    from vigil.db import session_scope

    with session_scope() as session:
        cam = recorder_service.set_sensitive(session=session, name=name, sensitive=on,
                                             actor="cli")
        out.print(f"camera {cam.name}: {'sensitive' if on else 'not sensitive'}")


@camera_app.command("list")
def camera_list() -> None:
    """Cameras with their status (source credentials redacted)."""
    from recorder import service as recorder_service
    from vigil.db import session_scope
    from vigil.redact import redact_url

    table = Table("id", "name", "status", "chunk s", "source")
    with session_scope() as session:
        for cam in recorder_service.list_cameras(session=session):
            table.add_row(str(cam.id), cam.name, cam.status.value, str(cam.chunk_target_s),
                          redact_url(cam.source_url))
    out.print(table)


@app.command("record")
def record(
    camera: Annotated[list[str] | None, typer.Option(help="only these cameras")] = None,
    max_cameras: Annotated[int | None, typer.Option(help="record at most this many")] = None,
) -> None:
    """Record every enabled camera until Ctrl-C (or SIGTERM)."""
    import logging
    import signal
    import threading

    from recorder import record as recorder_record

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: done.set())
    from sqlalchemy.exc import DBAPIError

    from vigil.errors import StackError

    try:
        rec = recorder_record.start(_settings(), camera_names=camera or None,
                                    max_cameras=max_cameras)
    except DBAPIError as exc:
        # Start-up needs the catalog once (keys, leases); after that an outage is
        # ridden out in the spool.
        raise StackError(f"cannot start recording: the database is unreachable "
                         f"({type(exc.orig).__name__ if exc.orig else 'error'}); "
                         "start it, or check VIGIL_DATABASE_URL") from None
    err.print(f"recorder {rec.fleet.recorder_id}: recording {len(rec.cameras)} camera(s); "
              "Ctrl-C stops")
    done.wait()
    err.print("stopping: sealing chunks in progress, draining the spool ...")
    rec.shutdown()


@app.command("timeline")
def timeline(
    camera: Annotated[str, typer.Argument(help="camera name")],
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 with offset")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 with offset")] = None,
) -> None:
    """Recorded ranges and gaps of a camera over [from, to) (default: the last day)."""
    from recorder import service as recorder_service
    from retrieval.timeline import timeline as camera_timeline
    from retrieval.timeline import window_of
    from vigil.db import session_scope

    with session_scope() as session:
        cam = recorder_service.get_camera(session=session, name=camera)
        line = camera_timeline(session, camera_id=cam.id, window=window_of(start, end))
    rows = [(s, "recorded") for s in line.recorded] + [(g.span, f"gap ({g.cause})")
                                                       for g in line.gaps]
    table = Table("from (UTC)", "to (UTC)", "seconds", "")
    for span, kind in sorted(rows, key=lambda r: r[0].start):
        table.add_row(span.start.isoformat(timespec="milliseconds"),
                      span.end.isoformat(timespec="milliseconds"),
                      f"{span.duration.total_seconds():.3f}", kind)
    out.print(table)


@app.command("import")
def import_footage(
    path: Annotated[Path, typer.Argument(help="a video file pulled from a DVR", exists=True,
                                         dir_okay=False, readable=True)],
    camera: Annotated[str, typer.Option(help="camera name")],
    start: Annotated[str, typer.Option(help="wall-clock start of the file, ISO 8601 with "
                                            "offset")],
    chunk_seconds: Annotated[int | None, typer.Option(help="override the camera's")] = None,
    actor: Annotated[str, typer.Option(help="who is importing (recorded as provenance)")]
    = "cli",
) -> None:
    """Bring offline footage into the camera's chunks and chain, with its provenance."""
    from datetime import datetime

    from rich.progress import Progress

    from recorder.importer import import_file
    from vigil.intervals import parse_instant

    parse_instant(start)  # refuses a time without an offset
    with Progress(transient=True) as progress:
        task = progress.add_task(f"importing {path.name}", total=1.0)
        result = import_file(settings=_settings(), path=path, camera_name=camera,
                             start_at=datetime.fromisoformat(start.strip()), actor=actor,
                             chunk_seconds=chunk_seconds,
                             on_progress=lambda f: progress.update(task, completed=f))
    out.print(f"imported {result.chunks} chunk(s), seq {result.first_seq}-{result.last_seq}, "
              f"[{result.start_at.isoformat()}, {result.end_at.isoformat()}), "
              f"original sha256 {result.original_sha256}", highlight=False)


@app.command("health")
def health(
    day: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today so far)")] = None,
    tz: Annotated[str | None, typer.Option(help="IANA zone of the day, e.g. Asia/Shanghai")]
    = None,
    region: Annotated[str | None, typer.Option(help="region code (with its subtree)")] = None,
) -> None:
    """Daily online rate, good-condition rate and completeness, per region and camera."""
    from recorder.health import daily_report, render_tables
    from vigil.db import session_scope

    with session_scope() as session:
        report = daily_report(session=session, day=day, tz=tz, region_code=region)
    for table in render_tables(report):
        out.print(table)


# --- servers -------------------------------------------------------------------------


@app.command("api")
def api(
    host: Annotated[str | None, typer.Option(help="bind address (default VIGIL_API_HOST)")]
    = None,
    port: Annotated[int | None, typer.Option(help="port (default VIGIL_API_PORT)")] = None,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = _settings()
    uvicorn.run("retrieval.app:create_app", factory=True,
                host=host or settings.api_host, port=port or settings.api_port,
                log_level="info", access_log=True, proxy_headers=False,
                server_header=False)


@app.command("worker")
def worker(
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 2,
) -> None:
    """Run a Celery worker (with the beat scheduler embedded)."""
    from vigil.tasks import configure

    configure(_settings()).worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}",
                            "--beat", "--without-gossip", "--without-mingle",
                            f"--schedule={_settings().home_dir / 'celerybeat-schedule'}"])


@app.command("run")
def run() -> None:
    """Everything for a demo: stack, migrations, API, worker; Ctrl-C stops it all."""
    from ops import supervisor

    raise typer.Exit(supervisor.run(_settings(), err=err))


evidence_cli.register(app)
retention_cli.register(app)
keys_cli.register(app)
scrub_cli.register(app)
audit_cli.register(app)
oidc_cli.register(app)
access_cli.register(app)


def main() -> None:
    try:
        app()
    except VigilError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
