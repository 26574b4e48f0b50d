"""Helpers for notebooks and scripts that explore the data: every page, flat records.

::

    builds = await all_pages(wis.builds.find_all, status="completed")
    frame = pandas.DataFrame(to_records(builds))

Nothing here needs pandas; ``to_records`` gives plain dicts that any table library takes.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from uuid import UUID

import attrs

from wis2l_core.errors import ValidationError
from wis2l_core.models import Page

__all__ = ["all_pages", "to_record", "to_records"]

T = TypeVar("T")

MAX_PAGES = 100_000


async def all_pages(
    list_call: Callable[..., Awaitable[Page[T]]],
    *args: Any,
    limit: int = 500,
    **kwargs: Any,
) -> list[T]:
    """Call a list method page after page and return every item, in the list's order.

    Args:
        list_call: a repository list method, e.g. ``wis.builds.find_all`` or
            ``wis.tokens.find_all`` (anything taking ``limit=`` and ``after=`` and
            returning a :class:`~wis2l_core.models.Page`).
        args: positional arguments for ``list_call`` (e.g. a project id).
        limit: rows per page (the method's own maximum applies).
        kwargs: keyword filters for ``list_call`` (e.g. ``status="pending"``).

    Returns:
        The items of all pages.

    Raises:
        ValidationError: ``after`` given (this function pages itself), or a bad argument
            of ``list_call``.
        ServiceUnavailable: the database cannot be reached.
    """
    if "after" in kwargs:
        raise ValidationError("all_pages starts at the first page itself", field="after")
    items: list[T] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        page = await list_call(*args, limit=limit, after=after, **kwargs)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        after = page.next_cursor
    raise ValidationError(f"more than {MAX_PAGES} pages: narrow the query", field="limit")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    return value


def _flatten(prefix: str, value: Any, out: dict[str, Any], depth: int) -> None:
    if isinstance(value, Mapping) and value and depth > 0:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out, depth - 1)
    elif isinstance(value, Mapping):
        out[prefix] = dict(value)
    else:
        out[prefix] = _plain(value)


def to_record(model: Any, *, flatten: int = 1) -> dict[str, Any]:
    """One model (or event) as a flat ``dict``: a row for a DataFrame.

    Enum members become their values (``"completed"``), UUIDs become strings, datetimes
    stay datetimes. JSON mappings (``metadata``, ``artifacts``, ``payload`` ...) are spread
    into dotted columns (``payload.progress``) down to ``flatten`` levels; deeper (or with
    ``flatten=0``) they stay dicts.

    Args:
        model: an attrs instance (any model of :mod:`wis2l_core.models`, any event).
        flatten: how many levels of nested mappings to spread into columns.

    Returns:
        Column name -> value, in the model's field order.

    Raises:
        ValidationError: ``model`` is not an attrs instance, or ``flatten`` is negative.
    """
    if not attrs.has(type(model)):
        raise ValidationError(f"not a model: {type(model).__name__}", field="model")
    if flatten < 0:
        raise ValidationError("flatten must be >= 0", field="flatten")
    out: dict[str, Any] = {}
    for field in attrs.fields(type(model)):
        value = getattr(model, field.name)
        if isinstance(value, Mapping):
            _flatten(field.name, value, out, flatten)
        else:
            out[field.name] = _plain(value)
    return out


def to_records(models: Iterable[Any], *, flatten: int = 1) -> list[dict[str, Any]]:
    """Models as flat dicts (see :func:`to_record`): ``pandas.DataFrame(to_records(page))``.

    Args:
        models: models or events (a list, or a :class:`~wis2l_core.models.Page`).
        flatten: how many levels of nested mappings to spread into columns.

    Returns:
        One dict per model, in order.

    Raises:
        ValidationError: an item is not an attrs instance.
    """
    return [to_record(model, flatten=flatten) for model in models]
