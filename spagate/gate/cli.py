"""Gate commands: attach, detach, status, allow, revoke, demo. bcc is imported lazily."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
