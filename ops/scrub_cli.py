"""`vigil scrub`: re-read stored chunks and check them against the catalog."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
