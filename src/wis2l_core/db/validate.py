"""The repositories' input checks, which live in :mod:`wis2l_core._validate`.

The checks moved to the bottom floor so the caches use them without importing ``db``;
this module keeps the names where the repositories import them from.
"""

from wis2l_core._validate import (
    MAX_JSON_BYTES,
    MAX_LIMIT,
    check_email,
    check_enum,
    check_int,
    check_json,
    check_json_object,
    check_limit,
    check_optional_text,
    check_optional_uuid,
    check_slug,
    check_text,
    check_text_list,
    check_uuid,
)

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
