"""The `spagate` command. Client commands work without bcc or root; gate commands import
bcc lazily (spagate.gate.cli)."""

from __future__ import annotations

import os
import sys

import typer

from spagate.errors import SpagateError

app = typer.Typer(
    help="spagate: Single Packet Authorization gate (XDP) and sparoid-compatible client.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """spagate: Single Packet Authorization gate (XDP) and sparoid-compatible client."""


def _register() -> None:
    from spagate.client import cli as client_cli
    from spagate.gate import cli as gate_cli

    client_cli.register(app)
    gate_cli.register(app)


def main() -> None:
    _register()
    try:
        app()
    except SpagateError as e:
        print(f"spagate: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # never a traceback for an operator; SPAGATE_DEBUG=1 shows it
        if os.environ.get("SPAGATE_DEBUG"):
            raise
        print(f"spagate: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(70)
