"""Opaque keyset-pagination cursors.

A cursor names the last row of a page (its UUIDv7 key) and the list it came from, with a
short keyed digest, so a cursor that was edited or taken from another list is refused
with a ``ValidationError`` instead of silently paging somewhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from wis2l_core.errors import ValidationError
from wis2l_core.models import Page

__all__ = ["decode_cursor", "encode_cursor", "keyset_page"]

T = TypeVar("T")

_KEY = b"wis2l-core cursor v1"
_DIGEST = 6


def _sign(scope: str, raw: bytes) -> bytes:
    return hmac.new(_KEY, scope.encode() + b"\x00" + raw, hashlib.blake2s).digest()[:_DIGEST]


def encode_cursor(scope: str, key: UUID) -> str:
    """The cursor that resumes list ``scope`` after the row ``key``."""
    raw = key.bytes
    return base64.urlsafe_b64encode(raw + _sign(scope, raw)).decode().rstrip("=")


def decode_cursor(scope: str, cursor: object) -> UUID | None:
    """The row key inside ``cursor`` (``None`` passes through: the first page).

    Raises:
        ValidationError: the cursor is malformed, edited, or belongs to another list.
    """
    if cursor is None:
        return None
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise ValidationError("after is not a cursor from this list", field="after")
    try:
        blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError("after is not a cursor from this list", field="after") from None
    raw, digest = blob[:16], blob[16:]
    if len(raw) != 16 or not hmac.compare_digest(digest, _sign(scope, raw)):
        raise ValidationError("after is not a cursor from this list", field="after")
    return UUID(bytes=raw)


def keyset_page(
    scope: str,
    rows: Sequence[Mapping[str, Any]],
    limit: int,
    build: Callable[[Any], T],
) -> Page[T]:
    """The page of ``rows``, fetched with one row more than ``limit`` to learn whether a
    next page exists; its cursor names the last row's ``id``.

    Raises:
        ValidationError: a next page exists but the rows have no UUID ``id``.
    """
    cursor = None
    if len(rows) > limit:
        key = rows[limit - 1].get("id")
        if not isinstance(key, UUID):
            raise ValidationError("keyset pages need a uuid column 'id'", field="query")
        cursor = encode_cursor(scope, key)
    return Page(items=tuple(build(r) for r in rows[:limit]), next_cursor=cursor)
