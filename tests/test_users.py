"""UserRepository against a real PostgreSQL."""

from __future__ import annotations

import logging
import uuid

import pytest

from wis2l_core import Conflict, NotFound, Role, ValidationError
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
    with pytest.raises(NotFound):
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
