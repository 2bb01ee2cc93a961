"""Test layers: tests/unit (pure), tests/bpf (BPF_PROG_TEST_RUN, root), tests/e2e (netns, root).

Each test gets the marker of its directory. Outside CI, root-only layers skip with a one-line
reason when not root. In CI (CI=true) a skipped test or an empty layer fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LAYERS = ("unit", "bpf", "e2e")
ROOT_LAYERS = {"bpf", "e2e"}
TESTS = Path(__file__).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _layer(item: pytest.Item) -> str | None:
    try:
        rel = Path(str(item.fspath)).relative_to(TESTS)
    except ValueError:
        return None
    return rel.parts[0] if rel.parts and rel.parts[0] in LAYERS else None


def pytest_collection_modifyitems(config, items):
    is_root = os.geteuid() == 0
    for item in items:
        layer = _layer(item)
        if layer is None:
            continue
        item.add_marker(getattr(pytest.mark, layer))
        if layer in ROOT_LAYERS and not is_root:
            item.add_marker(pytest.mark.skip(reason=f"{layer} tests need root (sudo make test)"))


_passed: dict[str, int] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        layer = report.nodeid.split("/", 2)[1] if report.nodeid.startswith("tests/") else None
        if layer:
            _passed[layer] = _passed.get(layer, 0) + 1


def pytest_sessionfinish(session, exitstatus):
    if not IN_CI or exitstatus not in (0, 5):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    # Only a full run is held to "every layer": a run narrowed with -m or paths is not.
    full = not session.config.option.markexpr and session.config.args in ([], ["tests"])
    present = [la for la in LAYERS if any((TESTS / la).glob("test_*.py"))]
    empty = [la for la in present if full and not _passed.get(la)]
    problems = []
    if skipped:
        problems.append(f"{skipped} test(s) skipped")
    if session.testscollected == 0:
        problems.append("no tests ran")
    if empty:
        problems.append("no test passed in layer(s): " + ", ".join(empty))
    if problems:
        if reporter:
            reporter.ensure_newline()
            reporter.write_line("CI: " + "; ".join(problems) + " - failing the run", red=True)
        session.exitstatus = 1
