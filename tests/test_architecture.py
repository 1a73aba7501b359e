"""The wall between the core and the fundus application, as a user and a contributor meet it.

The contracts themselves (core -> application forbidden, layers) are import-linter's, run by ``.ci/run``
(``lint-imports``); these tests check what they cannot: what ``import group_attention`` loads, and that no two
modules import each other, directly or through others, deferred imports inside functions included.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

grimp = pytest.importorskip("grimp")


def _imported_by(statement: str) -> dict:
    """Top-level packages (the standard library's aside) and group_attention modules that ``statement`` loads beyond
    torch and einops."""
    code = (
        "import sys, json, torch, einops\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps({'packages': sorted({m.split('.')[0] for m in new} - set(sys.stdlib_module_names)),"
        " 'modules': sorted(m for m in new if m.startswith('group_attention'))}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_loads_the_core_only():
    loaded = _imported_by("import group_attention")
    assert loaded["packages"] == ["group_attention"]  # no PIL, tqdm, timm, numpy-only helpers...
    assert not [m for m in loaded["modules"] if m.startswith("group_attention.fundus")]


def test_the_top_level_load_model_reaches_the_application_on_first_use():
    loaded = _imported_by("import group_attention; group_attention.load_model")
    assert "group_attention.fundus.checkpoint" in loaded["modules"] and "PIL" in loaded["packages"]


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph`` (module -> modules it imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in list(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [component for component in _strongly_connected(graph) if len(component) > 1] == [{"a", "b", "c"}]


def test_no_module_of_the_package_imports_itself_back():
    graph = grimp.build_graph("group_attention")
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    cycles = [sorted(component) for component in _strongly_connected(imports) if len(component) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_nothing_imports_up_to_the_package_root():
    graph = grimp.build_graph("group_attention")
    importers = graph.find_modules_that_directly_import("group_attention") - {"group_attention.__main__"}
    assert not importers, f"modules importing the package root: {sorted(importers)}"
