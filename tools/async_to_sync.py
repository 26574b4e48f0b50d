"""Generate wis2l_core.sync from the asynchronous source, in psycopg's way.

The asynchronous repositories and caches are the one source of truth; their synchronous
twins under ``src/wis2l_core/sync/db/`` and ``src/wis2l_core/sync/cache/`` are written by
this script and never edited by hand. The conversion is syntactic (libcst):

- ``async def`` -> ``def``, ``await x`` -> ``x``, ``async with``/``async for`` -> ``with``/``for``;
- names from :data:`NAMES` (``AsyncConnection`` -> ``Connection``, ``asynccontextmanager``
  -> ``contextmanager``, ...), and ``asyncio.<name>`` from :data:`ASYNCIO`;
- imports of converted modules from :data:`MODULES` (``wis2l_core.db.pool`` ->
  ``wis2l_core.sync._pool``, ``redis.asyncio`` -> ``redis``, ...);
- classes in :data:`SHARED` are imported from the asynchronous module instead of copied,
  so ``wis2l_core.sync`` and ``wis2l_core`` share one ``Session``, ``TokenInput``, ...

then ruff sorts the imports and formats the result. What needs an event loop by nature
(the pool, the Redis client, NATS) is hand-written glue in ``src/wis2l_core/sync/_*.py``.

Usage::

    python tools/async_to_sync.py           # (re)write the generated modules
    python tools/async_to_sync.py --check   # exit 1 naming each file that would change
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import libcst as cst

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "wis2l_core"
OUT = SRC / "sync"

DB_MODULES = (
    "arrow",
    "repository",
    "users",
    "projects",
    "templates",
    "components",
    "tokens",
    "builds",
    "deployments",
    "events",
    "queries",
    "repositories",
)
CACHE_MODULES = ("store", "sessions", "builds", "ratelimit")

TARGETS: tuple[tuple[str, str], ...] = (
    *((f"db/{m}.py", f"sync/db/{m}.py") for m in DB_MODULES),
    *((f"cache/{m}.py", f"sync/cache/{m}.py") for m in CACHE_MODULES),
)
"""(asynchronous source, generated module), relative to ``src/wis2l_core``."""

MODULES: dict[str, str] = {
    "redis.asyncio": "redis",
    "wis2l_core.db.pool": "wis2l_core.sync._pool",
    "wis2l_core.cache.client": "wis2l_core.sync._redis",
    **{f"wis2l_core.db.{m}": f"wis2l_core.sync.db.{m}" for m in DB_MODULES},
    **{f"wis2l_core.cache.{m}": f"wis2l_core.sync.cache.{m}" for m in CACHE_MODULES},
}
"""Imported module -> the module the synchronous code imports instead."""

NAMES: dict[str, str] = {
    "AsyncConnection": "Connection",
    "AsyncCursor": "Cursor",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncNullConnectionPool": "NullConnectionPool",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "AsyncExitStack": "ExitStack",
    "asynccontextmanager": "contextmanager",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
}
"""Names (variables, attributes, imported names) renamed everywhere."""

ASYNCIO: dict[str, tuple[str, str]] = {
    "sleep": ("time", "sleep"),
    "Lock": ("threading", "Lock"),
    "Event": ("threading", "Event"),
    "Semaphore": ("threading", "Semaphore"),
}
"""``asyncio.<name>`` -> ``<module>.<name>``."""

SHARED: dict[str, tuple[str, ...]] = {
    "db/tokens.py": ("TokenInput",),
    "cache/sessions.py": ("Session",),
    "cache/ratelimit.py": ("RateLimit",),
}
"""Classes the generated module imports from the asynchronous one instead of copying."""


def _dotted(node: cst.BaseExpression | None) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def _module_expr(dotted: str) -> cst.Attribute | cst.Name:
    return cst.parse_expression(dotted)  # type: ignore[return-value]


class AsyncToSync(cst.CSTTransformer):
    """The syntactic conversion of one module."""

    def __init__(self, source_module: str, shared: tuple[str, ...]) -> None:
        super().__init__()
        self.source_module = source_module
        self.shared = shared
        self.needed: set[str] = set()  # modules to import for ASYNCIO replacements

    def leave_FunctionDef(
        self, original: cst.FunctionDef, updated: cst.FunctionDef
    ) -> cst.FunctionDef:
        return updated.with_changes(asynchronous=None) if updated.asynchronous else updated

    def leave_Await(self, original: cst.Await, updated: cst.Await) -> cst.BaseExpression:
        return updated.expression.with_changes(
            lpar=[*updated.lpar, *updated.expression.lpar],
            rpar=[*updated.expression.rpar, *updated.rpar],
        )

    def leave_With(self, original: cst.With, updated: cst.With) -> cst.With:
        return updated.with_changes(asynchronous=None) if updated.asynchronous else updated

    def leave_For(self, original: cst.For, updated: cst.For) -> cst.For:
        return updated.with_changes(asynchronous=None) if updated.asynchronous else updated

    def leave_CompFor(self, original: cst.CompFor, updated: cst.CompFor) -> cst.CompFor:
        return updated.with_changes(asynchronous=None) if updated.asynchronous else updated

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        new = NAMES.get(updated.value)
        return updated.with_changes(value=new) if new else updated

    def leave_Attribute(
        self, original: cst.Attribute, updated: cst.Attribute
    ) -> cst.BaseExpression:
        if _dotted(updated.value) == "asyncio" and updated.attr.value in ASYNCIO:
            module, name = ASYNCIO[updated.attr.value]
            self.needed.add(module)
            return cst.Attribute(value=_module_expr(module), attr=cst.Name(name))
        return updated

    def leave_ImportFrom(
        self, original: cst.ImportFrom, updated: cst.ImportFrom
    ) -> cst.ImportFrom | cst.RemovalSentinel:
        if updated.relative:
            return updated
        dotted = _dotted(updated.module)
        if dotted in MODULES:
            updated = updated.with_changes(module=_module_expr(MODULES[dotted]))
        if isinstance(updated.names, cst.ImportStar):
            return updated
        if dotted not in MODULES and all(  # from wis2l_core.db import arrow
            f"{dotted}.{_dotted(alias.name)}" in MODULES for alias in updated.names
        ):
            first = f"{dotted}.{_dotted(updated.names[0].name)}"
            updated = updated.with_changes(module=_module_expr(MODULES[first].rpartition(".")[0]))
        seen: set[str] = set()
        aliases = []
        for alias in updated.names:  # a rename may import a name twice
            asname = alias.asname.name if alias.asname else None
            key = f"{_dotted(alias.name)} as {_dotted(asname)}"
            if key not in seen:
                seen.add(key)
                aliases.append(alias.with_changes(comma=cst.MaybeSentinel.DEFAULT))
        return updated.with_changes(names=aliases)

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        body: list[cst.BaseStatement] = []
        for stmt in updated.body:
            if isinstance(stmt, cst.ClassDef) and stmt.name.value in self.shared:
                continue
            body.append(stmt)
        extra = [f"import {m}" for m in sorted(self.needed) if "." not in m]
        extra += [
            f"from {m.rpartition('.')[0]} import {m.rpartition('.')[2]}"
            for m in sorted(self.needed)
            if "." in m
        ]
        if self.shared:
            extra.append(f"from {self.source_module} import {', '.join(self.shared)}")
        if extra:
            at = next(
                i
                for i, stmt in enumerate(body)
                if isinstance(stmt, cst.SimpleStatementLine)
                and isinstance(stmt.body[0], cst.Import | cst.ImportFrom)
                and _dotted(getattr(stmt.body[0], "module", None)) != "__future__"
            )
            body[at:at] = [cst.parse_statement(line) for line in extra]
        return updated.with_changes(body=body)


def convert(source: str, source_module: str, origin: str, shared: tuple[str, ...] = ()) -> str:
    """The synchronous module of ``source`` (before ruff's import sorting and formatting)."""
    tree = cst.parse_module(source)
    tree = tree.visit(AsyncToSync(source_module, shared))
    header = cst.EmptyLine(
        comment=cst.Comment(f"# generated by tools/async_to_sync.py from {origin}, do not edit")
    )
    return tree.with_changes(header=[header, *tree.header]).code


_RUFF = (sys.executable, "-m", "ruff")


def _ruff(code: str, path: Path) -> str:
    """Sort the imports, drop the unused ones, and format, as ``ruff`` does for the
    repository (its configuration in pyproject.toml applies)."""
    name = str(path.relative_to(ROOT))
    fixed = subprocess.run(
        [
            *_RUFF,
            "check",
            "--fix",
            "--exit-zero",
            "--quiet",
            "--select",
            "I,F401",
            "--stdin-filename",
            name,
            "-",
        ],
        input=code,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return subprocess.run(
        [*_RUFF, "format", "--quiet", "--stdin-filename", name, "-"],
        input=fixed,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def generate() -> dict[Path, str]:
    """Every generated file's path and text."""
    out: dict[Path, str] = {}
    for source, target in TARGETS:
        module = "wis2l_core." + source.removesuffix(".py").replace("/", ".")
        origin = f"src/wis2l_core/{source}"
        code = convert((SRC / source).read_text(), module, origin, SHARED.get(source, ()))
        path = SRC / target
        out[path] = _ruff(code, path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file would change"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        verb = "would change" if args.check else "written"
        print(f"{path.relative_to(ROOT)}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
