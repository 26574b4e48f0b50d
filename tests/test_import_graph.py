"""The house's import graph has no cycle, type-only imports included.

Every module of ``src/wis2l_core`` is parsed with :mod:`ast` (nothing is imported), and
each ``import`` / ``from ... import`` between our own modules is an arrow: at module
level, under ``if TYPE_CHECKING:`` and inside functions alike, relative imports resolved,
``from pkg import name`` pointing at the submodule when ``name`` is one. Importing
``a.b.c`` draws no arrow to the packages ``a`` and ``a.b`` (Python runs their
``__init__`` first, but that is the package's own business, not the module's).

Run ``python -m tests.test_import_graph`` from the repository root for the house in
numbers (modules, lines, arrows, floors, largest modules) and any cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "wis2l_core"

Graph = dict[str, set[str]]


def modules(src: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(name: str, is_package: bool, node: ast.AST, known: Iterable[str]) -> set[str]:
    """Our modules that one import statement in module ``name`` reaches."""
    known = set(known)
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    reached: set[str] = set()
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        if submodule in known:
            reached.add(submodule)
        elif origin in known:
            reached.add(origin)
    return reached


def import_graph(src: Path = SRC) -> Graph:
    """``{module: {module it imports, ...}}`` over our own modules."""
    found = modules(src)
    graph: Graph = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        arrows: set[str] = set()
        for node in ast.walk(tree):
            arrows |= _targets(name, is_package, node, found)
        arrows.discard(name)
        graph[name] = arrows
    return graph


def strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (Tarjan), those of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative, so a deep graph cannot overflow
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def shortest_cycle(graph: Mapping[str, set[str]], group: list[str]) -> list[str]:
    """One shortest cycle through the group's first module, as ``[a, b, ..., a]``."""
    members = set(group)
    start = group[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{group} is not strongly connected")  # pragma: no cover


def cycles(graph: Mapping[str, set[str]]) -> list[str]:
    """Each cycle group, named by one shortest cycle through it (`a -> b -> a`)."""
    named = []
    for group in strongly_connected(graph):
        cycle = " -> ".join(shortest_cycle(graph, group))
        others = len(group) - len(set(shortest_cycle(graph, group)))
        named.append(cycle + (f" (+{others} more modules in the group)" if others else ""))
    return named


def _floor(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def summary(src: Path = SRC) -> str:
    """The house in numbers: modules, lines, arrows, per floor, the largest rooms, cycles."""
    found = modules(src)
    graph = import_graph(src)
    lines = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in found.items()
    }
    ordered = sorted(lines.values())
    floors: dict[str, list[str]] = defaultdict(list)
    for name in found:
        floors[_floor(name)].append(name)
    out = [
        f"modules {len(found)}  lines {sum(ordered)}  median {ordered[len(ordered) // 2]}  "
        f"largest {ordered[-1]}  arrows {sum(len(a) for a in graph.values())}  "
        f"cycle groups {len(strongly_connected(graph))}",
        "",
        f"{'floor':<12}{'modules':>8}{'lines':>8}{'out':>6}{'in':>6}  imports floors",
    ]
    for floor, names in sorted(floors.items()):
        outgoing = {t for n in names for t in graph[n] if _floor(t) != floor}
        incoming = {n for n in graph for t in graph[n] if _floor(t) == floor and _floor(n) != floor}
        reaches = sorted({_floor(t) for t in outgoing})
        out.append(
            f"{floor:<12}{len(names):>8}{sum(lines[n] for n in names):>8}"
            f"{len(outgoing):>6}{len(incoming):>6}  {', '.join(reaches)}"
        )
    out += ["", "largest modules:"]
    for name in sorted(lines, key=lambda n: (-lines[n], n))[:8]:
        out.append(f"  {lines[name]:>5}  {name}")
    found_cycles = cycles(graph)
    out += ["", f"cycles: {len(found_cycles) or 'none'}"]
    out += [f"  {cycle}" for cycle in found_cycles]
    return "\n".join(out)


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, (
        "import cycles (type-only and function-level imports included):\n" + "\n".join(found)
    )


def test_the_caches_do_not_import_the_database_floor() -> None:
    graph = import_graph()
    reached = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name == f"{PACKAGE}.cache" or name.startswith(f"{PACKAGE}.cache.")
        for target in targets
        if target == f"{PACKAGE}.db" or target.startswith(f"{PACKAGE}.db.")
    }
    assert not reached, sorted(reached)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from wis2l_core import a\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import b\n"
    )
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (package / "c.py").write_text("import wis2l_core.sub.b\nfrom . import a\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "wis2l_core": {"wis2l_core.a"},
        "wis2l_core.a": {"wis2l_core.sub.b"},
        "wis2l_core.sub": set(),
        "wis2l_core.sub.b": {"wis2l_core.c"},
        "wis2l_core.c": {"wis2l_core.sub.b", "wis2l_core.a"},
    }
    assert cycles(graph) == ["wis2l_core.a -> wis2l_core.sub.b -> wis2l_core.c -> wis2l_core.a"]


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC))
