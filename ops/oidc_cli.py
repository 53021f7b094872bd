"""``vigil jwt ...``: OIDC token administration (vigil/auth/oidc.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing yet."""
