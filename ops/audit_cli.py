"""`vigil audit verify|checkpoint|export|check-export`: the audit trail, for auditors.

``verify`` and ``checkpoint`` act on the catalog and the object store as the operator
on the server; ``check-export`` needs neither: it checks an export against signed
checkpoints and public keys obtained out of band (docs/design/audit.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

audit_app = typer.Typer(help="The audit trail: check it, sign its head, export it.",
                        no_args_is_help=True)


def _store():  # noqa: ANN202 - an ObjectStore
    from vigil import objectstore
    from vigil.settings import get_settings

    return objectstore.get_object_store(get_settings())


@audit_app.command("verify")
def verify() -> None:
    """Re-compute every event's hash and link from the first and check every signed
    checkpoint and its copy in the object store; exit 1 when the trail was altered,
    cut off or a checkpoint removed (the first failure is named)."""
    from ops.cli import err, out
    from vigil import audit
    from vigil.db import session_scope

    with session_scope() as session:
        check = audit.check_stored(session=session, store=_store())
    report = check.report
    if check.failure is not None:
        err.print(f"[bold red]BROKEN[/] ({check.kind}) after {check.events} intact "
                  f"event(s): {check.failure}", highlight=False)
        raise typer.Exit(1)
    latest = report.latest
    out.print(f"INTACT: {check.events} event(s), head {check.head}; {report.checkpoints} "
              f"checkpoint(s) verified, {report.copies} copy(ies) in the object store"
              + ("" if latest is None else
                 f"; latest checkpoint #{latest.id}: event #{latest.event_id} "
                 f"({latest.events} events), signed {latest.signed_at.isoformat()}, key "
                 f"{latest.key_fingerprint}"), highlight=False)
    for note in report.notes:
        err.print(f"note: {note}", highlight=False)


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign the trail's head now (what the worker does every ten minutes) and store the
    copy in the object store; nothing is signed when the head has not moved."""
    from ops.cli import out
    from vigil import keys
    from vigil.audit_tasks import run_checkpoint
    from vigil.db import session_scope
    from vigil.settings import get_settings

    settings = get_settings()
    with session_scope() as session:
        outcome = run_checkpoint(session=session, store=_store(),
                                 provider=keys.file_key_ring(settings.home_dir),
                                 settings=settings, actor="cli")
    if outcome.get("skipped"):
        out.print(f"skipped: {outcome['skipped']}", highlight=False)
    elif outcome["signed"] is None:
        out.print("nothing to sign: the head has not moved since the last checkpoint",
                  highlight=False)
    else:
        out.print(f"signed checkpoint #{outcome['signed']}: event #{outcome['event_id']} "
                  f"({outcome['events']} events), key {outcome['key_fingerprint']}; copy "
                  f"{outcome['copy']}" + (" under legal hold" if outcome["legal_hold"] else ""),
                  highlight=False)
    if outcome.get("stored_missing_copy"):
        out.print(f"stored the missing copy of checkpoint #{outcome['stored_missing_copy']}",
                  highlight=False)


