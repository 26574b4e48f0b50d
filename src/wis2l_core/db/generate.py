"""``wis2l db generate``: typed Python modules from the app's ``.sql`` files.

Each named query is prepared on a migrated database (``PREPARE``, never executed) and
PostgreSQL describes it: the type of each parameter and of each result column, and for a
column read straight from a table, that table and column. From that:

- a column read from a ``NOT NULL`` table column is not optional, unless the table sits on
  the nullable side of an outer join in the query's generic plan (``EXPLAIN (VERBOSE)``
  tells which side each scan is on); any other column is optional, unless its alias ends
  with ``!`` (``AS "n!"``: not null) or ``?`` (nullable); the attribute drops the suffix;
- a parameter is optional when the query tests it with ``IS NULL`` (an optional filter)
  or writes it as it is into a nullable column (``INSERT ... VALUES``, ``UPDATE ... SET``);
- types map to what psycopg returns (:data:`SCALARS`), arrays to lists, enums to
  ``StrEnum`` classes written into the module; any other type is refused by name.

One module per ``.sql`` file (:func:`~wis2l_core.db.codegen.render`), written only when its
text changes.
"""

from __future__ import annotations

import asyncio
import keyword
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

from wis2l_core._net import whole_seconds
from wis2l_core.config import Settings
from wis2l_core.db.check import PREPARE, error_line
from wis2l_core.db.codegen import (
    LINE_LENGTH,
    RESERVED,
    Column,
    Described,
    Param,
    camel,
    is_generated,
    render,
)
from wis2l_core.db.errors import map_errors
from wis2l_core.db.migrate import apply_migrations, migration_status
from wis2l_core.db.sql import Query, QueryFile, parse_queries
from wis2l_core.errors import ConfigError, ValidationError, Wis2lError

__all__ = [
    "SCALARS",
    "GenerateError",
    "describe_files",
    "generate",
    "line_length_of",
    "read_folders",
    "stale_files",
    "write_modules",
]

SCALARS: dict[str, str] = {
    "bool": "bool",
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "oid": "int",
    "float4": "float",
    "float8": "float",
    "numeric": "decimal.Decimal",
    "text": "str",
    "varchar": "str",
    "bpchar": "str",
    "char": "str",
    "name": "str",
    "citext": "str",
    "regclass": "str",
    "uuid": "uuid.UUID",
    "bytea": "bytes",
    "timestamptz": "datetime.datetime",
    "timestamp": "datetime.datetime",
    "date": "datetime.date",
    "time": "datetime.time",
    "timetz": "datetime.time",
    "interval": "datetime.timedelta",
    "json": "typed.JSON",
    "jsonb": "typed.JSON",
}
"""PostgreSQL type name -> the Python type psycopg returns for it (as written in code)."""

_OUTER = re.compile(r"\b(?:left|right|full)\s+(?:outer\s+)?join\b", re.IGNORECASE)
_STATEMENT = "wis2l_check_0"


