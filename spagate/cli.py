"""The `spagate` command. Client commands work without bcc or root; gate commands import bcc
lazily (spagate.gate.cli). `spagate worker` skips the command-line library altogether: the
long-running unprivileged worker stays small (spagate.gate.service.worker)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from spagate.errors import SpagateError

HELP = "spagate: Single Packet Authorization gate (XDP) and sparoid-compatible client."


def _version(value: bool) -> None:
    import typer

    if value:
        from spagate import __version__

        print(f"spagate {__version__}")
        raise typer.Exit()


def build_app():
    import typer

    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # -h is help everywhere but in `connect`, where it is the host (as sparoid's).
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """spagate: Single Packet Authorization gate (XDP) and sparoid-compatible client."""

    from spagate.client import cli as client_cli
    from spagate.gate import cli as gate_cli

    client_cli.register(app)
    gate_cli.register(app)
    return app


def _run(fn: Callable[[], object]) -> None:
    try:
        rc = fn()
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
    if isinstance(rc, int):
        sys.exit(rc)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        from spagate.gate.service import worker

        _run(lambda: worker.main(argv[1:]))
        return
    _run(lambda: build_app()(prog_name="spagate"))