@audit_app.command("export")
def export(
    output: Annotated[Path, typer.Option("-o", "--output", help="file to write")],
    start: Annotated[str | None, typer.Option("--from", help="ISO 8601 with offset")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 with offset")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    checkpoints: Annotated[Path | None, typer.Option(
        help="also write the signed checkpoints that cover exported events here (JSON "
             "lines), for `vigil audit check-export`")] = None,
) -> None:
    """The events that occurred in [from, to), every hashed field included."""
    from ops.cli import out
    from vigil import audit
    from vigil.db import session_scope
    from vigil.errors import InvalidInput
    from vigil.intervals import parse_instant

    t0 = parse_instant(start) if start else None
    t1 = parse_instant(end) if end else None
    if fmt not in audit.EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r} (jsonl or csv)")
    # Both paths are checked before anything is written: no half-written export.
    targets = [output] if checkpoints is None else [output, checkpoints]
    if len(targets) == 2 and output.resolve() == checkpoints.resolve():
        raise InvalidInput(f"--checkpoints {checkpoints} is the events' output file; choose "
                           "another path")
    for path in targets:
        if path.exists():
            raise InvalidInput(f"{path} exists; choose another output path")
        if not path.parent.is_dir():
            raise InvalidInput(f"{path.parent} is not a directory")
    lines = 0
    ids: list[int] = []  # the first and the last exported event's id

    def tracked(events: Iterator[Any]) -> Iterator[Any]:
        for event in events:
            ids[:] = [ids[0] if ids else event.id, event.id]
            yield event

    with session_scope() as session, output.open("x", encoding="utf-8") as f:
        for chunk in audit.export_lines(tracked(audit.stored_events(session, start=t0,
                                                                   end=t1)), fmt=fmt):
            f.write(chunk)
            lines += chunk.count("\n")
        records = [] if not ids else audit.checkpoint_records(
            session=session, first_event_id=ids[0], last_event_id=ids[-1])
    out.print(f"wrote {lines} line(s) to {output}", highlight=False)
    if checkpoints is not None:
        with checkpoints.open("x", encoding="utf-8") as f:
            f.writelines(audit.canonical(r).decode() + "\n" for r in records)
        out.print(f"wrote {len(records)} checkpoint(s) to {checkpoints}", highlight=False)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line without its end)`` of a UTF-8 text file; InvalidInput names
    the line that is not UTF-8."""
    from vigil.errors import InvalidInput

    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise InvalidInput(f"{path}, line {n}: not UTF-8 text") from None


def _json(text: str, *, path: Path, line: int, what: str) -> Any:  # noqa: ANN401 - JSON
    from vigil.errors import InvalidInput

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # its lineno counts from ``line``
        raise InvalidInput(f"{path}, line {line + exc.lineno - 1}: not JSON ({what}): "
                           f"{exc}") from None


def _json_values(path: Path, *, what: str) -> list[Any]:
    """A JSON array (as the API returns it) or JSON lines."""
    lines = list(_lines(path))
    whole = "\n".join(text for _, text in lines)
    if whole.lstrip().startswith("["):
        return _json(whole, path=path, line=1, what=what)
    return [_json(text, path=path, line=n, what=what) for n, text in lines if text.strip()]


def _trusted_keys(paths: list[Path]) -> dict[str, Any]:
    """Fingerprint -> public key, from PEM / raw / hex key files or a saved response of
    GET /api/v1/keys (its audit signing keys, whatever their state)."""
    from retrieval import verify as verifier
    from vigil import chain, keys
    from vigil.errors import InvalidInput

    found = []
    for path in paths:
        data = path.read_bytes()
        if not data.lstrip().startswith(b"["):
            try:
                found.append(verifier.load_public_key(data))
            except InvalidInput as exc:
                raise InvalidInput(f"{path}: {exc}") from None
            continue
        listed = _json_values(path, what="GET /api/v1/keys saved")
        for n, entry in enumerate(listed, 1):
            if not isinstance(entry, dict):
                raise InvalidInput(f"{path}: entry {n} is not a key (a JSON object)")
            if entry.get("purpose") != "audit_signing" or not entry.get("public_key_hex"):
                continue
            try:
                found.append(keys.load_public(bytes.fromhex(entry["public_key_hex"])))
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"{path}: entry {n} (audit signing key version "
                                   f"{entry.get('version')}): public_key_hex is not a hex "
                                   f"Ed25519 public key: {exc}") from None
    return {chain.fingerprint(k): k for k in found}


def _export_rows(path: Path) -> Iterator[Any]:
    """The events of a JSON lines export, one per line (a blank line is not one, so that
    ``check_export`` names lines as the file numbers them)."""
    for n, text in _lines(path):
        yield _json(text, path=path, line=n,
                    what="check-export reads exports in the jsonl format, not csv")


@audit_app.command("check-export")
def check_export(
    events: Annotated[Path, typer.Argument(help="an export (JSON lines)", exists=True,
                                           dir_okay=False, readable=True)],
    checkpoints: Annotated[Path, typer.Option(
        help="signed checkpoints: `vigil audit export --checkpoints`, or GET "
             "/api/v1/audit/checkpoints saved", exists=True, dir_okay=False)],
    trusted_key: Annotated[list[Path], typer.Option(
        help="an audit signing public key you trust (PEM, raw, hex), or GET /api/v1/keys "
             "saved as JSON; repeatable", exists=True, dir_okay=False)],
) -> None:
    """Check an exported range of the trail offline, without the database: every
    event's hash and link, and the checkpoints that cover it against trusted keys.
    Exit 1 when anything does not check, 2 when a file cannot be read as what it
    should be."""
    from ops.cli import err, out
    from vigil import audit

    trusted = _trusted_keys(trusted_key)
    records = _json_values(checkpoints, what="signed checkpoint records")
    try:
        result = audit.check_export(_export_rows(events), records, trusted=trusted,
                                    source=str(events))
    except audit.AuditChainBroken as exc:
        err.print(f"[bold red]BROKEN[/] ({exc.kind}): {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"INTACT: {result.events} event(s), #{result.first_id} to #{result.last_id}; "
              f"{result.checkpoints} checkpoint(s) verified against them"
              + (f", {result.outside} outside the export" if result.outside else ""),
              highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
