"""EventRepository (the audit log) against a real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import field_is, make_project
from strategies import INJECTIONS, bad_event_fields, event_fields
from wis2l_core import NotFound, Subsystem, ValidationError
from wis2l_core.runtime import Wis2l


async def count_events(wis: Wis2l) -> int:
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM events")
        row = await cur.fetchone()
        assert row is not None
        return int(row["n"])


async def test_create_is_audit_only(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    event = await wis.events.create(
        type="template.viewed",
        subsystem="ignition",
        payload={"template": "godot-top-down", "n": [1, 2]},
        project_id=project_id,
    )
    assert (event.type, event.subsystem, event.project_id) == (
        "template.viewed",
        Subsystem.IGNITION,
        project_id,
    )
    assert dict(event.payload) == {"template": "godot-top-down", "n": [1, 2]}
    assert event.published_at is None
    assert event.id.version == 7
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute("SELECT subject FROM events WHERE id = %s", (event.id,))
        row = await cur.fetchone()
    assert row == {"subject": None}  # never picked up by the outbox relay
    assert (await wis.events.find_by_project_id(project_id)).items == (event,)
    assert await count_events(wis) == 1


async def test_without_project_or_payload(wis: Wis2l) -> None:
    event = await wis.events.create(type="user.signed_in", subsystem=Subsystem.IDENTITY)
    assert event.project_id is None
    assert dict(event.payload) == {}
    assert (await wis.events.find_by_subsystem("identity")).items == (event,)


async def test_missing_project_is_not_found(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match="project_id"):
        await wis.events.create(type="x", subsystem="spark", payload={}, project_id=uuid.uuid4())
    assert await count_events(wis) == 0


async def test_audit_outlives_its_project(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    event = await wis.events.create(
        type="project.archived", subsystem="ignition", project_id=project_id
    )
    async with wis.database.pool.connection() as conn:
        await conn.execute("DELETE FROM projects WHERE id = %s", (project_id,))
    (kept,) = (await wis.events.find_by_subsystem("ignition")).items
    assert kept.id == event.id
    assert kept.project_id is None


async def test_lists_include_domain_events_in_order(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    other = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="pico8")
    first = await wis.events.create(type="build.queued", subsystem="ignis", project_id=project_id)
    await wis.builds.update(build.id, status="building")
    await wis.events.create(type="note", subsystem="ignis", project_id=other)
    await wis.events.create(type="note", subsystem="slate", project_id=project_id)

    ignis = await wis.events.find_by_subsystem(Subsystem.IGNIS)
    assert [e.type for e in ignis] == ["build.queued", "build.started", "note"]
    assert ignis.items[0] == first
    mine = await wis.events.find_by_project_id(project_id, limit=2)
    assert [e.type for e in mine] == ["build.queued", "build.started"]
    assert mine.next_cursor is not None
    rest = await wis.events.find_by_project_id(project_id, limit=2, after=mine.next_cursor)
    assert [(e.type, e.subsystem) for e in rest] == [("note", Subsystem.SLATE)]
    assert rest.next_cursor is None
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.events.find_by_subsystem("ignis", after=mine.next_cursor)
    with pytest.raises(ValidationError, check=field_is("subsystem")):
        await wis.events.find_by_subsystem("nowhere")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": "t" * 201}, "type"),
        ({"type": "a\x00b"}, "type"),
        ({"subsystem": "marketing"}, "subsystem"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": {"x": b"bytes"}}, "payload"),
        ({"payload": {"x": "nul\x00"}}, "payload"),
        ({"project_id": "nope"}, "project_id"),
    ],
)
async def test_bad_input_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {"type": "ok", "subsystem": "spark", "payload": {}} | kwargs
    with pytest.raises(ValidationError) as info:
        await wis.events.create(**fields)
    assert info.value.field == field
    assert await count_events(wis) == 0


@given(data=st.data())
async def test_any_valid_event_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    project_id = await make_project(wis)
    fields = data.draw(event_fields(project_id))
    event = await wis.events.create(**fields)
    assert (event.type, event.subsystem, dict(event.payload), event.project_id) == (
        fields["type"],
        fields["subsystem"],
        fields.get("payload") or {},
        fields.get("project_id"),
    )
    page = await wis.events.find_by_subsystem(fields["subsystem"], limit=1000)
    assert page.items[-1] == event


@given(bad=bad_event_fields())
async def test_any_invalid_event_is_refused(wis: Wis2l, bad: tuple[dict[str, Any], str]) -> None:
    fields, field = bad
    before = await count_events(wis)
    with pytest.raises(ValidationError) as info:
        await wis.events.create(**fields)
    assert info.value.field == field
    assert await count_events(wis) == before


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_are_stored_verbatim(wis: Wis2l, evil: str) -> None:
    event = await wis.events.create(type=evil, subsystem="spark", payload={evil: [evil]})
    assert (await wis.events.find_by_subsystem("spark")).items == (event,)
    assert (event.type, dict(event.payload)) == (evil, {evil: [evil]})


async def test_find_by_id(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    audit = await wis.events.create(type="template.viewed", subsystem="ignition")
    component = await wis.components.create(
        project_id=project_id, name="C", language="lua", code=""
    )
    assert await wis.events.find_by_id(audit.id) == audit
    assert await wis.events.find_by_id(str(audit.id)) == audit
    assert await wis.events.find_by_id(uuid.uuid4()) is None
    [domain] = [
        e for e in await wis.events.find_by_project_id(project_id) if e.type != "template.viewed"
    ]
    found = await wis.events.find_by_id(domain.id)
    assert found == domain
    assert (found.type, found.subsystem, found.payload["component_id"]) == (
        "component.created",
        Subsystem.SPARK,
        str(component.id),
    )
    with pytest.raises(ValidationError) as info:
        await wis.events.find_by_id("not-a-uuid")
    assert info.value.field == "id"
