"""The query files: every query a repository names exists, every query is used, all prepare.

Which queries the code uses is read from the source's syntax tree, not by running it: in a
class with ``table = "<t>"``, the query-name argument of ``self._one/_all/_page/_find_all_by/_find/
_write/_write_model/_write_found/_write_many/_q/_exec`` names a query of
``sql/queries/<t>.sql``, and so does a literal name in a method of a base class without a
table (``Repository.find_by_id``, the ``FindAll``/``FindByProject``/``FindBySlug``/
``DeleteById`` verbs): it runs on the table of every class inheriting it. Anywhere in the
package, so does ``query_file("<t>")["<name>"]`` (also through a variable or attribute assigned
``query_file("<t>")``). A name must be a string literal, or a local variable whose
assignment holds only literal names (``name = {...: "find_all", ...}[key]``), so that
this test, and a reader, can see every query a method may run.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import shutil
from pathlib import Path

import pytest

import wis2l_core
from wis2l_core.cli import main
from wis2l_core.db.check import check_queries
from wis2l_core.db.sql import query_files, sql_root

PACKAGE = Path(wis2l_core.__file__).parent
# method -> the position of its query-name argument
QUERY_METHODS = {
    "_one": 0,
    "_all": 0,
    "_page": 0,
    "_find_all_by": 0,
    "_write": 0,
    "_write_many": 0,
    "_q": 0,
    "_exec": 1,
    "_find": 0,
    "_write_model": 0,
    "_write_found": 0,
}


def _str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _class_table(cls: ast.ClassDef) -> str | None:
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "table" for t in stmt.targets
        ):
            return _str(stmt.value)
    return None


def _names_in(func: ast.AST, arg: ast.expr) -> list[str] | None:
    """The literal query names ``arg`` can take: itself, or what ``func`` assigns to it."""
    if (name := _str(arg)) is not None:
        return [name]
    if not isinstance(arg, ast.Name):
        return None
    found = [
        c.value
        for node in ast.walk(func)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == arg.id for t in node.targets)
        for c in ast.walk(node.value)
        if _str(c) is not None
    ]
    return [str(f) for f in found] or None


def _query_file_table(node: ast.AST) -> str | None:
    """``t`` for the expression ``query_file("t")``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "query_file"
        and node.args
    ):
        return _str(node.args[0])
    return None


def _parse(source: str) -> ast.Module:
    # On CPython 3.11 before 3.11.8, an error raised while the tree is being built (e.g.
    # by a finalizer the garbage collector runs then) surfaces as "SystemError: AST
    # constructor recursion depth mismatch" (gh-106905): keep the collector out of it.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if enabled:
            gc.enable()


def _query_calls(cls: ast.ClassDef) -> list[tuple[ast.AST, ast.Call, ast.expr | None]]:
    """``(method, call, name argument)`` of each ``self._one(...)``-like call in ``cls``."""
    found = []
    for func in ast.walk(cls):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for call in ast.walk(func):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in QUERY_METHODS
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "self"
            ):
                at = QUERY_METHODS[call.func.attr]
                found.append((func, call, call.args[at] if len(call.args) > at else None))
    return found


def _base_names(cls: ast.ClassDef) -> list[str]:
    """The names of the bases of ``cls`` (``Repository[User]`` -> ``Repository``)."""
    return [ast.unparse(b.value if isinstance(b, ast.Subscript) else b) for b in cls.bases]


