"""SLATE design tokens of a project (``sql/queries/design_tokens.sql``).

A token is unique per project by ``name``. :meth:`TokenRepository.upsert` creates or
replaces one; its ``version`` goes up, and ``TokenUpdated`` is recorded, only when the
token is new or its ``value`` changed (a category or group change alone is stored
quietly). :meth:`TokenRepository.sync` upserts a whole set in one statement and records
one ``TokensSynced``. Both are safe under concurrency: the "did the value change" test
runs on the locked, latest row (see the SQL file for how).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

import attrs
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from wis2l_core._validate import check_enum, check_json, check_text, check_uuid
from wis2l_core.catalogue import TokenDeleted, TokensSynced, TokenUpdated
from wis2l_core.db.repository import Repository
from wis2l_core.db.rows import row_builder
from wis2l_core.errors import Conflict, ValidationError
from wis2l_core.ids import uuid7
from wis2l_core.models import DesignToken, Page, TokenCategory

__all__ = ["MAX_SYNC", "TokenInput", "TokenRepository"]

MAX_NAME = 200
MAX_SYNC = 10_000
"""The most tokens one :meth:`TokenRepository.sync` call takes."""
# A row another transaction inserted after our statement began is invisible to it; the
# statement is then run again for that row. Each retry sees a newer snapshot.
_ATTEMPTS = 3
_MISSING = object()


@attrs.frozen(kw_only=True)
class TokenInput:
    """One token for :meth:`TokenRepository.sync` (a mapping with these keys works too)."""

    name: str
    category: TokenCategory | str
    value: Any
    group: str | None = None


_token = row_builder(DesignToken, columns={"group": "group_name"})


_updated_event = row_builder(TokenUpdated, columns={"token_id": "id"})
_deleted = row_builder(TokenDeleted, columns={"token_id": "id"})


def _token_updated(row: DictRow) -> TokenUpdated | None:
    # not "changed": the stored value was the same, nothing written
    return _updated_event(row) if row["changed"] else None


def _fields(
    prefix: str, name: object, category: object, value: object, group: object
) -> dict[str, Any]:
    """The checked columns of one token (``prefix`` names the argument in errors)."""
    if group is not None:
        group = check_text(f"{prefix}group", group, max_len=MAX_NAME)
    return {
        "name": check_text(f"{prefix}name", name, max_len=MAX_NAME),
        "category": check_enum(f"{prefix}category", category, TokenCategory).value,
        "group": group,
        "value": check_json(f"{prefix}value", value),
    }


def _sync_item(index: int, item: object) -> dict[str, Any]:
    prefix = f"tokens[{index}]."
    get: Any
    if isinstance(item, Mapping):
        get = item.get
    else:

        def get(key: str, default: object) -> object:
            return getattr(item, key, default)

    found = {key: get(key, _MISSING) for key in ("name", "category", "value")}
    for key, value in found.items():
        if value is _MISSING:
            raise ValidationError(f"{prefix}{key} is missing", field=f"{prefix}{key}")
    return _fields(prefix, **found, group=get("group", None))


def _stored(row: DictRow) -> dict[str, DesignToken]:
    """The tokens of a ``sync`` result row (per-column arrays), by name."""
    columns = zip(
        row["ids"],
        row["names"],
        row["categories"],
        row["groups"],
        row["values"],
        row["versions"],
        row["created"],
        row["updated"],
        strict=True,
    )
    return {
        name: DesignToken(
            id=id_,
            project_id=row["project_id"],
            name=name,
            category=TokenCategory(category),
            group=group,
            value=value,
            version=version,
            created_at=created,
            updated_at=updated,
        )
        for id_, name, category, group, value, version, created, updated in columns
    }


class TokenRepository(Repository[DesignToken]):
    """A project's design tokens: listed, found by category, upserted one by one or synced."""

    table = "design_tokens"
    _row = staticmethod(_token)

    async def find_all(
        self, project_id: UUID | str, *, limit: int = 50, after: str | None = None
    ) -> Page[DesignToken]:
        """The project's tokens in creation order (``limit`` up to 1000).

        Raises:
            ValidationError: a bad project id, limit or cursor.
        """
        project_id = check_uuid("project_id", project_id)
        return await self._page("find_all", limit=limit, after=after, project_id=project_id)

    async def find_by_category(
        self,
        project_id: UUID | str,
        category: TokenCategory | str,
        *,
        limit: int = 50,
        after: str | None = None,
    ) -> Page[DesignToken]:
        """The project's tokens of one category, in creation order.

        Raises:
            ValidationError: a bad project id, category, limit or cursor.
        """
        return await self._page(
            "find_by_category",
            limit=limit,
            after=after,
            project_id=check_uuid("project_id", project_id),
            category=check_enum("category", category, TokenCategory).value,
        )

    async def upsert(
        self,
        *,
        project_id: UUID | str,
        name: str,
        category: TokenCategory | str,
        value: Any,
        group: str | None = None,
    ) -> DesignToken:
        """Create the token ``name`` of the project, or replace its category, group and value.

        ``version`` goes up by one, and ``TokenUpdated`` is recorded, only when the token
        is new (version 1) or its value changed (compared as JSON: key order and ``1`` vs
        ``1.0`` do not count). An unchanged value writes nothing unless category or group
        changed.

        Args:
            project_id: the project.
            name: 1..200 characters, unique in the project.
            category: the token's kind.
            value: any JSON value (e.g. ``"#ff8800"``, ``{"size": 16, "unit": "px"}``).
            group: an optional group name (1..200 characters).

        Returns:
            The token as stored after the call.

        Raises:
            ValidationError: a field is malformed (``field`` names it).
            NotFound: no project has ``project_id``.
            Conflict: other transactions kept writing this token name while the call
                retried (``field == "name"``); nothing was written, try again.
        """
        params: dict[str, Any] = {"project_id": check_uuid("project_id", project_id)}
        params |= _fields("", name, category, value, group)
        params["value"] = Jsonb(params["value"])
        for _ in range(_ATTEMPTS):
            row = await self._write("upsert", params | {"id": uuid7()}, _token_updated)
            if row is not None:
                return _token(row)
        raise Conflict(
            f"design token {params['name']!r} kept changing under concurrent writes; try again",
            field="name",
        )

    async def sync(
        self, project_id: UUID | str, tokens: Iterable[Mapping[str, Any] | object]
    ) -> list[DesignToken]:
        """Upsert many tokens in one statement (one transaction) and record one ``TokensSynced``.

        Each token follows :meth:`upsert`'s rules. Tokens of the project not named here
        are left alone. ``TokensSynced`` is recorded on every call, also when nothing
        changed (``changed == 0``): it is the audit record that the sync happened.

        Args:
            project_id: the project.
            tokens: mappings with ``name``, ``category``, ``value`` and optionally
                ``group``, or objects with those attributes (:class:`TokenInput`,
                :class:`~wis2l_core.models.DesignToken`); at most 10,000, names distinct.

        Returns:
            The stored tokens, in the order given.

        Raises:
            ValidationError: ``tokens`` is not an iterable of tokens, a malformed token
                (``field`` is e.g. ``"tokens[3].value"``), a name given twice, or more
                than 10,000 tokens.
            NotFound: no project has ``project_id``.
            Conflict: other transactions kept writing these tokens while the call
                retried (``field == "tokens"``); nothing was written, try again.
        """
        pid = check_uuid("project_id", project_id)
        if isinstance(tokens, str | bytes | Mapping) or not isinstance(tokens, Iterable):
            raise ValidationError(
                "tokens must be a list (or other iterable) of tokens", field="tokens"
            )
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, item in enumerate(tokens):
            if index >= MAX_SYNC:
                raise ValidationError(f"sync takes at most {MAX_SYNC} tokens", field="tokens")
            fields = _sync_item(index, item)
            if fields["name"] in seen:
                raise ValidationError(
                    f"token {fields['name']!r} is given twice", field=f"tokens[{index}].name"
                )
            seen.add(fields["name"])
            items.append(fields | {"id": str(uuid7())})

        # A token another transaction inserted after this statement began (with the same
        # value) comes back from neither branch of the upsert; a second statement in the
        # same transaction sees it. Its changes count in the one TokensSynced.
        async with self._unit() as conn:
            row = await self._exec(conn, "sync", {"project_id": pid, "tokens": Jsonb(items)})
            assert row is not None
            stored, changed = _stored(row), row["changed"]
            for _ in range(_ATTEMPTS):
                missing = [t for t in items if t["name"] not in stored]
                if not missing:
                    await self._record(
                        conn, TokensSynced(project_id=pid, count=len(items), changed=changed)
                    )
                    return [stored[t["name"]] for t in items]
                again = await self._exec(
                    conn, "sync", {"project_id": pid, "tokens": Jsonb(missing)}
                )
                assert again is not None
                stored |= _stored(again)
                changed += again["changed"]
        raise Conflict(
            "design tokens kept changing under concurrent writes during sync; try again",
            field="tokens",
        )

    async def delete(self, project_id: UUID | str, name: str) -> bool:
        """Delete the project's token ``name``.

        Tokens are addressed by name, as :meth:`upsert` and :meth:`sync` write them (a
        token you hold is ``delete(token.project_id, token.name)``). Records
        ``TokenDeleted`` in the same transaction, so the token cache is invalidated like
        after an upsert.

        Args:
            project_id: the project.
            name: the token's name.

        Returns:
            ``False`` if the project has no token of that name.

        Raises:
            ValidationError: a malformed project id or name.
        """
        params = {
            "project_id": check_uuid("project_id", project_id),
            "name": check_text("name", name, max_len=MAX_NAME),
        }
        return await self._write("delete", params, _deleted) is not None
