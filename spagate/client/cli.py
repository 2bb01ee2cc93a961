"""Client commands: keygen, send, connect."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def keygen() -> None:
        """Print a new key and hmac-key."""
        raise NotImplementedError
