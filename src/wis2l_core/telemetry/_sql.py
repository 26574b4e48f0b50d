"""What a SQL statement is, for its span: its name, its operation and its one table. No I/O.

A named query's text is a :class:`QueryText` (``Query.text``, made by
:mod:`wis2l_core.db.sql`), which carries its name. :func:`describe` reads any statement
once (the answers are cached per text): enough of PostgreSQL's grammar to find the verb
and the tables a statement names, never its values.
"""

from __future__ import annotations

import functools
import re

__all__ = ["QueryText", "describe"]


class QueryText(str):
    """A named query's SQL: a ``str`` that also knows the query's name.

    ``Query.text`` is one, so whatever runs it (a repository, ``fetch_one``, a generated
    function, or psycopg called by hand with ``query.text``) hands the name to the
    connection's cursor along with the text: the cursor names its span and its SQL
    comment ``users.find_by_id`` without parsing anything at call time.
    """

    summary: str
    """``<file stem>.<query name>``: the span's name and ``db.query.summary``."""

    @classmethod
    def named(cls, text: str, summary: str) -> QueryText:
        """``text`` carrying ``summary``."""
        made = cls(text)
        made.summary = summary
        return made


_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|--[^\n]*|/\*.*?\*/)
    | (?P<string>[eE]?'(?:[^']|'')*'|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    | (?P<name>"(?:[^"]|"")+"(?:\."(?:[^"]|"")+"|\.[A-Za-z_][\w$]*)*
        |[A-Za-z_][\w$]*(?:\.(?:[A-Za-z_][\w$]*|"(?:[^"]|"")+"))*)
    | (?P<open>\() | (?P<close>\)) | (?P<comma>,)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_VERBS = frozenset({"select", "insert", "update", "delete", "merge", "values", "table"})
_WRITES = frozenset({"insert", "update", "delete", "merge"})
_STATEMENT_START = _VERBS | {"with"}
_TABLE_BEFORE = frozenset({"from", "join", "into", "update", "table", "using"})
_NOT_UPDATE = frozenset({"for", "do", "key"})  # FOR UPDATE, DO UPDATE, FOR NO KEY UPDATE
_SKIP_TO_TABLE = frozenset({"only", "lateral"})
_NOT_TABLE = frozenset({"set", "select", "values", "with", "where", "default", "stdin", "stdout"})
_CLAUSES = frozenset(
    {"where", "on", "group", "order", "limit", "returning", "having", "window", "union"}
    | {"except", "intersect", "for", "set", "offset", "fetch", "select", "values"}
)
_NO_TOKEN = ("", "")


def _tokens(sql: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of each token, blanks, comments and literals left out."""
    found = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind in ("name", "open", "close", "comma", "other"):
            found.append((kind, match.group()))
    return found


def _unquote(name: str) -> str:
    return ".".join(
        part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()
        for part in re.findall(r'"(?:[^"]|"")+"|[^.]+', name)
    )


class _Scan:
    """One pass over a statement's tokens (see :func:`describe`)."""

    def __init__(self, first: str) -> None:
        self.verb = first.upper()
        self.levels = [True]  # per open parenthesis: does a (sub-)statement start in it?
        self.tables: list[str] = []
        self.ctes: set[str] = set()
        self.expect = False  # the next name is a table
        self.listing = 0  # the depth of a FROM list, whose commas bring tables (0: none)
        self.last = ""  # the previous word
        self.main: str | None = None  # after WITH: the main statement's verb
        self.write: str | None = None  # after WITH: the first write

    def open(self, following: tuple[str, str]) -> None:
        starts = following[1].lower()
        self.levels.append(starts in _STATEMENT_START)
        if starts in _WRITES and self.write is None:
            self.write = starts.upper()
        self.expect = False

    def close(self) -> None:
        if len(self.levels) > 1:
            self.levels.pop()
        self.listing = min(self.listing, len(self.levels))

    def name(self, text: str, following: tuple[str, str]) -> None:
        word, depth, last = text.lower(), len(self.levels), self.last
        if depth == 1 and self.main is None and self.verb == "WITH" and word in _VERBS:
            self.main = word.upper()
            if word in _WRITES and self.write is None:
                self.write = self.main
        if word == "as" and last and following[1].lower() in ("(", "materialized", "not"):
            self.ctes.add(last)  # name AS (...): a common table expression
        if self.expect and word not in _SKIP_TO_TABLE:
            self.expect = False
            called = following[0] == "open" and last in ("from", "join", "using")
            if word not in _NOT_TABLE and not called:
                self.tables.append(_unquote(text))
                if last == "from":
                    self.listing = depth
        elif (word in _CLAUSES or word in _TABLE_BEFORE) and self.listing == depth:
            self.listing = 0
        if word in _TABLE_BEFORE and not (
            (word == "update" and last in _NOT_UPDATE) or (word == "from" and last == "distinct")
        ):
            self.expect = True
        self.last = word

    def result(self) -> tuple[str | None, str | None]:
        verb = (self.write or self.main) if self.verb == "WITH" else self.verb
        names = {t for t in self.tables if t not in self.ctes}
        return verb, (names.pop() if len(names) == 1 else None)


@functools.lru_cache(maxsize=1024)
def describe(sql: str) -> tuple[str | None, str | None]:
    """``(db.operation.name, db.collection.name)`` of one statement.

    The operation is the statement's verb, upper case. After a ``WITH`` it is the first
    write of the statement (a common table expression's or the main statement's
    ``INSERT``, ``UPDATE``, ``DELETE`` or ``MERGE``: ``WITH moved AS (UPDATE ...) SELECT
    ...`` is an ``UPDATE``), else the main statement's verb. The collection is the one
    table the statement reads or writes (after ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``,
    ``USING``, in the statement or its sub-queries; common table expressions left out),
    ``None`` when there are several or none.
    """
    tokens = _tokens(sql)
    if not tokens or tokens[0][0] != "name":
        return None, None
    scan = _Scan(tokens[0][1])
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else _NO_TOKEN
        if kind == "open":
            scan.open(following)
        elif kind == "close":
            scan.close()
        elif not scan.levels[-1]:
            continue  # a function's arguments, a column list, an IN list ...
        elif kind == "comma":
            scan.expect = scan.expect or scan.listing == len(scan.levels)
        elif kind == "name":
            scan.name(text, following)
        else:
            scan.expect = False
    return scan.result()
