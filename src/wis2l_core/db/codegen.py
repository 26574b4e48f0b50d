"""The I/O-free half of ``wis2l db generate``: what PostgreSQL said about each query
(:class:`Described`) becomes the text of a Python module (:func:`render`).

The text is what ruff format would write: a bracket that does not fit on its line is
split one item a line with a trailing comma (which ruff keeps at any longer limit), so a
module passes ``ruff format --check`` at the line length it was written for and above.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from wis2l_core.db.sql import Query

__all__ = [
    "LINE_LENGTH",
    "MARKER",
    "RESERVED",
    "Column",
    "Described",
    "Param",
    "camel",
    "is_generated",
    "render",
]

MARKER = "written by ``wis2l db generate``"
"""In the docstring of every generated module: how ``--check`` tells them apart."""

LINE_LENGTH = 88
"""ruff's default line length, which the generated code is formatted for by default."""

RESERVED = frozenset({"db", "typed", "values", "datetime", "decimal", "uuid", "StrEnum"})
"""Names a generated module or function body uses: a parameter or query of one of these
names would shadow them."""


@attrs.frozen
class Param:
    """A parameter of a query: its name, Python type and whether ``None`` is allowed."""

    name: str
    type: str
    optional: bool


@attrs.frozen
class Column:
    """A result column: attribute name, Python type, nullability, an enum converter."""

    name: str
    type: str
    optional: bool
    enum: str | None = None


@attrs.frozen
class Described:
    """One query as PostgreSQL described it."""

    query: Query
    where: str
    shape: str
    params: tuple[Param, ...]
    columns: tuple[Column, ...]


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


def _bracket(head: str, items: Sequence[str], tail: str, indent: int, width: int) -> list[str]:
    """``head(items)tail`` on one line when it fits, else one item a line (trailing comma,
    which ruff format keeps)."""
    pad = " " * indent
    line = f"{pad}{head}{', '.join(items)}{tail}"
    if len(line) <= width and "\n" not in line:
        return [line]
    inner = " " * (indent + 4)
    return [f"{pad}{head}", *(f"{inner}{item}," for item in items), f"{pad}{tail.lstrip()}"]


def _doc(text: str, indent: int) -> list[str]:
    pad = " " * indent
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines()
    if len(lines) == 1:
        return [f'{pad}"""{lines[0]}"""']
    body = [f"{pad}{line}".rstrip() for line in lines[1:]]
    return [f'{pad}"""{lines[0]}', *body, f'{pad}"""']


def _comment(query: Query) -> list[str]:
    """The comment lines between ``-- name:`` and the SQL, without ``--``."""
    found = []
    for line in query.text.splitlines():
        if not line.strip().startswith("--"):
            break
        found.append(line.strip()[2:].strip())
    return found


def _annotation(kind: str, optional: bool) -> str:
    return f"{kind} | None" if optional else kind


def _value(param: Param) -> str:
    return f"typed.jsonb({param.name})" if param.type == "typed.JSON" else param.name


def _row_class(d: Described) -> str:
    return camel(d.query.name) + "Row"