def inherited_queries(paths: list[Path]) -> set[tuple[str, str]]:
    """(table, query) pairs a class with a table runs through a base class's methods.

    A class without a table contributes the literal query names of its methods to every
    class with a table that inherits it (directly or through other such classes).
    """
    verbs: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    tables: list[tuple[str, list[str]]] = []
    for path in paths:
        for node in ast.walk(_parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            if (table := _class_table(node)) is not None:
                tables.append((table, _base_names(node)))
                continue
            bases[node.name] = _base_names(node)
            verbs[node.name] = {
                name for _, _, arg in _query_calls(node) if arg is not None and (name := _str(arg))
            }
    used: set[tuple[str, str]] = set()
    for table, direct in tables:
        seen: set[str] = set()
        todo = list(direct)
        while todo:
            if (base := todo.pop()) in seen or base not in verbs:
                continue
            seen.add(base)
            used.update((table, name) for name in verbs[base])
            todo.extend(bases[base])
    return used


def _scan(path: Path, used: set[tuple[str, str]], dynamic: list[str]) -> None:
    tree = _parse(path.read_text(encoding="utf-8"))
    # Targets holding a query file: `self._queries = query_file("outbox")`, `q = ...`.
    holders = {
        ast.unparse(t): table
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and (table := _query_file_table(node.value))
        for t in node.targets
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            table = _query_file_table(node.value) or holders.get(ast.unparse(node.value))
            if table is not None:
                names = _names_in(tree, node.slice)
                if names is None:
                    dynamic.append(f"{path.name}:{node.lineno}")
                used.update((table, n) for n in names or ())
        if isinstance(node, ast.ClassDef) and (table := _class_table(node)):
            for func, call, arg in _query_calls(node):
                names = None if arg is None else _names_in(func, arg)
                if names is None:
                    dynamic.append(f"{path.name}:{call.lineno}")
                used.update((table, n) for n in names or ())


def used_queries() -> tuple[set[tuple[str, str]], list[str]]:
    """(table, query) pairs the package names, and the places whose name cannot be read."""
    used: set[tuple[str, str]] = set()
    dynamic: list[str] = []
    paths = sorted(PACKAGE.rglob("*.py"))
    for path in paths:
        _scan(path, used, dynamic)
    return used | inherited_queries(paths), dynamic


def defined_queries() -> set[tuple[str, str]]:
    return {(f.table, q.name) for f in query_files() for q in f}


def test_the_scan_sees_the_repositories() -> None:
    used, _ = used_queries()
    tables = {t for t, _ in used}
    assert {"users", "builds", "deployments", "events"} <= tables
    assert ("events", "insert_outbox") in used  # repository.py's write path
    assert ("builds", "update") in used
    assert ("builds", "find_all_by_status") in used
    assert ("users", "find_by_id") in used  # repository.py's Repository.find_by_id
    assert ("projects", "find_by_slug") in used  # FindBySlug, a verb mixed in


def test_the_scan_reads_every_pattern(tmp_path: Path) -> None:
    module = tmp_path / "fake.py"
    module.write_text(
        """
class Fake(Repository):
    table = "fakes"

    async def a(self, flag):
        await self._one("literal")
        name = {True: "picked_a", False: "picked_b"}[flag]
        await self._page(name, build)
        await self._write(compute_name(), {})

class Relay:
    def __init__(self):
        self._queries = query_file("relay")

    async def run(self):
        self._queries["claim"]
        query_file("other")["direct"]
"""
    )
    used: set[tuple[str, str]] = set()
    dynamic: list[str] = []
    _scan(module, used, dynamic)
    assert used == {
        ("fakes", "literal"),
        ("fakes", "picked_a"),
        ("fakes", "picked_b"),
        ("relay", "claim"),
        ("other", "direct"),
    }
    assert dynamic == ["fake.py:9"]  # the compute_name() call


def test_the_scan_follows_base_classes(tmp_path: Path) -> None:
    module = tmp_path / "bases.py"
    module.write_text(
        """
class Base(Generic[T]):
    async def find_by_id(self, id):
        return await self._find("find_by_id", id=id)

    async def _find(self, name, **params):
        return self._db.run(self._q(name), params)

class Verb:
    async def delete(self, id):
        await self._write("delete", {"id": id})

class Middle(Verb):
    pass

class Things(Base[Thing], Middle):
    table = "things"

class Others(Base[Other]):
    table = "others"
"""
    )
    assert inherited_queries([module]) == {
        ("things", "find_by_id"),
        ("things", "delete"),
        ("others", "find_by_id"),
    }


def test_every_named_query_exists() -> None:
    used, dynamic = used_queries()
    assert dynamic == [], "query names must be string literals"
    missing = sorted(used - defined_queries())
    assert missing == [], f"named in code but not in sql/queries: {missing}"


def test_every_query_is_used() -> None:
    used, _ = used_queries()
    unused = sorted(defined_queries() - used)
    assert unused == [], f"in sql/queries but used by no repository method: {unused}"


def test_db_check_passes_on_the_migrated_database(
    wis2l_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "check", "--database-url", wis2l_database_url]) == 0
    out = capsys.readouterr().out
    total = sum(len(f.queries) for f in query_files())
    assert f"checked {total} queries in {len(query_files())} files: 0 failed" in out


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_db_check_fails_on_a_broken_query_file(
    wis2l_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "queries"
    shutil.copytree(sql_root() / "queries", queries)
    builds = queries / "builds.sql"
    text = builds.read_text()
    # A renamed column deep inside the atomic update, and a parameter with no cast.
    text = text.replace("log_tail(b.logs ||", "log_tail(b.logz ||", 1)
    text += "\n-- name: uncast\nSELECT id FROM builds\nWHERE target = %(target)s;\n"
    builds.write_text(text)
    (queries / "zz_garbage.sql").write_text("SELECT 1;\n-- name: late\nSELECT 2;\n")
    (queries / "yy_missing.sql").write_text("-- x\n\n-- name: gone\nSELECT * FROM nowhere;\n")

    code = main(
        ["db", "check", "--database-url", wis2l_database_url, "--queries-dir", str(queries)]
    )
    assert code == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"sql/queries/builds.sql:{_line_of(builds, 'b.logz')}: update:" in out
    assert "column b.logz does not exist" in out
    uncast_line = _line_of(builds, "-- name: uncast")
    assert any(
        line.startswith(f"sql/queries/builds.sql:{uncast_line}: uncast:") and "::type" in line
        for line in lines
    ), out
    assert "sql/queries/zz_garbage.sql:1: SQL before '-- name:'" in out
    assert (
        f"sql/queries/yy_missing.sql:{_line_of(queries / 'yy_missing.sql', 'nowhere')}: gone:"
        in out
    )
    assert "users.sql" not in out  # untouched files pass
    assert lines[-1].endswith("failed")
    assert not lines[-1].endswith(" 0 failed")


async def test_check_report_counts(wis2l_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "t.sql").write_text(
        "-- name: ok\nSELECT %(a)s::int + 1;\n\n-- name: bad\nSELEC 1;\n"
    )
    report = await check_queries(wis2l_database_url, directory=tmp_path)
    assert (report.checked, report.files, report.ok) == (2, 1, False)
    (failure,) = report.failures
    assert (failure.file, failure.line, failure.query) == ("t.sql", 5, "bad")
    assert "syntax error" in failure.message
    # Nothing was left prepared or written: a second run gives the same answer.
    again = await check_queries(wis2l_database_url, directory=tmp_path)
    assert again == report
    assert asyncio.get_running_loop()  # ran on the test's loop, no thread needed
