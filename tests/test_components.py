"""ComponentRepository against a real PostgreSQL: versioning and the events each write records."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import field_is

from strategies import (
    INJECTIONS,
    bad_component_fields,
    component_changes,
    component_fields,
)
from wis2l_core import Component, Language, NotFound, ValidationError
from wis2l_core.runtime import Wis2l


async def sql(wis: Wis2l, query: str, *params: Any) -> list[dict[str, Any]]:
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def count(wis: Wis2l, table: str) -> int:
    return int((await sql(wis, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def events(wis: Wis2l) -> list[dict[str, Any]]:
    return await sql(
        wis, "SELECT id, type, subsystem, subject, project_id, payload FROM events ORDER BY seq"
    )


async def project(wis: Wis2l) -> uuid.UUID:
    tag = uuid.uuid4().hex[:12]
    user = await wis.users.create(email=f"{tag}@example.com", name="O", subject=tag)
    made = await wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag}", engine="godot")
    return made.id


def check_event(row: dict[str, Any], type_: str, component: Component, **fields: Any) -> None:
    assert row["type"] == row["subject"] == type_
    assert row["subsystem"] == "spark"
    assert row["project_id"] == component.project_id
    payload = row["payload"]
    assert payload["type"] == type_
    assert payload["id"] == str(row["id"])
    assert payload["project_id"] == str(component.project_id)
    assert payload["component_id"] == str(component.id)
    assert payload["name"] == component.name
    assert isinstance(payload["occurred_at"], str)
    for key, value in fields.items():
        assert payload[key] == value, key


async def test_create_find_and_event(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(
        project_id=pid,
        name="Player",
        language=Language.GDSCRIPT,
        code="extends CharacterBody2D",
        prompt="a platformer player",
        model="spark-1",
        experts=["movement", "physics"],
        metadata={"tokens": 812, "temperature": 0.2},
    )
    assert component.id.version == 7
    assert component.version == 1
    assert component.experts == ("movement", "physics")
    assert await wis.components.find_by_id(component.id) == component
    assert await wis.components.find_by_id(uuid.uuid4()) is None
    [row] = await events(wis)
    check_event(row, "component.created", component, language="gdscript", version=1)

    bare = await wis.components.create(project_id=pid, name="Empty", language="lua", code="")
    assert (bare.prompt, bare.model, bare.experts, bare.metadata) == (None, None, (), {})
    assert len(await events(wis)) == 2


async def test_create_for_missing_project_writes_nothing(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
        await wis.components.create(project_id=uuid.uuid4(), name="X", language="lua", code="")
    assert await count(wis, "components") == 0
    assert await count(wis, "events") == 0


async def test_update_bumps_version_and_records_event(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(project_id=pid, name="A", language="lua", code="x")
    v2 = await wis.components.update(component.id, code="y = 1", model="spark-2")
    assert (v2.version, v2.code, v2.model, v2.name) == (2, "y = 1", "spark-2", "A")
    assert v2.updated_at > component.updated_at
    v3 = await wis.components.update(
        component.id, language="python", experts=("e",), metadata={"m": None}, prompt=None
    )
    assert (v3.version, v3.language, v3.experts, v3.prompt) == (3, Language.PYTHON, ("e",), None)
    assert v3.metadata == {"m": None}
    assert await wis.components.find_by_id(component.id) == v3
    rows = await events(wis)
    assert [r["type"] for r in rows] == [
        "component.created",
        "component.updated",
        "component.updated",
    ]
    check_event(rows[1], "component.updated", v2, version=2, language="lua")
    check_event(rows[2], "component.updated", v3, version=3, language="python")

    # No fields: nothing changes, no version, no event.
    same = await wis.components.update(component.id)
    assert same == v3
    assert len(await events(wis)) == 3

    no_fields: dict[str, Any] = {}
    for kwargs in ({"code": "z"}, no_fields):
        with pytest.raises(NotFound, match="no component with id"):
            await wis.components.update(uuid.uuid4(), **kwargs)
    assert len(await events(wis)) == 3


async def test_update_to_the_stored_values_changes_nothing(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(
        project_id=pid, name="A", language="lua", code="x", experts=["e"], metadata={"k": 1}
    )
    same = await wis.components.update(
        component.id,
        name="A",
        language=Language.LUA,
        code="x",
        prompt=None,
        experts=("e",),
        metadata={"k": 1.0},  # equal as JSON
    )
    assert same == component  # same version, same updated_at
    assert await wis.components.find_by_id(component.id) == component
    assert len(await events(wis)) == 1  # only component.created
    changed = await wis.components.update(component.id, name="A", code="y")
    assert (changed.version, changed.code) == (2, "y")
    assert changed.updated_at > component.updated_at
    assert [r["type"] for r in await events(wis)][-1] == "component.updated"


async def test_concurrent_equal_updates_make_one_version(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(project_id=pid, name="A", language="lua", code="")
    results = await asyncio.gather(
        *(wis.components.update(component.id, code="same") for _ in range(10))
    )
    # The first writer makes version 2; the others find that value stored: no change.
    assert {(c.version, c.code) for c in results} == {(2, "same")}
    assert len({c.updated_at for c in results}) == 1
    rows = await events(wis)
    assert [r["type"] for r in rows].count("component.updated") == 1


async def test_concurrent_updates_get_distinct_versions(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(project_id=pid, name="A", language="lua", code="")
    results = await asyncio.gather(
        *(wis.components.update(component.id, code=f"v{i}") for i in range(20))
    )
    assert sorted(c.version for c in results) == list(range(2, 22))
    final = await wis.components.find_by_id(component.id)
    assert final is not None
    assert final.version == 21
    rows = await events(wis)
    assert sorted(r["payload"]["version"] for r in rows if r["type"] == "component.updated") == (
        list(range(2, 22))
    )


async def test_delete_records_event_only_when_deleted(wis: Wis2l) -> None:
    pid = await project(wis)
    component = await wis.components.create(project_id=pid, name="A", language="cpp", code="")
    assert await wis.components.delete(component.id) is True
    assert await wis.components.find_by_id(component.id) is None
    assert await wis.components.delete(component.id) is False
    assert await wis.components.delete(uuid.uuid4()) is False
    rows = await events(wis)
    assert [r["type"] for r in rows] == ["component.created", "component.deleted"]
    check_event(rows[1], "component.deleted", component)
    assert set(rows[1]["payload"]) == {"type", "id", "project_id", "occurred_at"} | {
        "component_id",
        "name",
    }


async def test_rolled_back_transaction_leaves_nothing(wis: Wis2l) -> None:
    pid = await project(wis)
    kept = await wis.components.create(project_id=pid, name="Kept", language="lua", code="")
    made: list[Component] = []

    async def work() -> None:
        async with wis.transaction() as tx:
            made.append(
                await tx.components.create(project_id=pid, name="B", language="lua", code="")
            )
            await tx.components.update(kept.id, code="changed")
            assert await tx.components.find_by_id(made[0].id) == made[0]  # visible inside
            assert await wis.components.find_by_id(made[0].id) is None  # not outside
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await work()
    assert await wis.components.find_by_id(made[0].id) is None
    assert await wis.components.find_by_id(kept.id) == kept
    assert await count(wis, "components") == 1
    assert [r["type"] for r in await events(wis)] == ["component.created"]


async def test_committed_transaction_keeps_writes_and_events(wis: Wis2l) -> None:
    pid = await project(wis)
    async with wis.transaction() as tx:
        a = await tx.components.create(project_id=pid, name="A", language="lua", code="")
        b = await tx.components.update(a.id, name="A2")
        await tx.components.delete(
            (await tx.components.create(project_id=pid, name="C", language="lua", code="")).id
        )
    assert await wis.components.find_by_id(a.id) == b
    assert [r["type"] for r in await events(wis)] == [
        "component.created",
        "component.updated",
        "component.created",
        "component.deleted",
    ]


async def test_failed_write_inside_transaction_rolls_back_all(wis: Wis2l) -> None:
    pid = await project(wis)

    async def work() -> None:
        async with wis.transaction() as tx:
            await tx.components.create(project_id=pid, name="A", language="lua", code="")
            await tx.components.create(project_id=uuid.uuid4(), name="B", language="lua", code="")

    with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
        await work()
    assert await count(wis, "components") == 0
    assert await count(wis, "events") == 0


async def test_lists_page_through_every_row_once(wis: Wis2l) -> None:
    first, second = await project(wis), await project(wis)
    made = [
        await wis.components.create(
            project_id=(first, second)[i % 3 == 0], name=f"C{i}", language="rust", code=str(i)
        )
        for i in range(13)
    ]

    async def walk(first_page: Any, more: Any) -> list[Component]:
        seen: list[Component] = []
        page = await first_page
        while True:
            seen.extend(page)
            if page.next_cursor is None:
                return seen
            page = await more(page.next_cursor)

    everything = await walk(
        wis.components.find_all(limit=4),
        lambda c: wis.components.find_all(limit=4, after=c),
    )
    assert everything == made
    mine = await walk(
        wis.components.find_by_project_id(first, limit=2),
        lambda c: wis.components.find_by_project_id(first, limit=2, after=c),
    )
    assert mine == [c for c in made if c.project_id == first]
    page = await wis.components.find_all(limit=1)
    assert page.next_cursor is not None
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.components.find_by_project_id(first, after=page.next_cursor)
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.components.find_all(after=page.next_cursor[::-1])
    assert list(await wis.components.find_by_project_id(uuid.uuid4())) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n\x00"}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"language": "cobol"}, "language"),
        ({"code": None}, "code"),
        ({"code": "nul\x00"}, "code"),
        ({"code": "c" * 1_000_001}, "code"),
        ({"model": "m" * 201}, "model"),
        ({"prompt": "p\x00"}, "prompt"),
        ({"experts": "solo"}, "experts"),
        ({"experts": ["ok", ""]}, "experts[1]"),
        ({"metadata": {"set": {1, 2}}}, "metadata"),
        ({"metadata": [1]}, "metadata"),
        ({"project_id": 7}, "project_id"),
    ],
)
async def test_bad_input_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    pid = await project(wis)
    fields: dict[str, Any] = {"project_id": pid, "name": "Ok", "language": "lua", "code": ""}
    fields |= kwargs
    with pytest.raises(ValidationError) as info:
        await wis.components.create(**fields)
    assert info.value.field == field
    component = await wis.components.create(project_id=pid, name="A", language="lua", code="")
    update = {k: v for k, v in kwargs.items() if k != "project_id"}
    if update:
        with pytest.raises(ValidationError) as info:
            await wis.components.update(component.id, **update)
        assert info.value.field == field
    assert await wis.components.find_by_id(component.id) == component
    assert await count(wis, "components") == 1
    assert await count(wis, "events") == 1


async def test_injection_strings_are_stored_verbatim(wis: Wis2l) -> None:
    pid = await project(wis)
    for evil in INJECTIONS:
        component = await wis.components.create(
            project_id=pid,
            name=evil,
            language="other",
            code=evil,
            prompt=evil,
            model=evil,
            experts=[evil],
            metadata={evil: evil},
        )
        again = await wis.components.find_by_id(component.id)
        assert again == component
        assert (component.name, component.code, component.experts) == (evil, evil, (evil,))
    rows = await events(wis)
    assert [r["payload"]["name"] for r in rows] == list(INJECTIONS)


@given(data=st.data())
async def test_any_valid_component_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    pid = await project(wis)
    kwargs = data.draw(component_fields(pid))
    component = await wis.components.create(**kwargs)
    expected: dict[str, Any] = {
        "prompt": None,
        "model": None,
        "experts": (),
        "metadata": {},
    } | kwargs
    for key, value in expected.items():
        want = tuple(value) if key == "experts" else value
        assert getattr(component, key) == want, key
    assert await wis.components.find_by_id(component.id) == component
    changes = data.draw(component_changes())
    updated = await wis.components.update(component.id, **changes)
    wanted: dict[str, Any] = {}
    for key, value in changes.items():
        want = {} if key == "metadata" and value is None else value
        wanted[key] = tuple(want) if key == "experts" else want
        assert getattr(updated, key) == wanted[key], key
    # Only a real change makes a new version (values equal to the stored ones do not).
    changed = any(getattr(component, key) != want for key, want in wanted.items())
    assert updated.version == (2 if changed else 1)
    assert (updated.updated_at == component.updated_at) is not changed
    assert await wis.components.find_by_id(component.id) == updated


@given(data=st.data())
async def test_any_invalid_component_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    pid = await project(wis)
    before = (await count(wis, "components"), await count(wis, "events"))
    kwargs, field = data.draw(bad_component_fields(pid))
    with pytest.raises(ValidationError) as info:
        await wis.components.create(**kwargs)
    assert info.value.field is not None
    assert info.value.field.split("[")[0] == field
    assert (await count(wis, "components"), await count(wis, "events")) == before
