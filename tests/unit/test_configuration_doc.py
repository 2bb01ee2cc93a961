"""docs/configuration.md documents every key the parsers know, and no other (both ways)."""

from __future__ import annotations

import re
from pathlib import Path

from spagate.client import config as client
from spagate.gate.core import config as gate

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def table_keys(heading: str) -> list[str]:
    """The first-column names of the table under a heading (up to the next heading)."""
    text = DOC.read_text()
    m = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert m, f"no section {heading!r} in {DOC.name}"
    return re.findall(r"^\| `([^`]+)` \|", m.group(1), re.M)


def test_every_gate_wide_key_is_documented_and_nothing_else():
    documented = table_keys("Gate-wide keys (above the first section)")
    assert sorted(documented) == sorted({*gate.GLOBAL_KEYS, "key", "hmac-key"})
    assert len(documented) == len(set(documented))


def test_every_identity_key_and_ignored_key_is_documented():
    assert sorted(table_keys("Identity keys (in a `[NAME]` section)")) == sorted(gate.IDENTITY_KEYS)
    assert sorted(table_keys("Keys read and ignored")) == sorted(gate.IGNORED_KEYS)


def test_every_client_key_and_variable_is_documented():
    assert table_keys("Client keys") == list(client.CLIENT_KEYS)
    variables = {v for pair in client.ENV_PAIRS for v in pair} | {client.ENV_URL}
    assert set(table_keys("Environment variables")) == variables


def test_every_row_gives_a_default_and_an_example():
    for heading in ("Gate-wide keys (above the first section)", "Client keys"):
        text = DOC.read_text().split(f"# {heading}\n", 1)[1].split("\n#", 1)[0]
        for row in re.findall(r"^\| `.*$", text, re.M):
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert len(cells) == 5 and cells[1], row
            assert re.search(r"`[^`]+ = [^`]*`", cells[4]), f"no example: {row}"
