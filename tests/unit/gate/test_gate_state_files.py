"""The run directory's files written by root (the loader) where the worker's group may write
too (systemd's RuntimeDirectory root:spagate 0770): never through a planted link."""

from __future__ import annotations

import importlib
import json
import os

import pytest

pytestmark = pytest.mark.unit


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SPAGATE_RUN_DIR", str(tmp_path))
    from spagate.gate.service import state as mod

    mod = importlib.reload(mod)
    yield mod
    monkeypatch.delenv("SPAGATE_RUN_DIR")
    importlib.reload(mod)


def test_write_attached_replaces_a_planted_link_and_never_writes_through_it(state, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = state.attached_path("/sys/fs/bpf/spagate")
    # Links planted at the file and at every temp name the writer could use.
    path.symlink_to(victim)
    for tmp in (f".{path.name}.tmp", f".{path.name}.{os.getpid()}.tmp"):
        (path.parent / tmp).symlink_to(victim)
    state.write_attached("/sys/fs/bpf/spagate", {"eth1": "native"})
    assert victim.read_text() == "untouched"
    assert not path.is_symlink()
    assert json.loads(path.read_text()) == {"eth1": "native"}
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert state.read_attached("/sys/fs/bpf/spagate") == {"eth1": "native"}
    assert not (path.parent / f".{path.name}.{os.getpid()}.tmp").exists()
