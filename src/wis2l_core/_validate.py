"""Input checks that run before any SQL or Redis call, so bad input costs no round trip and
writes nothing. The bottom floor: the repositories and the caches use it, it uses only
:mod:`wis2l_core.errors`.

Each check raises :class:`~wis2l_core.errors.ValidationError` naming the field.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

import orjson

from wis2l_core.errors import ValidationError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_LIMIT",
    "check_email",
    "check_enum",
    "check_int",
    "check_json",
    "check_json_object",
    "check_limit",
    "check_optional_text",
    "check_optional_uuid",
    "check_slug",
    "check_text",
    "check_text_list",
    "check_uuid",
]

E = TypeVar("E", bound=enum.Enum)

_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# Deliberately loose: one @, something on each side, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_LIMIT = 1000


def check_text(field: str, value: object, *, max_len: int, min_len: int = 1) -> str:
    """A ``str`` of ``min_len..max_len`` characters with no NUL byte."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, not {type(value).__name__}", field=field)
    if "\x00" in value:
        raise ValidationError(f"{field} must not contain NUL bytes", field=field)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValidationError(
                f"{field} is not valid Unicode text (a lone surrogate)", field=field
            ) from None
    if not min_len <= len(value) <= max_len:
        raise ValidationError(
            f"{field} must be {min_len} to {max_len} characters, got {len(value)}", field=field
        )
    return value


def check_optional_text(field: str, value: object, *, max_len: int) -> str | None:
    """Like :func:`check_text`, but ``None`` passes and empty text is allowed."""
    if value is None:
        return None
    return check_text(field, value, max_len=max_len, min_len=0)


def check_email(field: str, value: object) -> str:
    """A plausible e-mail address (one ``@``, a dotted domain, at most 320 characters)."""
    email = check_text(field, value, max_len=320, min_len=3)
    if not _EMAIL.fullmatch(email):  # match() let a trailing newline through ($)
        raise ValidationError(f"{field} is not an e-mail address: {email!r}", field=field)
    return email


def check_slug(field: str, value: object) -> str:
    """Lower-case letters and digits in dash-separated words, at most 64 characters."""
    slug = check_text(field, value, max_len=64)
    if not _SLUG.match(slug):
        raise ValidationError(
            f"{field} must match ^[a-z0-9]+(-[a-z0-9]+)*$, got {slug!r}", field=field
        )
    return slug


def check_enum(field: str, value: object, enum_cls: type[E]) -> E:
    """A member of ``enum_cls``, given as the member or its value."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except (ValueError, TypeError):
        choices = ", ".join(str(m.value) for m in enum_cls)
        raise ValidationError(
            f"{field} must be one of {choices}; got {value!r}", field=field
        ) from None


def check_uuid(field: str, value: object) -> UUID:
    """A :class:`~uuid.UUID`, or a string that parses as one."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"{field} must be a UUID, got {value!r}", field=field)


def check_optional_uuid(field: str, value: object) -> UUID | None:
    """Like :func:`check_uuid`, but ``None`` passes."""
    return None if value is None else check_uuid(field, value)


def check_int(field: str, value: object, *, low: int, high: int) -> int:
    """An ``int`` (not a ``bool``) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{field} must be an integer, got {value!r}", field=field)
    if not low <= value <= high:
        raise ValidationError(f"{field} must be between {low} and {high}, got {value}", field=field)
    return value


_REAL_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""A NUL in orjson's output: ``u0000`` after an odd run of backslashes (the escape's own
one after escaped backslashes ``\\\\``). After an even run it is the text ``\\u0000``, no
NUL. The cheap ``in`` test runs first, so text without those six bytes pays nothing more.
"""


def check_json(field: str, value: object) -> Any:
    """Any JSON value: finite numbers, string keys, no NUL characters, at most 16 MiB."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValidationError(f"{field} is not JSON: {exc}", field=field) from None
    if len(data) > MAX_JSON_BYTES:
        raise ValidationError(f"{field} is larger than 16 MiB", field=field)
    if b"\\u0000" in data and _REAL_NUL.search(data) is not None:
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    if b"null" in data and _has_non_finite(value):
        # orjson writes NaN and Infinity as null; JSON has no such numbers.
        raise ValidationError(f"{field} holds NaN or Infinity, which JSON cannot", field=field)
    return orjson.loads(data)


def _has_non_finite(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def check_json_object(field: str, value: object) -> dict[str, Any]:
    """A JSON object (a mapping with string keys)."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{field} must be a JSON object (a mapping)", field=field)
    result: dict[str, Any] = check_json(field, value)
    return result


def check_text_list(field: str, value: object, *, max_len: int, max_items: int) -> list[str]:
    """A list or tuple of short strings."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValidationError(f"{field} must be a list of strings", field=field)
    if len(value) > max_items:
        raise ValidationError(f"{field} holds more than {max_items} items", field=field)
    return [check_text(f"{field}[{i}]", v, max_len=max_len) for i, v in enumerate(value)]


def check_limit(value: object) -> int:
    """A page size in ``1..1000``."""
    return check_int("limit", value, low=1, high=MAX_LIMIT)
