"""The package's own cattrs converter and JSON codec (orjson).

One converter for models, events and cache values: UUIDs and datetimes travel as
strings, enums as their values, tuples as lists. The global cattrs converter is never
touched, so an app's own cattrs set-up is unaffected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import orjson
from cattrs.preconf.orjson import OrjsonConverter, make_converter

__all__ = ["converter", "dumps", "loads", "structure"]

T = TypeVar("T")


def _make() -> OrjsonConverter:
    conv = make_converter()
    conv.register_unstructure_hook(UUID, str)
    conv.register_structure_hook(UUID, lambda v, _: v if isinstance(v, UUID) else UUID(str(v)))
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())
    conv.register_structure_hook(datetime, _structure_datetime)
    return conv


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


converter: OrjsonConverter = _make()
"""The wis2l-core converter. Use it to turn models and events into plain data and back."""


def structure(data: Any, cls: type[T]) -> T:
    """Build ``cls`` from plain data (the inverse of ``converter.unstructure``)."""
    return converter.structure(data, cls)


def dumps(obj: Any) -> bytes:
    """Serialize ``obj`` (models and events included) to JSON bytes."""
    return orjson.dumps(converter.unstructure(obj))


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes or text into plain data."""
    return orjson.loads(data)
