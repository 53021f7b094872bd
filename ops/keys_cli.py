"""`vigil keys ...`: list and rotate keys, re-wrap data keys."""

from __future__ import annotations

import typer

keys_app = typer.Typer(help="Keys: list, rotate, re-wrap.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
