"""Errors an operator sees as one line (the CLI prints them without a traceback)."""

from __future__ import annotations


class SpagateError(Exception):
    """A problem with input or environment, explained in one line."""


class ConfigError(SpagateError):
    """A configuration problem, located as file:line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")
