"""Reading access.conf from disk: includes resolved, keys files that others can write refused."""

from __future__ import annotations

import base64
import os

import pytest

from spagate.errors import ConfigError
from spagate.gate.fwknop_files import load_access

B = lambda raw: base64.b64encode(raw).decode()  # noqa: E731


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def keys() -> str:
    return f"KEY_BASE64: {B(os.urandom(32))}\nHMAC_KEY_BASE64: {B(os.urandom(64))}\n"


def test_loads_includes_from_disk(tmp_path):
    folder = tmp_path / "access.d"
    folder.mkdir()
    write(folder / "extra.conf", "SOURCE 192.0.2.1\n" + keys())
    write(folder / "README", "not read\n")
    k = write(tmp_path / "alice.keys", keys())
    main = write(
        tmp_path / "access.conf",
        f"SOURCE ANY\nOPEN_PORTS tcp/22\n%include_keys {k}\n%include_folder {folder}\n",
    )
    cfg = load_access(str(main))
    assert [s.where for s in cfg.stanzas] == [f"{main}:1", f"{folder}/extra.conf:1"]
    assert cfg.warnings == ()


def test_writable_by_others_is_refused(tmp_path):
    k = write(tmp_path / "alice.keys", keys(), 0o620)
    main = write(tmp_path / "access.conf", f"SOURCE ANY\n%include_keys {k}\n")
    with pytest.raises(ConfigError, match="others can write it") as e:
        load_access(str(main))
    assert (e.value.path, e.value.line) == (str(main), 2)
    write(main, "SOURCE ANY\n" + keys(), 0o602)
    with pytest.raises(ConfigError, match="others can write it"):
        load_access(str(main))


def test_readable_by_others_is_a_warning(tmp_path):
    main = write(tmp_path / "access.conf", "SOURCE ANY\n" + keys(), 0o644)
    (w,) = load_access(str(main)).warnings
    assert "others can read it (mode 0644)" in w and "chmod 600" in w


def test_missing_and_odd_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_access(str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="not a regular file"):
        load_access(str(tmp_path))
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_access(str(fifo))
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"SOURCE ANY\n\xff\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="line 2 is not valid UTF-8"):
        load_access(str(bad))