class GenerateError(Wis2lError):
    """Queries the generator cannot type: one ``<file>:<line> <name>: <why>`` line each.

    Attributes:
        lines: those lines, in file order.
    """

    def __init__(self, message: str, *, lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.lines = tuple(lines) or (message,)


def read_folders(folders: Sequence[Path]) -> list[tuple[Path, QueryFile]]:
    """Every ``.sql`` file of ``folders`` (sorted in each), parsed.

    Raises:
        ValidationError: a folder is missing or holds no ``.sql`` file, a file does not
            parse, or two folders hold files of one name (they would write one module).
    """
    found: dict[str, tuple[Path, QueryFile]] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ValidationError(f"{folder}: no such folder of query files", field="queries")
        paths = sorted(folder.glob("*.sql"))
        if not paths:
            raise ValidationError(f"{folder}: no .sql files", field="queries")
        for path in paths:
            if path.stem in found:
                raise ValidationError(
                    f"{path} and {found[path.stem][0]} would both write {path.stem}.py",
                    field="queries",
                )
            try:
                parsed = parse_queries(
                    path.stem, path.read_text(encoding="utf-8"), origin=str(path)
                )
            except ValueError as exc:
                raise ValidationError(str(exc), field="queries") from None
            found[path.stem] = (path, parsed)
    return [found[stem] for stem in sorted(found)]


class _Catalog:
    """What the generator reads from the catalog, once per run."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn
        self.types: dict[int, tuple[str, str, int, int]] = {
            oid: (name, kind, elem, base)
            for oid, name, kind, elem, base in conn.execute(
                "SELECT oid::int, typname::text, typtype::text, typelem::int, typbasetype::int "
                "FROM pg_type"
            )
        }
        self.enums: dict[int, list[str]] = {}
        for oid, label in conn.execute(
            "SELECT enumtypid::int, enumlabel::text FROM pg_enum ORDER BY enumtypid, enumsortorder"
        ):
            self.enums.setdefault(oid, []).append(label)
        self.not_null: set[tuple[int, int]] = set(
            conn.execute(
                "SELECT attrelid::int, attnum::int FROM pg_attribute "
                "WHERE attnotnull AND attnum > 0 AND NOT attisdropped"
            )
        )
        self.used_enums: dict[str, tuple[str, list[str]]] = {}
        self._columns: dict[tuple[str, str], bool] | None = None

    def nullable_column(self, table: str, column: str) -> bool:
        """Whether ``table.column`` (as the SQL names them) may hold ``NULL``."""
        if self._columns is None:
            self._columns = {}
            for names, attname, notnull in self.conn.execute(
                "SELECT ARRAY[c.oid::regclass::text, n.nspname || '.' || c.relname], "
                "a.attname::text, a.attnotnull FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f')"
            ):
                for name in names:
                    self._columns[(name, attname)] = not notnull
        name = table.strip('"') if table.startswith('"') else table.lower()
        return self._columns.get((name, column), False)

    def python(self, oid: int, what: str) -> tuple[str, str | None]:
        """(Python type, enum class when it is one) of type ``oid``.

        Raises:
            ValueError: a type with no mapping, or a parameter with no type at all.
        """
        if oid == 0 or oid not in self.types:
            raise ValueError(f"{what} has no type: add a ::type cast")
        name, kind, elem, base = self.types[oid]
        if kind == "d":
            return self.python(base, what)
        if kind == "e":
            cls = camel(name)
            self.used_enums[cls] = (name, self.enums.get(oid, []))
            return cls, cls
        if elem and name.startswith("_"):
            inner, of_enum = self.python(elem, what)
            if of_enum is not None:
                raise ValueError(f"{what} is an array of the enum {name[1:]}: cast it to text[]")
            return f"list[{inner}]", None
        if name in SCALARS:
            return SCALARS[name], None
        raise ValueError(
            f"{what} has the type {name}, which the generator does not map: cast it (e.g. ::text)"
        )


def _nullable_tables(catalog: _Catalog, sql: str, positional_params: int) -> set[int]:
    """The tables (and their partitioned parents) scanned on the nullable side of an
    outer join in the generic plan of ``sql``."""
    nulls = ", ".join(["NULL"] * positional_params)
    args = f"({nulls})" if positional_params else ""
    catalog.conn.execute(PREPARE + sql)
    try:
        (plan,) = catalog.conn.execute(
            f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {_STATEMENT}{args}"
        ).fetchone() or ([],)
    finally:
        catalog.conn.execute(f"DEALLOCATE {_STATEMENT}")
    names: set[str] = set()

    def walk(node: dict[str, Any], nullable: bool) -> None:
        if nullable and "Relation Name" in node:
            names.add(f'"{node.get("Schema", "public")}"."{node["Relation Name"]}"')
        children = node.get("Plans", [])
        join = node.get("Join Type")
        for index, child in enumerate(children):
            side = (
                join == "Full"
                or (join == "Left" and index == 1)
                or (join == "Right" and index == 0)
            )
            walk(child, nullable or side)

    for entry in plan:
        walk(entry["Plan"], False)
    if not names:
        return set()
    rows = catalog.conn.execute(
        "SELECT r.name::regclass::oid::int FROM unnest(%(names)s::text[]) AS r(name) "
        "UNION SELECT a.relid::oid::int FROM unnest(%(names)s::text[]) AS r(name), "
        "pg_partition_ancestors(r.name::regclass) AS a",
        {"names": sorted(names)},
    )
    return {oid for (oid,) in rows}


_PLACEHOLDER = r"%\(([a-z_][a-z0-9_]*)\)s(?:::[\w\[\] ]+)?"
_TESTED = re.compile(_PLACEHOLDER + r"\s+IS\s+(?:NOT\s+)?NULL", re.IGNORECASE)
_INSERT = re.compile(
    r"\bINSERT\s+INTO\s+([\w.\"]+)(?:\s+AS\s+\w+)?\s*\(([^)]*)\)\s*VALUES\s*\((.*?)\)\s*"
    r"(?:RETURNING|ON\s+CONFLICT|$)",
    re.IGNORECASE | re.DOTALL,
)
_UPDATE = re.compile(r"\bUPDATE\s+([\w.\"]+)", re.IGNORECASE)
_SET = re.compile(r"(?:\bSET|,)\s*(\w+)\s*=\s*" + _PLACEHOLDER + r"\s*(?=,|\bWHERE\b|\bFROM\b|$)")


def _split(text: str) -> list[str]:
    """``text`` split at its top-level commas."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def _optional_params(catalog: _Catalog, query: Query) -> set[str]:
    """Parameters that may be ``None``: tested with ``IS NULL``, or written as they are
    into a nullable column (``INSERT ... (col) VALUES (%(p)s::t)``, ``SET col = %(p)s::t``)."""
    text = re.sub(r"--[^\n]*", "", query.text)
    found = {m.group(1) for m in _TESTED.finditer(text)}
    targets: list[tuple[str, str, str]] = []  # (table, column, parameter)
    for insert in _INSERT.finditer(text):
        columns, values = _split(insert.group(2)), _split(insert.group(3))
        for column, value in zip(columns, values, strict=False):
            if m := re.fullmatch(_PLACEHOLDER, value):
                targets.append((insert.group(1), column.strip('"'), m.group(1)))
    if update := _UPDATE.search(text):
        set_clause = text[update.end() :]
        targets += [(update.group(1), m.group(1), m.group(2)) for m in _SET.finditer(set_clause)]
    found.update(p for table, column, p in targets if catalog.nullable_column(table, column))
    return found


def _describe(catalog: _Catalog, where: str, query: Query, lines: list[str]) -> Described:
    conn = catalog.conn
    sql = query.positional()

    def fail(message: str, line: int | None = None) -> GenerateError:
        return GenerateError(f"{where}:{line or query.line} {query.name}: {message}")

    # The unnamed statement: one round trip to prepare, one to describe, nothing to free.
    result = conn.pgconn.prepare(b"", sql.encode())
    if result.status != pq.ExecStatus.COMMAND_OK:
        exc = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        message = " ".join((exc.diag.message_primary or str(exc)).split())
        raise fail(message, error_line(lines, query, sql, exc, prefix=""))
    result = conn.pgconn.describe_prepared(b"")
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise fail(result.get_error_message().strip())
    try:
        params = _params(catalog, query, [result.param_type(i) for i in range(result.nparams)])
        nullable = set()
        if result.nfields and _OUTER.search(query.text):
            nullable = _nullable_tables(catalog, sql, result.nparams)
        columns = tuple(
            _column(
                catalog,
                (result.fname(i) or b"?").decode(),
                result.ftype(i),
                (result.ftable(i), result.ftablecol(i)),
                nullable,
            )
            for i in range(result.nfields)
        )
        shape = _shape(query, params, columns)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if shape == "page":
        params = tuple(p for p in params if p.name not in ("after", "limit"))
    return Described(query, where, shape, params, columns)


def _params(catalog: _Catalog, query: Query, oids: list[int]) -> tuple[Param, ...]:
    optional = _optional_params(catalog, query)
    found = []
    for name, oid in zip(query.params, oids, strict=True):
        if keyword.iskeyword(name) or name in RESERVED:
            raise ValueError(f"parameter %({name})s: rename it (not usable as a Python name)")
        kind, _ = catalog.python(oid, f"parameter %({name})s")
        found.append(Param(name, kind, name in optional))
    return tuple(found)


def _column(
    catalog: _Catalog, label: str, oid: int, origin: tuple[int, int], nullable: set[int]
) -> Column:
    name = label.rstrip("!?")
    if label.endswith("!"):
        optional = False
    elif label.endswith("?"):
        optional = True
    else:
        optional = origin not in catalog.not_null or origin[0] in nullable
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ValueError(f"column {label!r} is not a Python name: alias it (AS name)")
    kind, enum = catalog.python(oid, f"column {name}")
    return Column(name, kind, optional, enum)


def _shape(query: Query, params: Sequence[Param], columns: Sequence[Column]) -> str:
    if query.name in RESERVED:
        raise ValueError(f"the name {query.name!r} is taken in the module: rename the query")
    shape = query.shape or ("many" if columns else "exec")
    names = [c.name for c in columns]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two columns are named {name!r}: alias one")
    if shape != "exec" and not columns:
        raise ValueError(f"returns no rows, so it cannot be :{shape}: use :exec")
    if shape == "page":
        given = {p.name: p.type for p in params}
        key = next((c for c in columns if c.name == "id"), None)
        if given.get("after") != "uuid.UUID" or given.get("limit") != "int":
            raise ValueError(":page takes %(after)s::uuid and %(limit)s::int")
        if key is None or key.type != "uuid.UUID" or key.optional:
            raise ValueError(":page needs a uuid column 'id' that is not null")
    return shape


def describe_files(
    database_url: str, files: Sequence[tuple[Path, QueryFile]], *, connect_timeout: float = 5.0
) -> list[tuple[Path, list[Described], dict[str, tuple[str, list[str]]]]]:
    """Prepare and describe every query of ``files`` on the database (never executed).

    Returns:
        Per file: its path, its queries described, and the enums they use (class name ->
        the type's name and its labels).

    Raises:
        GenerateError: a query that does not prepare, or that cannot be typed.
        ServiceUnavailable: the database cannot be reached.
    """
    with map_errors():
        conn = psycopg.Connection.connect(
            database_url,
            autocommit=True,
            connect_timeout=whole_seconds(connect_timeout),
            application_name="wis2l-core generate",
        )
    with conn, map_errors():
        conn.execute("SET plan_cache_mode = force_generic_plan")
        catalog = _Catalog(conn)
        described = []
        failures: list[str] = []
        for path, parsed in files:
            catalog.used_enums = {}
            lines = path.read_text(encoding="utf-8").splitlines()
            queries = []
            for query in parsed:
                try:
                    queries.append(_describe(catalog, str(path), query, lines))
                except GenerateError as exc:
                    failures.extend(exc.lines)
            described.append((path, queries, dict(sorted(catalog.used_enums.items()))))
    if failures:
        raise GenerateError("\n".join(failures), lines=failures)
    return described


def write_modules(
    out: Path,
    described: Iterable[tuple[Path, list[Described], dict[str, tuple[str, list[str]]]]],
    *,
    check: bool = False,
    line_length: int = LINE_LENGTH,
) -> list[Path]:
    """Write (or with ``check``, only compare) each module; return the files that changed
    (or would), generated files with no ``.sql`` file left among them (removed)."""
    modules = {
        out / f"{path.stem}.py": render(path, d, enums, line_length=line_length)
        for path, d, enums in described
    }
    changed = stale_files(out, modules)
    if check:
        return changed
    out.mkdir(parents=True, exist_ok=True)
    for target in changed:
        if target in modules:
            tmp = target.with_suffix(".py.tmp")
            tmp.write_text(modules[target], encoding="utf-8")
            os.replace(tmp, target)
        else:
            target.unlink()
    return changed


def stale_files(out: Path, modules: dict[Path, str]) -> list[Path]:
    """The files of ``out`` that differ from ``modules``, and generated files (their header
    holds :data:`~wis2l_core.db.codegen.MARKER`) that ``modules`` no longer has."""
    changed = [
        target
        for target, text in modules.items()
        if not target.is_file() or target.read_text(encoding="utf-8") != text
    ]
    if out.is_dir():
        for existing in sorted(out.glob("*.py")):
            if existing not in modules and is_generated(existing.read_text(encoding="utf-8")):
                changed.append(existing)
    return sorted(changed)


async def generate(
    settings: Settings,
    out: Path,
    *,
    check: bool = False,
    embedded: bool = False,
    line_length: int = LINE_LENGTH,
) -> tuple[int, list[Path]]:
    """Type every query of the app's folders (``settings.queries``) and write the modules.

    Args:
        settings: the app's settings: its query folders, its migrations, its database.
        out: the folder of the modules (created when missing).
        check: write nothing; only report what would change.
        embedded: start an embedded PostgreSQL, apply every migration (the library's and
            ``settings.migrations``) and describe the queries there, instead of on
            ``settings.direct_database_url`` (which must have every migration applied).
        line_length: the line length the code is formatted for.

    Returns:
        How many queries were typed, and the files that changed (or would, with ``check``).

    Raises:
        ConfigError: no query folder, or an app migrations folder that is missing.
        ValidationError: a query folder is missing or empty, or a file does not parse.
        GenerateError: a query that does not prepare or cannot be typed, or migrations
            pending on the database.
        ServiceUnavailable: the database cannot be reached.
    """
    if not settings.queries:
        raise ConfigError("no query folders: set WIS2L_QUERIES", variable="WIS2L_QUERIES")
    files = read_folders(settings.queries)
    count = sum(len(parsed) for _, parsed in files)
    if embedded:
        from wis2l_core.dev import EmbeddedStack

        stack = EmbeddedStack(oidc=False)
        await asyncio.to_thread(stack.start)
        try:
            await apply_migrations(stack.database_url, sources=settings.migrations)
            described = await asyncio.to_thread(describe_files, stack.database_url, files)
        finally:
            await asyncio.to_thread(stack.stop)
    else:
        url = settings.direct_database_url
        status = await migration_status(
            url, sources=settings.migrations, connect_timeout=settings.db_connect_timeout
        )
        if status.pending or status.drifted:
            raise GenerateError(
                f"the database is not migrated ({len(status.pending)} pending, "
                f"{len(status.drifted)} drifted): run `wis2l db migrate` first, or unset "
                "DATABASE_URL to use an embedded database"
            )
        described = await asyncio.to_thread(
            describe_files, url, files, connect_timeout=settings.db_connect_timeout
        )
    return count, write_modules(out, described, check=check, line_length=line_length)


def line_length_of(out: Path) -> int:
    """The ``--line-length`` the modules in ``out`` were written with (for ``--check``)."""
    for existing in sorted(out.glob("*.py")) if out.is_dir() else ():
        text = existing.read_text(encoding="utf-8")
        if is_generated(text):
            found = re.search(r"--line-length (\d+)", text)
            return int(found.group(1)) if found else LINE_LENGTH
    return LINE_LENGTH
