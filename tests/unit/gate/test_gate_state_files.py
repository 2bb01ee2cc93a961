"""The run directory's files written by root (the loader) where the worker's group may write
too (systemd's RuntimeDirectory root:spagate 0770): never through a planted link."""

from __future__ import annotations

import importlib
import json
import os
import time

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


def test_fifos_planted_in_the_run_dir_never_hang_root_s_tools(state, tmp_path):
    """The worker's user can write the run directory: a FIFO in place of the lock, the state
    or the attached file must not block `status`, the loader or the supervisor (open() of a
    FIFO waits for a writer)."""
    pin = "/sys/fs/bpf/spagate"
    for path in (state.lock_path(pin), state.state_path(pin), state.attached_path(pin)):
        os.mkfifo(path)
    t0 = time.monotonic()
    assert state.read_state(pin) is None
    assert state.read_attached(pin) == {}
    assert state.lock_held(pin) is False  # not a lock: `status` says no gate holds it
    with pytest.raises(OSError, match="not a regular file"):
        state.take_lock(pin)
    assert time.monotonic() - t0 < 2