def _render_query(d: Described, width: int) -> list[str]:
    q = d.query
    const = "_" + q.name.upper()
    out: list[str] = []
    if d.columns:
        row = _row_class(d)
        out += ["", "", "@typed.frozen", f"class {row}:"]
        out += _doc(f"A row of :func:`{q.name}`.", 4)
        out.append("")
        for col in d.columns:
            annotation = _annotation(col.type, col.optional)
            if col.enum is None:
                out.append(f"    {col.name}: {annotation}")
            else:
                converter = f"typed.optional({col.enum})" if col.optional else col.enum
                out.append(f"    {col.name}: {annotation} = typed.field(converter={converter})")
    text = q.text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    out += ["", "", f"{const} = typed.Query(", f'    name="{q.name}",', f'    text="""{text}""",']
    out += [f'    file="{q.file}",', f"    line={q.line},", f'    shape="{d.shape}",', ")"]
    args = ["db: typed.QueryMethods", "/"]
    if d.params or d.shape == "page":
        args.append("*")
    args += [f"{p.name}: {_annotation(p.type, p.optional)}" for p in d.params]
    if d.shape == "page":
        args += ["limit: int = 50", "after: str | None = None"]
    returns = {
        "one": f"{_row_class(d)} | None",
        "many": f"list[{_row_class(d)}]",
        "exec": "int",
        "page": f"typed.Page[{_row_class(d)}]",
    }[d.shape]
    out += ["", ""]
    out += _bracket(f"async def {q.name}(", args, f") -> {returns}:", 0, width)
    comment = _comment(q)
    where = f"``{Path(d.where).name}:{q.line}``"
    if comment:
        out += _doc("\n".join([comment[0], *comment[1:], "", f"From {where}."]), 4)
    else:
        out += _doc(f"Run ``{q.name}`` of {where}.", 4)
    pairs = [f'"{p.name}": {_value(p)}' for p in d.params]
    values = "{" + ", ".join(pairs) + "}"
    if d.shape == "exec":
        head, call = "return await db.execute(", [const, "values"]
    elif d.shape == "page":
        head = "return await typed.page("
        call = ["db", const, "values", _row_class(d), "limit=limit", "after=after"]
    else:
        head, call = f"return await typed.{d.shape}(", ["db", const, "values", _row_class(d)]
    inline = _bracket(head, [values if c == "values" else c for c in call], ")", 4, width)
    if len(inline) == 1:
        return out + inline
    return out + _bracket("values = {", pairs, "}", 4, width) + _bracket(head, call, ")", 4, width)


def render(
    path: Path,
    described: Sequence[Described],
    enums: dict[str, tuple[str, list[str]]],
    *,
    line_length: int = LINE_LENGTH,
) -> str:
    """The module for the ``.sql`` file at ``path``: enums, row classes and functions.

    Signatures and calls are split the way ruff format splits them at ``line_length``
    (with a trailing comma, which keeps them split at any longer limit); a module whose
    SQL or comments hold a longer line starts with ``# ruff: noqa: E501``.
    """
    body: list[str] = []
    for name, (pg_name, labels) in enums.items():
        body += ["", "", f"class {name}(StrEnum):"]
        body += _doc(f"The PostgreSQL enum ``{pg_name}``.", 4)
        body.append("")
        for label in labels:
            member = re.sub(r"\W+", "_", label).strip("_").upper() or "EMPTY"
            if not member.isidentifier():
                member = f"V_{member}"
            body.append(f'    {member} = "{label}"')
    for d in described:
        body += _render_query(d, line_length)
    code = "\n".join(body)
    imports = [
        f"import {module}"
        for module in ("datetime", "decimal", "uuid")
        if re.search(rf"\b{module}\.", code)
    ]
    if enums:
        imports.append("from enum import StrEnum")
    option = "" if line_length == LINE_LENGTH else f" --line-length {line_length}"
    head = [
        f'"""Typed queries of ``{path.name}``.',
        "",
        f"This module is {MARKER}: do not edit it. After changing",
        f"the ``.sql`` file or a migration, run ``wis2l db generate{option}``.",
        '"""',
        "",
    ]
    if imports:
        head += [*imports, ""]
    head.append("from wis2l_core.db import typed")
    if body[2].startswith("_"):  # a constant right after the imports: one blank line
        body = body[1:]
    lines = [*head, *body, ""]
    if any(len(line) > line_length for line in "\n".join(lines).splitlines()):
        lines.insert(0, "# ruff: noqa: E501")
    return "\n".join(lines)


def is_generated(text: str) -> bool:
    """Whether ``text`` is a module this generator wrote (its header, with :data:`MARKER`)."""
    return bool(re.match(r'(# ruff: noqa: E501\n)?"""Typed queries of ``', text)) and (
        MARKER in text[:500]
    )
