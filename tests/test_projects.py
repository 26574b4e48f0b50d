"""ProjectRepository against a real PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import field_is

from strategies import INJECTIONS, bad_project_fields, project_changes, project_fields
from wis2l_core import Conflict, Engine, NotFound, Project, ValidationError
from wis2l_core.runtime import Wis2l

_serial = itertools.count()


def unique(slug: str) -> str:
    """``slug`` made unique within the test session (still a valid slug)."""
    return f"{slug[:50]}-{next(_serial)}"


async def sql(wis: Wis2l, query: str, *params: Any) -> list[dict[str, Any]]:
    """Run raw SQL on the test database (for checks the API does not offer)."""
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def count(wis: Wis2l, table: str) -> int:
    rows = await sql(wis, f"SELECT count(*) AS n FROM {table}")
    return int(rows[0]["n"])


async def owner(wis: Wis2l, tag: str = "") -> uuid.UUID:
    tag = tag or uuid.uuid4().hex[:10]
    user = await wis.users.create(email=f"{tag}@example.com", name=tag, subject=f"sub|{tag}")
    return user.id


async def test_create_and_find(wis: Wis2l) -> None:
    uid = await owner(wis)
    project = await wis.projects.create(owner_id=uid, name="Pong", slug="pong", engine="pico8")
    assert project.id.version == 7
    assert project.engine is Engine.PICO8
    assert (project.template_id, project.description, project.metadata) == (None, None, {})
    assert project.created_at == project.updated_at
    assert await wis.projects.find_by_id(project.id) == project
    assert await wis.projects.find_by_id(str(project.id)) == project
    assert await wis.projects.find_by_slug("pong") == project
    assert await wis.projects.find_by_slug("pang") is None
    assert await wis.projects.find_by_slug("Not A Slug") is None
    assert await wis.projects.find_by_id(uuid.uuid4()) is None


async def test_create_with_template_description_and_metadata(wis: Wis2l) -> None:
    uid = await owner(wis)
    template = await wis.templates.create(slug="godot-2d", name="2D", engine=Engine.GODOT)
    meta = {"genre": "puzzle", "players": [1, 2], "nested": {"ok": True, "pi": 3.25}}
    project = await wis.projects.create(
        owner_id=uid,
        name="Blocks",
        slug="blocks",
        engine=Engine.GODOT,
        template_id=template.id,
        description="",
        metadata=meta,
    )
    assert (project.template_id, project.description, project.metadata) == (template.id, "", meta)
    assert await wis.projects.find_by_id(project.id) == project


async def test_slug_is_unique(wis: Wis2l) -> None:
    uid, other = await owner(wis), await owner(wis)
    await wis.projects.create(owner_id=uid, name="A", slug="taken", engine="web")
    with pytest.raises(Conflict) as info:
        await wis.projects.create(owner_id=other, name="B", slug="taken", engine="unity")
    assert info.value.field == "slug"
    assert info.value.__cause__ is not None
    second = await wis.projects.create(owner_id=other, name="B", slug="free", engine="unity")
    with pytest.raises(Conflict) as info:
        await wis.projects.update(second.id, slug="taken")
    assert info.value.field == "slug"
    assert (await wis.projects.find_by_id(second.id)) == second
    assert await count(wis, "projects") == 2


async def test_missing_parents_are_not_found(wis: Wis2l) -> None:
    uid = await owner(wis)
    with pytest.raises(NotFound, match=r"^owner_id: the referenced row"):
        await wis.projects.create(owner_id=uuid.uuid4(), name="A", slug="a", engine="web")
    with pytest.raises(NotFound, match=r"^template_id: the referenced row"):
        await wis.projects.create(
            owner_id=uid, name="A", slug="a", engine="web", template_id=uuid.uuid4()
        )
    project = await wis.projects.create(owner_id=uid, name="A", slug="a", engine="web")
    with pytest.raises(NotFound, match=r"^template_id: the referenced row"):
        await wis.projects.update(project.id, template_id=uuid.uuid4())
    assert await count(wis, "projects") == 1


async def test_update(wis: Wis2l) -> None:
    uid = await owner(wis)
    template = await wis.templates.create(slug="t", name="T", engine="bevy")
    project = await wis.projects.create(
        owner_id=uid, name="A", slug="a", engine="web", description="d", metadata={"k": 1}
    )
    changed = await wis.projects.update(
        project.id, name="B", engine=Engine.BEVY, template_id=template.id, metadata={"k": [2]}
    )
    assert (changed.name, changed.slug, changed.engine) == ("B", "a", Engine.BEVY)
    assert (changed.template_id, changed.description, changed.metadata) == (
        template.id,
        "d",
        {"k": [2]},
    )
    assert changed.updated_at > project.updated_at
    assert changed.created_at == project.created_at
    cleared = await wis.projects.update(
        project.id, template_id=None, description=None, metadata=None, slug="a-2"
    )
    assert (cleared.template_id, cleared.description, cleared.metadata, cleared.slug) == (
        None,
        None,
        {},
        "a-2",
    )
    assert await wis.projects.find_by_slug("a") is None
    assert await wis.projects.find_by_id(project.id) == cleared
    with pytest.raises(NotFound, match="no project with id"):
        await wis.projects.update(uuid.uuid4(), name="x")


async def test_update_validates_before_sql(wis: Wis2l) -> None:
    uid = await owner(wis)
    project = await wis.projects.create(owner_id=uid, name="A", slug="a", engine="web")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"slug": "Bad Slug"}, "slug"),
        ({"name": ""}, "name"),
        ({"engine": "cryengine"}, "engine"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"template_id": "nope"}, "template_id"),
        ({"description": "x" * 10_001}, "description"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValidationError) as info:
            await wis.projects.update(project.id, **kwargs)
        assert info.value.field == field
    with pytest.raises(ValidationError, check=field_is("id")):
        await wis.projects.update("not-a-uuid", name="x")
    assert await wis.projects.find_by_id(project.id) == project


async def test_delete_cascades_and_keeps_events(wis: Wis2l) -> None:
    uid = await owner(wis)
    project = await wis.projects.create(owner_id=uid, name="A", slug="a", engine="web")
    keep = await wis.projects.create(owner_id=uid, name="B", slug="b", engine="web")
    component = await wis.components.create(
        project_id=project.id, name="Player", language="gdscript", code="extends Node"
    )
    await wis.components.create(project_id=keep.id, name="Kept", language="lua", code="")
    await wis.tokens.upsert(project_id=project.id, name="primary", category="color", value="#f00")
    await sql(wis, "INSERT INTO builds (project_id, target) VALUES (%s, 'webgl')", project.id)
    await sql(
        wis,
        "INSERT INTO deployments (project_id, environment, version) VALUES (%s, 'staging', '1')",
        project.id,
    )
    events_before = await count(wis, "events")
    assert events_before == 3  # two ComponentCreated, one TokenUpdated

    assert await wis.projects.delete(project.id) is True
    assert await wis.projects.delete(project.id) is False
    assert await wis.projects.find_by_id(project.id) is None
    assert await wis.components.find_by_id(component.id) is None
    for table in ("components", "design_tokens", "builds", "deployments"):
        left = await sql(
            wis, f"SELECT count(*) AS n FROM {table} WHERE project_id = %s", project.id
        )
        assert left[0]["n"] == 0, table
    assert await count(wis, "components") == 1  # the other project's
    events = await sql(wis, "SELECT project_id, payload FROM events ORDER BY seq")
    assert len(events) == events_before
    orphaned = [e for e in events if e["project_id"] is None]
    assert len(orphaned) == 2
    assert {e["payload"]["project_id"] for e in orphaned} == {str(project.id)}
    # Deleting the owner cascades to the remaining project.
    assert await wis.users.delete(uid) is True
    assert await count(wis, "projects") == 0


async def test_find_all_filters_and_pages(wis: Wis2l) -> None:
    ada, bob = await owner(wis, "ada"), await owner(wis, "bob")
    made: list[Project] = []
    for i in range(11):
        made.append(
            await wis.projects.create(
                owner_id=ada if i % 2 else bob,
                name=f"P{i}",
                slug=f"p{i}",
                engine="godot" if i % 3 else "unity",
            )
        )

    async def walk(**filters: Any) -> list[Project]:
        seen: list[Project] = []
        cursor = None
        while True:
            page = await wis.projects.find_all(**filters, limit=3, after=cursor)
            assert len(page) <= 3
            seen.extend(page)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    assert await walk() == made
    assert await walk(owner_id=ada) == [p for p in made if p.owner_id == ada]
    assert await walk(engine=Engine.UNITY) == [p for p in made if p.engine is Engine.UNITY]
    both = await walk(owner_id=str(bob), engine="godot")
    assert both == [p for p in made if p.owner_id == bob and p.engine is Engine.GODOT]
    assert both  # the filter combination is not vacuous
    full = await wis.projects.find_all(limit=11)
    assert full.items == tuple(made)
    assert full.next_cursor is None
    assert list(await wis.projects.find_all(owner_id=uuid.uuid4())) == []


async def test_bad_list_arguments(wis: Wis2l) -> None:
    uid = await owner(wis)
    for i in range(3):
        await wis.projects.create(owner_id=uid, name="P", slug=f"p{i}", engine="web")
    page = await wis.projects.find_all(limit=1)
    assert page.next_cursor is not None
    cursor = page.next_cursor
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for after in (tampered, "garbage!", cursor + "x", "", 42):
        with pytest.raises(ValidationError) as info:
            await wis.projects.find_all(limit=1, after=after)  # type: ignore[arg-type]
        assert info.value.field == "after"
    # A cursor from another list is refused too.
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.projects.find_all(owner_id=uid, limit=1, after=cursor)
    for limit in (0, -1, 1001):
        with pytest.raises(ValidationError) as info:
            await wis.projects.find_all(limit=limit)
        assert info.value.field == "limit"
    with pytest.raises(ValidationError) as info:
        await wis.projects.find_all(engine="amiga")
    assert info.value.field == "engine"
    with pytest.raises(ValidationError) as info:
        await wis.projects.find_all(owner_id="me")
    assert info.value.field == "owner_id"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "nul\x00byte"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"slug": "Upper"}, "slug"),
        ({"slug": "a" * 65}, "slug"),
        ({"slug": "trailing-"}, "slug"),
        ({"engine": "cryengine"}, "engine"),
        ({"metadata": {"k": object()}}, "metadata"),
        ({"metadata": {1: "int key"}}, "metadata"),
        ({"metadata": {"nul": "a\x00b"}}, "metadata"),
        ({"metadata": "not an object"}, "metadata"),
        ({"description": "x" * 10_001}, "description"),
        ({"owner_id": "not-a-uuid"}, "owner_id"),
    ],
)
async def test_bad_input_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    uid = await owner(wis)
    fields: dict[str, Any] = {"owner_id": uid, "name": "Ok", "slug": "ok", "engine": "web"}
    fields |= kwargs
    with pytest.raises(ValidationError) as info:
        await wis.projects.create(**fields)
    assert info.value.field == field
    assert await count(wis, "projects") == 0


async def test_injection_strings_are_stored_verbatim(wis: Wis2l) -> None:
    uid = await owner(wis)
    for i, evil in enumerate(INJECTIONS):
        project = await wis.projects.create(
            owner_id=uid,
            name=evil,
            slug=f"evil-{i}",
            engine="web",
            description=evil,
            metadata={evil: evil},
        )
        again = await wis.projects.find_by_id(project.id)
        assert again is not None
        assert (again.name, again.description, again.metadata) == (evil, evil, {evil: evil})
    assert await count(wis, "projects") == i + 1


@given(data=st.data())
async def test_any_valid_project_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    uid = await owner(wis)
    kwargs = data.draw(project_fields(uid))
    kwargs["slug"] = unique(kwargs["slug"])
    project = await wis.projects.create(**kwargs)
    expected: dict[str, Any] = {"template_id": None, "description": None, "metadata": {}} | kwargs
    for key, value in expected.items():
        assert getattr(project, key) == value, key
    assert await wis.projects.find_by_id(project.id) == project
    assert await wis.projects.find_by_slug(project.slug) == project
    changes = data.draw(project_changes())
    updated = await wis.projects.update(project.id, **changes)
    for key, value in changes.items():
        assert getattr(updated, key) == ({} if key == "metadata" and value is None else value)
    assert await wis.projects.find_by_id(project.id) == updated


@given(data=st.data())
async def test_any_invalid_project_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    uid = await owner(wis)
    before = await count(wis, "projects")
    kwargs, field = data.draw(bad_project_fields(uid))
    if field != "slug":
        kwargs["slug"] = unique(kwargs["slug"])
    with pytest.raises(ValidationError) as info:
        await wis.projects.create(**kwargs)
    assert info.value.field == field
    assert await count(wis, "projects") == before


async def test_update_that_changes_nothing_keeps_updated_at(wis: Wis2l) -> None:
    uid = await owner(wis)
    template = await wis.templates.create(slug=unique("t"), name="T", engine="web")
    project = await wis.projects.create(
        owner_id=uid,
        name="A",
        slug=unique("same"),
        engine="web",
        template_id=template.id,
        metadata={"k": [1, 2]},
    )
    assert project.created_at == project.updated_at
    assert await wis.projects.update(project.id) == project
    same = await wis.projects.update(
        project.id,
        name="A",
        slug=project.slug,
        engine=Engine.WEB,
        template_id=str(template.id),
        description=None,
        metadata={"k": [1, 2]},
    )
    assert same == project
    assert await wis.projects.find_by_id(project.id) == project
    assert await count(wis, "events") == 0
    moved = await wis.projects.update(project.id, description="now")
    assert moved.updated_at > project.updated_at
    with pytest.raises(NotFound, match="no project with id"):
        await wis.projects.update(uuid.uuid4())
