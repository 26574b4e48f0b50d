"""TemplateRepository against a real PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import field_is

from strategies import INJECTIONS, bad_template_fields, template_fields
from wis2l_core import Conflict, Engine, NotFound, Template, ValidationError
from wis2l_core.runtime import Wis2l

_serial = itertools.count()


async def count(wis: Wis2l) -> int:
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM templates")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_create_and_find(wis: Wis2l) -> None:
    files = {"project.godot": "[application]", "scenes": {"main.tscn": ""}, "size": 3}
    template = await wis.templates.create(
        slug="godot-starter", name="Godot starter", engine="godot", files=files
    )
    assert template.id.version == 7
    assert (template.engine, template.description, template.files) == (Engine.GODOT, None, files)
    assert await wis.templates.find_by_id(template.id) == template
    assert await wis.templates.find_by_slug("godot-starter") == template
    assert await wis.templates.find_by_slug("nope") is None
    assert await wis.templates.find_by_id(uuid.uuid4()) is None
    empty = await wis.templates.create(slug="empty", name="Empty", engine=Engine.WEB)
    assert empty.files == {}


async def test_slug_is_unique(wis: Wis2l) -> None:
    await wis.templates.create(slug="dup", name="A", engine="web")
    with pytest.raises(Conflict) as info:
        await wis.templates.create(slug="dup", name="B", engine="unity")
    assert info.value.field == "slug"
    assert await count(wis) == 1


async def test_find_all_filters_and_pages(wis: Wis2l) -> None:
    made = [
        await wis.templates.create(slug=f"t{i}", name=f"T{i}", engine=("love2d", "defold")[i % 2])
        for i in range(7)
    ]
    seen: list[Template] = []
    cursor = None
    while True:
        page = await wis.templates.find_all(limit=2, after=cursor)
        seen.extend(page)
        if (cursor := page.next_cursor) is None:
            break
    assert seen == made
    defold = await wis.templates.find_all(engine=Engine.DEFOLD, limit=100)
    assert list(defold) == [t for t in made if t.engine is Engine.DEFOLD]
    assert defold.next_cursor is None
    first = await wis.templates.find_all("love2d", limit=1)
    assert first.next_cursor is not None
    # a cursor of the engine list on the full list
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.templates.find_all(after=first.next_cursor)
    with pytest.raises(ValidationError) as info:
        await wis.templates.find_all(engine="amiga")
    assert info.value.field == "engine"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slug": "Bad"}, "slug"),
        ({"slug": ""}, "slug"),
        ({"name": "a\x00"}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"engine": "Unity"}, "engine"),
        ({"files": ["main.lua"]}, "files"),
        ({"files": {"a": b"bytes"}}, "files"),
        ({"description": "d" * 10_001}, "description"),
    ],
)
async def test_bad_input_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    fields = {"slug": "ok", "name": "Ok", "engine": "web"} | kwargs
    with pytest.raises(ValidationError) as info:
        await wis.templates.create(**fields)
    assert info.value.field == field
    assert await count(wis) == 0


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_numbers_are_not_json(wis: Wis2l, number: float) -> None:
    with pytest.raises(ValidationError) as info:
        await wis.templates.create(slug="nan", name="N", engine="web", files={"n": number})
    assert info.value.field == "files"


async def test_lone_surrogates_are_refused(wis: Wis2l) -> None:
    with pytest.raises(ValidationError) as info:
        await wis.templates.create(slug="s", name="bad \ud800", engine="web")
    assert info.value.field == "name"


async def test_injection_strings_are_stored_verbatim(wis: Wis2l) -> None:
    for i, evil in enumerate(INJECTIONS):
        template = await wis.templates.create(
            slug=f"evil-{i}", name=evil, engine="web", description=evil, files={evil: [evil]}
        )
        assert await wis.templates.find_by_id(template.id) == template
        assert (template.name, template.description, template.files) == (evil, evil, {evil: [evil]})


@given(data=st.data())
async def test_any_valid_template_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    kwargs = data.draw(template_fields())
    kwargs["slug"] = f"{kwargs['slug'][:50]}-{next(_serial)}"
    template = await wis.templates.create(**kwargs)
    expected: dict[str, Any] = {"description": None, "files": {}} | kwargs
    for key, value in expected.items():
        assert getattr(template, key) == value, key
    assert await wis.templates.find_by_slug(template.slug) == template


@given(data=st.data())
async def test_any_invalid_template_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    before = await count(wis)
    kwargs, field = data.draw(bad_template_fields())
    if field != "slug":
        kwargs["slug"] = f"{kwargs['slug'][:50]}-{next(_serial)}"
    with pytest.raises(ValidationError) as info:
        await wis.templates.create(**kwargs)
    assert info.value.field == field
    assert await count(wis) == before


async def test_update_changes_only_the_given_fields(wis: Wis2l) -> None:
    template = await wis.templates.create(
        slug="starter", name="Starter", engine="godot", description="d", files={"a": "1"}
    )
    renamed = await wis.templates.update(template.id, name="Starter 2", files={"b": "2"})
    assert (renamed.slug, renamed.name, renamed.engine, renamed.description, renamed.files) == (
        "starter",
        "Starter 2",
        Engine.GODOT,
        "d",
        {"b": "2"},
    )
    assert renamed.updated_at > template.updated_at
    assert renamed.created_at == template.created_at
    moved = await wis.templates.update(
        str(template.id), slug="starter-v2", engine=Engine.WEB, description=None, files=None
    )
    assert (moved.slug, moved.engine, moved.description, moved.files) == (
        "starter-v2",
        Engine.WEB,
        None,
        {},
    )
    assert await wis.templates.find_by_slug("starter") is None
    assert await wis.templates.find_by_slug("starter-v2") == moved


async def test_update_that_changes_nothing_keeps_updated_at(wis: Wis2l) -> None:
    template = await wis.templates.create(slug="same", name="Same", engine="web", files={"n": 1})
    assert await wis.templates.update(template.id) == template
    same = await wis.templates.update(
        template.id, slug="same", name="Same", engine="web", description=None, files={"n": 1.0}
    )
    assert same == template
    assert await wis.templates.find_by_id(template.id) == template


async def test_update_errors(wis: Wis2l) -> None:
    await wis.templates.create(slug="taken", name="T", engine="web")
    template = await wis.templates.create(slug="mine", name="M", engine="web")
    with pytest.raises(NotFound, match="no template with id"):
        await wis.templates.update(uuid.uuid4(), name="x")
    with pytest.raises(NotFound, match="no template with id"):
        await wis.templates.update(uuid.uuid4())
    with pytest.raises(Conflict) as conflict:
        await wis.templates.update(template.id, slug="taken")
    assert conflict.value.field == "slug"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"slug": "Bad"}, "slug"),
        ({"name": ""}, "name"),
        ({"engine": "amiga"}, "engine"),
        ({"files": ["x"]}, "files"),
        ({"description": "d" * 10_001}, "description"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValidationError) as info:
            await wis.templates.update(template.id, **kwargs)
        assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        await wis.templates.update("not-a-uuid", name="x")
    assert info.value.field == "id"
    assert await wis.templates.find_by_id(template.id) == template


async def test_delete_keeps_projects_started_from_it(wis: Wis2l) -> None:
    template = await wis.templates.create(slug="gone", name="Gone", engine="web")
    user = await wis.users.create(email="t@example.com", name="T", subject="t")
    project = await wis.projects.create(
        owner_id=user.id, name="P", slug="p", engine="web", template_id=template.id
    )
    assert await wis.templates.delete(template.id) is True
    assert await wis.templates.find_by_id(template.id) is None
    assert await wis.templates.delete(template.id) is False
    assert await wis.templates.delete(uuid.uuid4()) is False
    kept = await wis.projects.find_by_id(project.id)
    assert kept is not None
    assert kept.template_id is None
    with pytest.raises(ValidationError, check=field_is("id")):
        await wis.templates.delete("nope")
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM events")
        row = await cur.fetchone()
    assert row is not None
    assert row["n"] == 0  # no event for a template's deletion
