"""Reading fwknop's access.conf (and the files it includes) from disk: the I/O edge of
spagate.gate.core.fwknop_access.

Every file must be a regular file that nobody but its owner can write: whoever can write it
chooses keys, so a group- or world-writable one is refused. fwknopd only warns about such
files; it also warns when a file is readable by others or not owned by the user it runs as,
and so does spagate (fwknop lets unprivileged users keep their own keys in included files).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from spagate.errors import ConfigError
from spagate.gate.core.fwknop_access import DEFAULT_PATH, AccessConfig, parse_access


class DiskFiles:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def read(self, path: str) -> str:
        # O_NONBLOCK: a FIFO in place of a file must not hang the gate's start.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o022:
                raise OSError(
                    errno.EPERM,
                    f"holds keys but others can write it (mode {mode:04o}): run chmod 600 {path}",
                )
            if mode & 0o044:
                self.warnings.append(
                    f"{path}: holds keys but others can read it (mode {mode:04o}): "
                    f"run chmod 600 {path}"
                )
            if st.st_uid not in (0, os.geteuid()):
                self.warnings.append(
                    f"{path}: owned by uid {st.st_uid}, who chooses the keys it holds"
                )
            data = f.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise OSError(errno.EINVAL, f"line {line} is not valid UTF-8 text") from None

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)


def load_access(path: str = DEFAULT_PATH) -> AccessConfig:
    """Read and parse an access.conf; every problem is a ConfigError naming file[:line]."""
    files = DiskFiles()
    try:
        text = files.read(path)
    except FileNotFoundError:
        raise ConfigError(path, None, "not found") from None
    except OSError as e:
        raise ConfigError(path, None, e.strerror or str(e)) from None
    config = parse_access(text, path, files)
    return replace(config, warnings=(*files.warnings, *config.warnings))
