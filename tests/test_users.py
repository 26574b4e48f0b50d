"""UserRepository against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from wis2l_core import Conflict, NotFound, Role, User, ValidationError
from wis2l_core.runtime import Wis2l


async def test_create_and_find(wis: Wis2l) -> None:
    user = await wis.users.create(email="Ada@Example.com", name="Ada", subject="nocturna|42")
    assert user.role is Role.DEVELOPER
    assert user.id.version == 7
    assert await wis.users.find_by_id(user.id) == user
    assert await wis.users.find_by_email("ada@example.COM") == user
    assert await wis.users.find_by_subject("nocturna|42") == user
    assert await wis.users.find_by_id(uuid.uuid4()) is None


async def test_email_unique_case_insensitive(wis: Wis2l) -> None:
    await wis.users.create(email="ada@example.com", name="Ada", subject="s1")
    with pytest.raises(Conflict) as info:
        await wis.users.create(email="ADA@example.com", name="Ada 2", subject="s2")
    assert info.value.field == "email"
    assert isinstance(info.value.__cause__, Exception)


async def test_update_and_delete(wis: Wis2l) -> None:
    user = await wis.users.create(email="a@b.io", name="A", subject="s")
    updated = await wis.users.update(user.id, role="admin", name="Ann")
    assert (updated.role, updated.name, updated.email) == (Role.ADMIN, "Ann", "a@b.io")
    assert updated.updated_at > user.updated_at
    assert await wis.users.delete(user.id) is True
    assert await wis.users.delete(user.id) is False
    with pytest.raises(NotFound, match="no user with id"):
        await wis.users.update(user.id, name="gone")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"name": "nul\x00byte"}, "name"),
        ({"name": ""}, "name"),
        ({"role": "owner"}, "role"),
        ({"subject": "x" * 256}, "subject"),
    ],
)
async def test_bad_input_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, str], field: str
) -> None:
    fields = {"email": "ok@example.com", "name": "Ok", "subject": "sub"} | kwargs
    with pytest.raises(ValidationError) as info:
        await wis.users.create(**fields)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await wis.users.find_by_email("ok@example.com") is None


async def test_injection_strings_are_stored_verbatim(wis: Wis2l) -> None:
    evil = "Robert'); DROP TABLE users;--"
    user = await wis.users.create(email="bobby@tables.io", name=evil, subject="' OR 1=1 --")
    assert (await wis.users.find_by_id(user.id)).name == evil  # type: ignore[union-attr]
    assert await wis.users.find_by_subject("' OR 1=1 --") == user


async def test_development_logs_query_names_and_durations_never_values(
    wis: Wis2l, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-subject-value"
    with caplog.at_level(logging.DEBUG, logger="wis2l_core.db"):
        user = await wis.users.create(email="log@example.com", name="Log", subject=secret)
        await wis.users.find_by_id(user.id)
        async with wis.transaction() as tx:
            await tx.tokens.sync(
                (await wis.projects.create(owner_id=user.id, name="P", slug="p", engine="web")).id,
                [{"name": "c", "category": "color", "value": "#fff"}],
            )
    messages = [r.getMessage() for r in caplog.records if r.name == "wis2l_core.db"]
    for name in ("users.create took", "users.find_by_id took", "design_tokens.sync took"):
        assert any(m.startswith(name) and m.endswith(" ms") for m in messages), (name, messages)
    assert secret not in caplog.text
    assert "log@example.com" not in caplog.text


async def test_find_all_pages_and_filters_by_role(wis: Wis2l) -> None:
    roles = [Role.VIEWER, Role.ADMIN, Role.DEVELOPER, Role.ADMIN, Role.VIEWER]
    made = [
        await wis.users.create(email=f"u{i}@example.com", name=f"U{i}", subject=f"s{i}", role=r)
        for i, r in enumerate(roles)
    ]
    seen: list[User] = []
    page = await wis.users.find_all(limit=2)
    seen.extend(page)
    while page.next_cursor is not None:
        page = await wis.users.find_all(limit=2, after=page.next_cursor)
        seen.extend(page)
    assert seen == made  # creation order, each once
    admins = await wis.users.find_all(Role.ADMIN)
    assert list(admins) == [made[1], made[3]]
    assert admins.next_cursor is None
    viewers = await wis.users.find_all(role="viewer", limit=1)
    assert list(viewers) == [made[0]]
    assert viewers.next_cursor is not None
    rest = await wis.users.find_all(role="viewer", after=viewers.next_cursor)
    assert list(rest) == [made[4]]
    with pytest.raises(ValidationError) as info:  # a cursor of the role list on the full list
        await wis.users.find_all(after=viewers.next_cursor)
    assert info.value.field == "after"
    with pytest.raises(ValidationError) as info:
        await wis.users.find_all(role="owner")
    assert info.value.field == "role"
    with pytest.raises(ValidationError) as info:
        await wis.users.find_all(limit=0)
    assert info.value.field == "limit"


async def test_update_that_changes_nothing_keeps_updated_at(wis: Wis2l) -> None:
    user = await wis.users.create(email="a@b.io", name="A", subject="s", role="viewer")
    assert user.created_at == user.updated_at
    assert await wis.users.update(user.id) == user
    same = await wis.users.update(user.id, email="a@b.io", name="A", subject="s", role="viewer")
    assert same == user
    assert await wis.users.find_by_id(user.id) == user
    changed = await wis.users.update(user.id, name="A", role="admin")
    assert changed.role is Role.ADMIN
    assert changed.updated_at > user.updated_at
    with pytest.raises(NotFound, match="no user with id"):
        await wis.users.update(uuid.uuid4())


async def test_updated_at_never_predates_created_at(wis: Wis2l) -> None:
    # A transaction that began before the row was created, then updates it: updated_at
    # must still be later than created_at (now() would give the transaction's start).
    async with wis.transaction() as tx:
        assert await tx.users.find_by_id(uuid.uuid4()) is None  # the transaction has begun
        await asyncio.sleep(0.01)
        user = await wis.users.create(email="late@b.io", name="Late", subject="late")
        updated = await tx.users.update(user.id, name="Later")
    assert updated.updated_at > user.created_at
    assert await wis.users.find_by_id(user.id) == updated
