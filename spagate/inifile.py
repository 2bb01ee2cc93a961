"""The one INI reader and the one key-file check, shared by the client and the gate.

Grammar (sparoid's): `# c` and `; c` comment lines, `[name]` sections, `name = value` lines;
names are case-insensitive, values are stripped and may be quoted; ` # c` after a value is a
comment too (sparoid's README writes `bind = :: # both ipv4 and ipv6`; `;` is not, since hooks
use it). A value with a control character is refused (a NUL or a newline in a hook would
otherwise reach a shell). Lines end at a newline only (a trailing CR is dropped): a line that
holds any other control character or a Unicode line break (U+0085, U+2028, U+2029), comments
included (tab and form feed are whitespace), is refused, since str.splitlines() and some
editors break there while grep and less do not, and a setting would hide behind what reads as
a comment, or a comment look like a setting. Errors are
ConfigError(path, line, reason) and never echo a line: it may hold key material.

parse_ini() is pure (text in, sections out); read_key_file() is the edge that opens the file.
What the names mean is the caller's business (spagate.client.config, spagate.gate.core.config).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from spagate.errors import ConfigError

SECTION_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_INLINE_COMMENT = re.compile(r"\s+#")
# What may not stand anywhere on a line: C0 controls but tab and form feed (an editor's page
# break, whitespace to strip()), DEL, C1 controls, U+2028/U+2029. Inside a value, form feed
# neither.
_LINE_BREAKERS = re.compile(r"[\x00-\x08\x0a\x0b\x0d-\x1f\x7f-\x9f\u2028\u2029]")
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _split(text: str) -> list[str]:
    """text's lines, split at newlines only; a CR before one and a byte order mark (Notepad)
    are dropped."""
    return [ln.removesuffix("\r") for ln in text.removeprefix("\ufeff").split("\n")]


def _line_error(path: str, n: int, char: str) -> ConfigError:
    return ConfigError(
        path, n, f"the line holds U+{ord(char):04X}, a control character or a line break "
        "(only tab and form feed may stand in a line, a comment's too)",
    )  # fmt: skip


def split_lines(text: str, path: str) -> list[str]:
    """text's lines, split at newlines only (a CR before one is dropped); ConfigError(path,
    line) for a line that holds another control character (tab and form feed are whitespace)
    or a Unicode line break. The line splitter of every file spagate reads keys or settings
    from (parse_ini's too, which names the key when it is a value that holds one)."""
    out = _split(text)
    for n, line in enumerate(out, 1):
        if m := _LINE_BREAKERS.search(line):
            raise _line_error(path, n, m.group())
    return out


@dataclass(frozen=True)
class Entry:
    name: str  # lower case
    value: str
    line: int
    uncut: str | None = None  # the value before a ` #` comment was cut off it (None: none was)


@dataclass
class Section:
    name: str | None  # None: the lines above the first [section]
    line: int  # 0 for the top
    entries: list[Entry] = field(default_factory=list)

    def get(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_ini(text: str, path: str, repeatable: frozenset[str] = frozenset()) -> list[Section]:
    """Sections in file order; the first is always the top (name None), maybe empty.
    A name set twice in one section (but for repeatable names), or a section defined twice,
    is an error."""
    top = Section(None, 0)
    sections = [top]
    current = top
    for n, raw in enumerate(_split(text), 1):
        line = raw.strip()
        setting = line[:1] not in ("", "#", ";", "[") and "=" in line
        if (m := _LINE_BREAKERS.search(raw)) and not (setting and "=" in raw[: m.start()]):
            raise _line_error(path, n, m.group())  # in a comment, a header or a name
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[\s*([^\]]*?)\s*\]", line)
            if not m or not SECTION_NAME.fullmatch(m.group(1)):
                raise ConfigError(
                    path, n, "a section header looks like [name] (letters, digits, . _ @ + -)"
                )
            name = m.group(1)
            if any(s.name == name for s in sections):
                raise ConfigError(path, n, f"section [{name}] is defined twice")
            current = Section(name, n)
            sections.append(current)
            continue
        if "=" not in line:
            raise ConfigError(path, n, "expected `name = value`")
        name, value = (part.strip() for part in line.split("=", 1))
        name = name.lower()
        cut = _INLINE_COMMENT.split(value, 1)
        uncut = _unquote(value) if len(cut) > 1 else None
        value = _unquote(cut[0].strip())
        # anywhere after the `=` (its comment too), or a form feed inside the value itself
        if m := _LINE_BREAKERS.search(raw.split("=", 1)[1]) or _VALUE_CONTROL.search(value):
            raise ConfigError(path, n, f"{name}: the value holds a control character "
                              f"(U+{ord(m.group()):04X})")  # fmt: skip
        first = current.get(name)
        if first is not None and name not in repeatable:
            raise ConfigError(path, n, f"{name} set twice (first on line {first.line})")
        current.entries.append(Entry(name, value, n, uncut))
    return sections


def read_key_file(
    path: str | os.PathLike,
    owners: frozenset[int] | None = None,
    group_readers: frozenset[int] = frozenset(),
) -> str:
    """The text of a file that holds keys, refusing what a careful operator would:
    not a regular file; owned by a uid outside owners (None: root or this user); accessible
    by others; accessible by its group unless the group is one of group_readers (read only)."""
    path = os.fspath(path)
    owners = frozenset({0, os.geteuid()}) if owners is None else owners
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(path, None, "not found") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    st = os.fstat(fd)  # the file opened, not whatever the path names now
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(path, None, "is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_uid not in owners:
            # Whoever owns a key file chooses the keys (and, on the gate, the hooks run as root).
            raise ConfigError(
                path, None, f"is owned by uid {st.st_uid}: run chown root:root {path}"
            )
        mode = stat.S_IMODE(st.st_mode)
        group_ok = st.st_gid in group_readers and not mode & 0o020  # read (and x: sparoid's 0650)
        if mode & 0o007 or (mode & 0o070 and not group_ok):
            raise ConfigError(
                path,
                None,
                f"holds keys but is accessible by group or others (mode {mode:04o}): "
                f"run chmod 600 {path}",
            )
        try:
            data = f.read()
        except OSError as e:
            raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, data[: e.start].count(b"\n") + 1, "not valid UTF-8 text") from None
