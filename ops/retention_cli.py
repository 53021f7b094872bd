"""`vigil retention ...` and `vigil hold ...`: rules, previews, sweeps, holds."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
