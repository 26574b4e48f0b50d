"""Rows to records: one builder per attrs class, made once at import from its fields.

``row_builder(User)`` is the function a repository's ``_row`` was written by hand for::

    def _user(row):
        return User(id=row["id"], email=row["email"], ..., role=Role(row["role"]), ...)

Each field takes the column of its own name (or the one ``columns`` gives), through its
enum class when its type is an enum, ``tuple`` when it is a tuple (a ``text[]`` arrives as
a list), or the converter ``convert`` gives. The function is generated source, compiled
once, so a call costs what the hand-written one did (attrs makes ``__init__`` the same way).
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
from psycopg.rows import DictRow

__all__ = ["row_builder"]

T = TypeVar("T", bound=attrs.AttrsInstance)


def row_builder(
    cls: type[T],
    *,
    columns: Mapping[str, str] | None = None,
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
    fields: tuple[str, ...] | None = None,
) -> Callable[[DictRow], T]:
    """A function making a ``cls`` of a row (a ``dict_row``).

    Args:
        cls: an attrs class.
        columns: field -> column, for a field whose column has another name.
        convert: field -> converter, instead of the one its type implies.
        fields: the fields to fill (default: every field with no default); the others
            keep their defaults.

    Returns:
        ``row -> cls``; a missing column raises ``KeyError`` as ``row[...]`` does.
    """
    columns = columns or {}
    convert = convert or {}
    hints = typing.get_type_hints(cls)
    if fields is None:
        fields = tuple(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING)
    namespace: dict[str, Any] = {"cls": cls}
    args = []
    for name in fields:
        value = f"row[{columns.get(name, name)!r}]"
        converter = convert.get(name) or _converter(hints[name])
        if converter is not None:
            namespace[f"c_{name}"] = converter
            value = f"c_{name}({value})"
        args.append(f"{name}={value}")
    source = f"def build(row):\n    return cls({', '.join(args)})\n"
    exec(compile(source, f"<row_builder {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    build: Callable[[DictRow], T] = namespace["build"]
    return build


def _converter(hint: Any) -> Callable[[Any], Any] | None:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if typing.get_origin(hint) is tuple:
        return tuple
    return None
