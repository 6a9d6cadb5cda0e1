"""No module of ours imports itself back, directly or through others: read from the source (every import
statement, the ones inside functions too, which only defer a cycle to the first call)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("zmlops", "training", "feature_repo", "inference_services", "monitoring", "governance", "dashboards",
            "delivery", "dags", "stack")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (``from a.b import c`` counts a.b.c when c is a module)."""
    found = modules()

    def ours(name: str) -> str | None:
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in map(ours, targets) if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert len(graph) > 80 and "zmlops.settings" in graph["training.trainers"] | graph["training.pipeline"]
    assert cycles(graph) == []


# The house's layers, bottom up; a module imports from its own layer and the ones below only.
FOUNDATION = ("zmlops",)  # settings, catalog, stores, auth, version: what every layer stands on
DOMAIN = ("training", "feature_repo", "inference_services", "monitoring", "governance", "dashboards", "delivery")
TOP = ("zmlops.cli", "dags")  # the commands and the DAGs wire the domain together
TOOLS = ("benchmarks", "demos", "stack")  # not installed: benchmarks, probes, demo drivers, the topology harness


def layer(module: str) -> int:
    for number, prefixes in enumerate((TOOLS, TOP, DOMAIN, FOUNDATION)):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return 3 - number
    raise AssertionError(f"{module} is in no layer: add its package to a layer above")


def test_every_import_points_down_the_layers() -> None:
    graph = import_graph()
    upward = sorted(f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, bs in graph.items() for b in bs
                    if layer(b) > layer(a))
    assert upward == []
    # the layer rule finds an upward import: the foundation reaching into training
    assert layer("zmlops.settings") < layer("training.run") < layer("zmlops.cli") < layer("demos.demo")


def test_tools_are_not_installed_and_installed_code_never_imports_them() -> None:
    import tomllib

    installed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert not set(installed["packages"]) & set(TOOLS)
    assert set(installed["packages"]) == {*FOUNDATION, *DOMAIN}  # the top's CLI is zmlops.cli; DAGs ship as files
