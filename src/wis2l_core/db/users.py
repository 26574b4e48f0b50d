"""Users: nocturnaID.org identities mapped to platform users (``sql/queries/users.sql``)."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow

from wis2l_core._validate import check_email, check_enum, check_text, check_uuid
from wis2l_core.catalogue import DomainEvent, UserCreated, UserRoleChanged, UserSignedIn
from wis2l_core.db.errors import map_errors
from wis2l_core.db.repository import DeleteById, FindAll, Repository, event_params, set_field
from wis2l_core.db.rows import row_builder
from wis2l_core.db.sql import query_file
from wis2l_core.errors import ValidationError
from wis2l_core.ids import uuid7
from wis2l_core.models import Page, Role, User
from wis2l_core.sentinel import UNSET, Unset

__all__ = ["NO_EMAIL_DOMAIN", "UserRepository"]

NO_EMAIL_DOMAIN = "no-email.invalid"
"""The domain of the placeholder e-mail (``<user id hex>@no-email.invalid``) a user gets
when its first sign-in carries no usable address; ``.invalid`` is reserved (RFC 2606), so
nothing is ever sent there, and the next token with a usable address replaces it."""


_user = row_builder(User)


_USER = {"user_id": "id", "sub": "subject"}  # an identity event's columns of a users row
_created = row_builder(UserCreated, columns=_USER)
_signed_in = row_builder(UserSignedIn, columns=_USER)
_role_changed_event = row_builder(UserRoleChanged, columns=_USER | {"previous_role": "old_role"})


def _role_changed(row: DictRow) -> DomainEvent | None:
    old = row["old_role"]
    if old is None or old == row["role"]:
        return None
    return _role_changed_event(row)


def _sign_in_events(row: DictRow, signed_in: bool) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    if row["created"]:
        events.append(_created(row))
    elif (changed := _role_changed(row)) is not None:
        events.append(changed)
    if signed_in:
        events.append(_signed_in(row))
    return events


class UserRepository(Repository[User], FindAll, DeleteById):
    """Users, found by id, e-mail (case-insensitive) or JWT subject.

    ``delete(id)`` deletes the user and, by cascade, their projects (and everything under
    them).
    """

    table = "users"
    _row = staticmethod(_user)

    async def find_by_email(self, email: str) -> User | None:
        """Find a user by e-mail address, compared case-insensitively.

        Args:
            email: the address.

        Returns:
            The user, or ``None``.

        Raises:
            ValidationError: ``email`` is not text of 1..320 characters.
        """
        return await self._find("find_by_email", email=check_text("email", email, max_len=320))

    async def find_by_subject(self, subject: str) -> User | None:
        """Find the user whose nocturnaID JWT ``sub`` is ``subject``.

        Args:
            subject: the JWT ``sub`` claim.

        Returns:
            The user, or ``None``.

        Raises:
            ValidationError: ``subject`` is not text of 1..255 characters.
        """
        return await self._find(
            "find_by_subject", subject=check_text("subject", subject, max_len=255)
        )

    async def find_all(
        self, role: Role | str | None = None, *, limit: int = 50, after: str | None = None
    ) -> Page[User]:
        """Users in creation order, optionally only those with one role.

        Args:
            role: only users with this role.
            limit: page size, 1..1000.
            after: the ``next_cursor`` of the previous page (of the same list).

        Returns:
            One page of users; ``next_cursor`` is ``None`` on the last one.

        Raises:
            ValidationError: a bad role, limit or cursor.
        """
        return await self._find_all_by(
            "find_all_by_role", "role", role, Role, limit=limit, after=after
        )

    async def create(
        self, *, email: str, name: str, subject: str, role: Role | str = Role.DEVELOPER
    ) -> User:
        """Create a user (an import or a seed: no event; a first sign-in through
        :meth:`sign_in` records ``user.created``).

        Raises:
            ValidationError: a field is malformed (``field`` names it).
            Conflict: the e-mail (any case) or subject is taken.
        """
        params = {
            "id": uuid7(),
            "email": check_email("email", email),
            "name": check_text("name", name, max_len=200),
            "subject": check_text("subject", subject, max_len=255),
            "role": check_enum("role", role, Role).value,
        }
        return await self._write_model("create", params)

    async def update(
        self,
        id: UUID | str,
        *,
        email: str | Unset = UNSET,
        name: str | Unset = UNSET,
        subject: str | Unset = UNSET,
        role: Role | str | Unset = UNSET,
    ) -> User:
        """Change the given fields; the others keep their values.

        A call that changes nothing (no fields, or every value equal to the stored one)
        keeps ``updated_at``.

        Args:
            id: the user.
            email: the new e-mail address (unique, compared case-insensitively).
            name: 1..200 characters.
            subject: the nocturnaID JWT ``sub`` (unique).
            role: the new role.

        Returns:
            The user as stored after the call.

        Raises:
            NotFound: no user has this id.
            ValidationError: a field is malformed.
            Conflict: the new e-mail or subject is taken.
        """
        params: dict[str, Any] = {"id": check_uuid("id", id)}
        set_field(params, "email", email, lambda v: check_email("email", v))
        set_field(params, "name", name, lambda v: check_text("name", v, max_len=200))
        set_field(params, "subject", subject, lambda v: check_text("subject", v, max_len=255))
        set_field(params, "role", role, lambda v: check_enum("role", v, Role).value)
        row = await self._write_found("update", params, _role_changed, noun="user")
        return _user(row)

    async def sign_in(
        self,
        subject: str,
        *,
        email: str | None,
        name: str | None,
        role: Role | str | None = None,
        create: bool = True,
        record_sign_in: bool = True,
    ) -> tuple[User, bool] | None:
        """Find the user of a verified token's ``sub``, creating it if need be, and keep
        its e-mail, name (and role, when given) in step with the token: one statement
        (``INSERT ... ON CONFLICT (subject) DO UPDATE``), so two first sign-ins at once
        make one user. Its events go to the outbox in the same transaction:
        ``user.created`` when it was made, ``user.role_changed`` when ``role`` changed
        it, and ``user.signed_in`` when ``record_sign_in``.

        Args:
            subject: the token's ``sub``.
            email: the ``email`` claim (``None`` keeps the stored one; a new user then gets
                the placeholder ``<id hex>@`` :data:`NO_EMAIL_DOMAIN`).
            name: the ``name`` claim (``None`` keeps the stored one; a new user needs it).
            role: the role the token grants (``None`` keeps the stored one; new users get
                ``developer``).
            create: ``False`` finds existing users only (the "refuse" policy).
            record_sign_in: record a ``user.signed_in`` event.

        Returns:
            ``(user, created)``, or ``None`` when ``create`` is false and no user has
            this subject.

        Raises:
            ValidationError: a claim is malformed, or a new user lacks a name.
            Conflict: the e-mail belongs to another user.
        """
        new_id = uuid7()
        params: dict[str, Any] = {
            "id": new_id,
            "subject": check_text("subject", subject, max_len=255),
            "email": None if email is None else check_email("email", email),
            "name": None if name is None else check_text("name", name, max_len=200),
            "role": None if role is None else check_enum("role", role, Role).value,
        }
        params["new_email"] = params["email"] or f"{new_id.hex}@{NO_EMAIL_DOMAIN}"
        if create and name is None:
            # the insert's row needs a name (PostgreSQL checks it before ON CONFLICT), so
            # without one only an existing user can sign in
            if await self.find_by_subject(subject) is None:
                raise ValidationError(
                    f"cannot create the user of {subject!r}: the token has no name", field="name"
                )
            create = False
        name_ = "sign_in" if create else "sign_in_existing"
        query = self._q(name_)
        record = query_file("events")["insert_outbox"]
        start = time.perf_counter()
        async with self._db.connection(self._conn) as conn:
            with map_errors(), self._transaction_span():
                async with conn.pipeline(), self._transaction(conn):
                    cur = await conn.execute(query.text, params, prepare=True)
                    row = await cur.fetchone()
                    if row is None:
                        result = None
                    else:
                        events = _sign_in_events(row, record_sign_in)
                        for event in events:
                            await conn.execute(record.text, event_params(event), prepare=True)
                        result = (_user(row), bool(row["created"]))
        self._db.log_query(query, start)
        return result
