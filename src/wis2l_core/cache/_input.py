"""What the caches accept from callers, checked before any key is built or any I/O (I/O-free).

Keys: a caller's value never reaches a Redis key as is. Ids (project and user ids) must
be UUIDs and are written in their canonical form, so ``"gen:<id>"`` or ``"*"`` cannot
name another entry. Free-form keys (:class:`~wis2l_core.cache.Cache`,
:class:`~wis2l_core.cache.BuildCache`, :class:`~wis2l_core.cache.RateLimiter`) are text
of 1 to 1024 characters; every character other than ASCII letters, digits and
``-._~:/@+=,!$&'()`` is percent-encoded (``%`` too, so the encoding is one-to-one). A
stored key therefore holds no glob character (``* ? [ ] \\``), whitespace or control
character, and the service prefix before it is fixed by the cache, so a key cannot reach
another service's entries.

Values: JSON, by the repositories' rules (:func:`wis2l_core._validate.check_json`):
finite numbers, string keys, no NUL characters, at most 255 levels deep and 16 MiB.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

import orjson

from wis2l_core import serde
from wis2l_core._validate import MAX_JSON_BYTES, check_json, check_uuid
from wis2l_core.errors import ValidationError

__all__ = ["MAX_KEY_CHARS", "encode_json", "key_text", "uuid_text"]

MAX_KEY_CHARS = 1024
"""The longest free-form key, in characters (before encoding)."""

_SAFE = "-._~:/@+=,!$&'()"  # with ASCII letters and digits, kept as they are


def key_text(field: str, value: object) -> str:
    """A caller's free-form key as it goes into a Redis key (percent-encoded).

    Raises:
        ValidationError: not a string, empty, longer than 1024 characters, or not valid
            Unicode (a lone surrogate).
    """
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, not {type(value).__name__}", field=field)
    if not 0 < len(value) <= MAX_KEY_CHARS:
        raise ValidationError(
            f"{field} must be 1 to {MAX_KEY_CHARS} characters, got {len(value)}", field=field
        )
    try:
        return quote(value, safe=_SAFE)
    except UnicodeEncodeError:
        raise ValidationError(
            f"{field} is not valid Unicode text (a lone surrogate)", field=field
        ) from None


def uuid_text(field: str, value: object) -> str:
    """An id as it goes into a Redis key: the canonical form of a UUID.

    Raises:
        ValidationError: ``value`` is neither a ``UUID`` nor a string that parses as one.
    """
    if type(value) is UUID:  # the common case, without a call
        return str(value)
    return str(check_uuid(field, value))


def encode_json(field: str, value: Any, *, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """``value`` (models, UUIDs, datetimes included) as JSON bytes, checked.

    Raises:
        ValidationError: not convertible to JSON (an unknown type, NaN, a non-string
            key), nested too deeply, holding a NUL character, or larger than
            ``max_bytes``.
    """
    try:
        data = serde.converter.unstructure(value)
    except RecursionError:
        raise ValidationError(f"{field} is nested too deeply for JSON", field=field) from None
    except Exception as exc:  # the caller's object, not our bug: say which field
        raise ValidationError(f"{field} is not JSON: {exc}", field=field) from exc
    payload = orjson.dumps(check_json(field, data))
    if len(payload) > max_bytes:
        raise ValidationError(f"{field} is larger than {max_bytes} bytes", field=field)
    return payload
