"""Loading the ``.sql`` files: migrations and named queries. No I/O beyond reading files.

Queries live in ``sql/queries/<table>.sql``; each starts with a ``-- name: <name>`` line
(aiosql's convention) and uses psycopg's ``%(param)s`` placeholders, each with an explicit
cast (``%(id)s::uuid``) so ``wis2l db check`` can prepare it with no values at hand.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path

import attrs

from wis2l_core.errors import ValidationError
from wis2l_core.telemetry._sql import QueryText

__all__ = [
    "SHAPES",
    "Migration",
    "Query",
    "QueryFile",
    "QueryText",
    "load_queries",
    "migrations",
    "parse_queries",
    "query_file",
    "query_files",
    "sql_root",
]

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)(?:\s+:([a-z]+))?\s*$")
SHAPES = ("one", "many", "exec", "page")
"""The result shapes a ``-- name: <name> :<shape>`` line may end with (sqlc's words)."""
_PARAM = re.compile(r"%\(([a-z_][a-z0-9_]*)\)s")
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@attrs.frozen
class Query:
    """One named statement of a query file."""

    name: str
    text: str
    file: str
    line: int
    shape: str | None = None
    """``one``, ``many``, ``exec`` or ``page`` from the name line, ``None`` when not given."""

    def __attrs_post_init__(self) -> None:
        summary = f"{self.file.removesuffix('.sql')}.{self.name}"
        if getattr(self.text, "summary", None) != summary:
            object.__setattr__(self, "text", QueryText.named(self.text, summary))

    @functools.cached_property
    def params(self) -> tuple[str, ...]:
        """Parameter names in first-use order."""
        return tuple(dict.fromkeys(_PARAM.findall(self.text)))

    def positional(self) -> str:
        """The text with ``$1, $2 ...`` placeholders, for ``PREPARE``."""
        index = {name: i for i, name in enumerate(self.params, 1)}
        return _PARAM.sub(lambda m: f"${index[m.group(1)]}", self.text)


@attrs.frozen
class QueryFile:
    """The named queries of one ``.sql`` file: ``queries["find_open"]`` is a :class:`Query`.

    Attributes:
        table: the file's stem (``sql/queries/<table>.sql`` for the library's).
        queries: the queries by name, in file order.
        origin: the file as error messages name it.
    """

    table: str
    queries: Mapping[str, Query]
    origin: str = ""

    @classmethod
    def load(cls, path: str | Path) -> QueryFile:
        """Read an app's query file (same as :func:`load_queries`)."""
        return load_queries(path)

    def __getitem__(self, name: str) -> Query:
        try:
            return self.queries[name]
        except KeyError:
            where = self.origin or f"sql/queries/{self.table}.sql"
            raise KeyError(f"no query {name!r} in {where}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.queries

    def __len__(self) -> int:
        return len(self.queries)

    def __iter__(self) -> Iterator[Query]:
        return iter(self.queries.values())


@attrs.frozen
class Migration:
    """One forward-only migration file."""

    name: str
    text: str

    @functools.cached_property
    def checksum(self) -> str:
        """SHA-256 of the file's bytes, hex."""
        return hashlib.sha256(self.text.encode()).hexdigest()


@functools.cache
def sql_root() -> Path:
    """The ``sql`` directory: inside the installed wheel, else the source checkout's."""
    packaged = Path(str(resources.files("wis2l_core"))) / "sql"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "sql"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("wis2l_core: the sql/ directory is missing from the installation")


def parse_queries(table: str, text: str, *, origin: str | None = None) -> QueryFile:
    """Split a query file into named queries.

    Args:
        table: the file's stem.
        text: the file's text.
        origin: the file as messages name it (default ``sql/queries/<table>.sql``).

    Raises:
        ValueError: text before the first ``-- name:``, a name used twice, an empty query,
            or an unknown ``:shape`` after the name.
    """
    where = origin or f"sql/queries/{table}.sql"
    found: dict[str, Query] = {}
    name: str | None = None
    shape: str | None = None
    start = 0
    body: list[str] = []

    def close() -> None:
        if name is None:
            return
        sql = "\n".join(body).strip().rstrip(";").strip()
        if not sql:
            raise ValueError(f"{where}:{start}: query {name!r} is empty")
        found[name] = Query(name=name, text=sql, file=f"{table}.sql", line=start, shape=shape)

    for lineno, line in enumerate(text.splitlines(), 1):
        match = _NAME.match(line.strip())
        if match:
            close()
            name, shape, start, body = match.group(1), match.group(2), lineno, []
            if shape is not None and shape not in SHAPES:
                raise ValueError(
                    f"{where}:{lineno}: {name!r} ends with :{shape}, not one of"
                    f" :{', :'.join(SHAPES)}"
                )
            if name in found:
                raise ValueError(f"{where}:{lineno}: {name!r} is defined twice")
        elif name is None:
            if line.strip() and not line.strip().startswith("--"):
                raise ValueError(f"{where}:{lineno}: SQL before '-- name:'")
        else:
            body.append(line)
    close()
    return QueryFile(table=table, queries=found, origin=origin or "")


def load_queries(path: str | Path) -> QueryFile:
    """Read an app's own query file: ``-- name: <name>`` lines, psycopg placeholders.

    The queries run with ``wis.database.fetch_all(queries["name"], {...})`` (and
    ``fetch_one``, ``fetch_val``, ``execute``, ``page``), on the pool or on ``tx`` inside
    ``wis.transaction()``, prepared like the library's. Read it once, at import or start.

    Args:
        path: the ``.sql`` file.

    Returns:
        Its queries, by name.

    Raises:
        ValidationError: the file is missing or unreadable, or does not parse (text before
            the first ``-- name:``, a name used twice, an empty query); the message names
            the file and line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{file}: cannot read the query file: {exc}", field="path") from None
    try:
        return parse_queries(file.stem, text, origin=str(file))
    except ValueError as exc:
        raise ValidationError(str(exc), field="path") from None


@functools.cache
def query_file(table: str) -> QueryFile:
    """The parsed ``sql/queries/<table>.sql`` (read once per process)."""
    path = sql_root() / "queries" / f"{table}.sql"
    return parse_queries(table, path.read_text(encoding="utf-8"))


def query_files() -> tuple[QueryFile, ...]:
    """Every query file, sorted by table name."""
    paths = sorted((sql_root() / "queries").glob("*.sql"))
    return tuple(query_file(p.stem) for p in paths)


def migrations(directory: Path | None = None) -> tuple[Migration, ...]:
    """The migration files in order of their ``NNNN_`` prefix.

    Raises:
        ValueError: a file whose name is not ``NNNN_name.sql``, or two files with one number.
    """
    root = directory if directory is not None else sql_root() / "migrations"
    seen: dict[str, str] = {}
    found = []
    for path in sorted(root.glob("*.sql")):
        match = _MIGRATION.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_name.sql")
        if match.group(1) in seen:
            raise ValueError(f"migrations {seen[match.group(1)]} and {path.name} share a number")
        seen[match.group(1)] = path.name
        found.append(Migration(name=path.stem, text=path.read_text(encoding="utf-8")))
    return tuple(found)
