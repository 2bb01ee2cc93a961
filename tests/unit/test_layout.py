"""The layout's rules, read from the sources: no import cycle, each layer imports only what is
below it, and bcc is imported by one module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "spagate"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(top_level_only: bool) -> dict[str, set[str]]:
    """module -> spagate modules it imports (at module level, or anywhere)."""
    paths = list(PKG.rglob("*.py"))
    modules = {_module(p) for p in paths}
    out: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        found = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module:
                # "from spagate.gate.kernel import abi" imports the module ...kernel.abi
                names = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found |= {n for n in names if n == "bcc" or n in modules}
        out[_module(path)] = found
    return out


def test_no_import_cycle_among_module_level_imports():
    graph = _imports(top_level_only=True)
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if d == "bcc" or d == m or m.startswith(d + "."):
                continue  # a package's own __init__ is not a cycle
            assert state.get(d) != 1, " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def _deps_of(prefix: str) -> set[str]:
    graph = _imports(top_level_only=False)
    return {d for m, deps in graph.items() if m.startswith(prefix) for d in deps}


def test_each_layer_imports_only_what_is_below_it():
    below = lambda deps, *allowed: {  # noqa: E731
        d for d in deps if not d.startswith(allowed) and d != "spagate"
    }
    assert below(_deps_of("spagate.protocol"), "spagate.protocol", "spagate.net") == set()
    assert (
        below(
            _deps_of("spagate.client"),
            "spagate.client",
            "spagate.protocol",
            "spagate.net",
            "spagate.errors",
            "spagate.inifile",
        )
        == set()
    )
    # core: pure; it may read the ABI's data module, nothing else of the kernel layer
    assert (
        below(
            _deps_of("spagate.gate.core"),
            "spagate.gate.core",
            "spagate.gate.kernel.abi",
            "spagate.protocol",
            "spagate.net",
            "spagate.errors",
            "spagate.inifile",
        )
        == set()
    )
    assert below(
        _deps_of("spagate.gate.kernel"),
        "spagate.gate.kernel",
        "spagate.net",
        "spagate.errors",
    ) == {"bcc"}
    assert _deps_of("spagate.protocol.messages") == set()  # the leaf


def test_only_build_imports_bcc_and_only_the_demo_command_imports_the_lab():
    graph = _imports(top_level_only=False)
    assert {m for m, deps in graph.items() if "bcc" in deps} == {"spagate.gate.kernel.build"}
    lab_users = {
        m
        for m, deps in graph.items()
        if not m.startswith("spagate.lab") and any(d.startswith("spagate.lab") for d in deps)
    }
    assert lab_users == {"spagate.gate.cli"}
