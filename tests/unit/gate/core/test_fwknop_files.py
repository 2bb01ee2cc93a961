"""Reading access.conf from disk: includes resolved; every file it pulls in gets the gate's
one key-file check, and a refusal names the line that included the file."""

from __future__ import annotations

import base64
import os

import pytest

from spagate.errors import ConfigError
from spagate.gate.core.fwknop_access import load_access

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
    write(folder / "README", "not read\n", 0o644)
    k = write(tmp_path / "alice.keys", keys())
    main = write(
        tmp_path / "access.conf",
        f"SOURCE ANY\nOPEN_PORTS tcp/22\n%include_keys {k}\n%include_folder {folder}\n",
    )
    cfg = load_access(str(main))
    assert [s.where for s in cfg.stanzas] == [f"{main}:1", f"{folder}/extra.conf:1"]
    assert cfg.warnings == ()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_an_included_key_file_others_can_touch_is_refused(tmp_path, mode):
    k = write(tmp_path / "alice.keys", keys(), mode)
    main = write(tmp_path / "access.conf", f"SOURCE ANY\n%include_keys {k}\n")
    with pytest.raises(ConfigError, match="accessible by group or others") as e:
        load_access(str(main))
    assert (e.value.path, e.value.line) == (str(main), 2)
    assert f"%include_keys {k}" in e.value.message


def test_the_access_conf_itself_is_checked(tmp_path):
    main = write(tmp_path / "access.conf", "SOURCE ANY\n" + keys(), 0o644)
    with pytest.raises(ConfigError, match="chmod 600") as e:
        load_access(str(main))
    assert e.value.path == str(main)


def test_missing_and_odd_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_access(str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="not a regular file"):
        load_access(str(tmp_path))
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_access(str(fifo))
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"SOURCE ANY\n\xff\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="not valid UTF-8") as e:
        load_access(str(bad))
    assert e.value.line == 2
    main = write(tmp_path / "access.conf", f"SOURCE ANY\n%include_keys {tmp_path}/none\n")
    with pytest.raises(ConfigError, match="none: not found") as e:
        load_access(str(main))
    assert e.value.line == 2
