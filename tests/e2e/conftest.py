"""End-to-end fixtures: a lab of network namespaces (gate, client, flood) and a real gate daemon.

The daemon is a real `spagate attach eth0` process on the gate host; clients are real
`spagate send` processes and TCP/UDP probes. Everything is torn down after each test.
"""

from __future__ import annotations

import pytest

from spagate.lab.gate import LabGate
from spagate.lab.netns import Lab


@pytest.fixture
def lab():
    with Lab(("gate", "client", "flood")) as lab:
        yield lab


@pytest.fixture
def gate(lab, tmp_path):
    g = LabGate(lab, tmp_path)
    try:
        yield g
    finally:
        g.cleanup()
