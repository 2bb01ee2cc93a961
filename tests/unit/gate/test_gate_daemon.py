"""Daemon start-up checks that need no kernel."""

import pytest

from spagate.errors import SpagateError
from spagate.gate.service.preflight import check_interfaces, missing_capabilities


def test_missing_capabilities_are_named():
    everything = f"CapEff:\t{(1 << 41) - 1:016x}\n"
    assert missing_capabilities(everything) == []
    no_bpf = f"CapEff:\t{((1 << 41) - 1) & ~(1 << 39):016x}\n"
    assert missing_capabilities(no_bpf) == ["CAP_BPF"]


def test_interfaces_are_checked_before_anything_loads():
    with pytest.raises(SpagateError, match="no interface"):
        check_interfaces(())
    with pytest.raises(SpagateError, match="'nope0' does not exist"):
        check_interfaces(("lo", "nope0"))
    assert check_interfaces(("lo",)) == {"lo": 1}
