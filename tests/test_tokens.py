"""TokenRepository against a real PostgreSQL: value-change versioning, events, concurrency, sync."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import field_is

from strategies import INJECTIONS, bad_token_fields, token_fields, token_sets
from wis2l_core import DesignToken, NotFound, TokenCategory, ValidationError
from wis2l_core.db.tokens import TokenInput
from wis2l_core.runtime import Wis2l


async def sql(wis: Wis2l, query: str, *params: Any) -> list[dict[str, Any]]:
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def count(wis: Wis2l, table: str) -> int:
    return int((await sql(wis, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def events(wis: Wis2l, type_: str | None = None) -> list[dict[str, Any]]:
    rows = await sql(
        wis, "SELECT id, type, subject, subsystem, project_id, payload FROM events ORDER BY seq"
    )
    return [r for r in rows if type_ is None or r["type"] == type_]


async def project(wis: Wis2l) -> uuid.UUID:
    tag = uuid.uuid4().hex[:12]
    user = await wis.users.create(email=f"{tag}@example.com", name="O", subject=tag)
    made = await wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag}", engine="web")
    return made.id


async def walk(fetch: Any) -> list[DesignToken]:
    seen: list[DesignToken] = []
    cursor = None
    while True:
        page = await fetch(cursor)
        seen.extend(page)
        if (cursor := page.next_cursor) is None:
            return seen


# -- upsert -------------------------------------------------------------------------------


async def test_upsert_creates_then_versions_only_value_changes(wis: Wis2l) -> None:
    pid = await project(wis)
    token = await wis.tokens.upsert(
        project_id=pid, name="color.primary", category="color", value="#ff8800"
    )
    assert (token.version, token.value, token.group, token.category) == (
        1,
        "#ff8800",
        None,
        TokenCategory.COLOR,
    )
    assert await wis.tokens.find_by_id(token.id) == token
    [created] = await events(wis)
    assert created["type"] == created["subject"] == "token.updated"
    assert created["subsystem"] == "slate"
    assert created["project_id"] == pid
    payload = created["payload"]
    assert payload["type"] == "token.updated"
    assert payload["id"] == str(created["id"])
    assert (payload["token_id"], payload["name"], payload["category"], payload["version"]) == (
        str(token.id),
        "color.primary",
        "color",
        1,
    )
    assert payload["project_id"] == str(pid)
    assert isinstance(payload["occurred_at"], str)

    same = await wis.tokens.upsert(
        project_id=pid, name="color.primary", category="color", value="#ff8800"
    )
    assert same == token  # not even updated_at moved: nothing was written
    assert len(await events(wis)) == 1

    changed = await wis.tokens.upsert(
        project_id=pid, name="color.primary", category="color", value="#000000"
    )
    assert (changed.id, changed.version, changed.value) == (token.id, 2, "#000000")
    assert changed.updated_at > token.updated_at
    rows = await events(wis)
    assert [r["payload"]["version"] for r in rows] == [1, 2]

    regrouped = await wis.tokens.upsert(
        project_id=pid, name="color.primary", category="other", value="#000000", group="brand"
    )
    assert (regrouped.version, regrouped.category, regrouped.group) == (
        2,
        TokenCategory.OTHER,
        "brand",
    )
    assert len(await events(wis)) == 2
    assert await wis.tokens.find_by_id(token.id) == regrouped
    assert await count(wis, "design_tokens") == 1


async def test_value_compared_as_json(wis: Wis2l) -> None:
    pid = await project(wis)
    first = await wis.tokens.upsert(
        project_id=pid, name="shadow", category="shadow", value={"x": 1, "y": 2, "blur": [4, 8]}
    )
    again = await wis.tokens.upsert(
        project_id=pid, name="shadow", category="shadow", value={"blur": [4, 8], "y": 2, "x": 1.0}
    )
    assert again.version == 1
    null = await wis.tokens.upsert(project_id=pid, name="shadow", category="shadow", value=None)
    assert (null.version, null.value) == (2, None)
    assert (
        await wis.tokens.upsert(project_id=pid, name="shadow", category="shadow", value=None)
    ).version == 2
    assert first.id == null.id
    assert len(await events(wis, "token.updated")) == 2


async def test_upsert_missing_project_writes_nothing(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
        await wis.tokens.upsert(project_id=uuid.uuid4(), name="a", category="color", value=1)
    assert await count(wis, "design_tokens") == 0
    assert await count(wis, "events") == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"category": "colour"}, "category"),
        ({"value": {"k": object()}}, "value"),
        ({"value": "nul\x00"}, "value"),
        ({"value": 2**64}, "value"),
        ({"value": {(1, 2): "tuple key"}}, "value"),
        ({"group": ""}, "group"),
        ({"group": "g" * 201}, "group"),
        ({"project_id": "nope"}, "project_id"),
    ],
)
async def test_bad_upsert_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    pid = await project(wis)
    fields: dict[str, Any] = {"project_id": pid, "name": "ok", "category": "color", "value": 1}
    fields |= kwargs
    with pytest.raises(ValidationError) as info:
        await wis.tokens.upsert(**fields)
    assert info.value.field == field
    assert await count(wis, "design_tokens") == 0
    assert await count(wis, "events") == 0


async def test_injection_strings_are_stored_verbatim(wis: Wis2l) -> None:
    pid = await project(wis)
    for evil in INJECTIONS:
        token = await wis.tokens.upsert(
            project_id=pid, name=evil, category="other", value={evil: [evil]}, group=evil
        )
        assert (token.name, token.group, token.value) == (evil, evil, {evil: [evil]})
        assert await wis.tokens.find_by_id(token.id) == token
    synced = await wis.tokens.sync(
        pid, [{"name": evil, "category": "other", "value": evil} for evil in INJECTIONS]
    )
    assert [t.value for t in synced] == list(INJECTIONS)
    assert [t.version for t in synced] == [2] * len(INJECTIONS)


# -- lists --------------------------------------------------------------------------------


async def test_lists_page_through_every_row_once(wis: Wis2l) -> None:
    pid, other = await project(wis), await project(wis)
    categories = ["color", "spacing", "typography"]
    made = [
        await wis.tokens.upsert(
            project_id=pid, name=f"t{i:02}", category=categories[i % 3], value=i
        )
        for i in range(17)
    ]
    await wis.tokens.upsert(project_id=other, name="t00", category="color", value="x")

    assert await walk(lambda c: wis.tokens.find_all(pid, limit=5, after=c)) == made
    spacing = await walk(lambda c: wis.tokens.find_by_category(pid, "spacing", limit=2, after=c))
    assert spacing == [t for t in made if t.category is TokenCategory.SPACING]
    big = await wis.tokens.find_all(pid, limit=1000)
    assert (big.items, big.next_cursor) == (tuple(made), None)
    with pytest.raises(ValidationError) as info:
        await wis.tokens.find_all(pid, limit=1001)
    assert info.value.field == "limit"
    with pytest.raises(ValidationError) as info:
        await wis.tokens.find_by_category(pid, "colour")
    assert info.value.field == "category"
    page = await wis.tokens.find_all(pid, limit=3)
    assert page.next_cursor is not None
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.tokens.find_by_category(pid, "color", after=page.next_cursor)
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.tokens.find_all(pid, after=page.next_cursor.upper())
    assert list(await wis.tokens.find_all(uuid.uuid4())) == []


# -- concurrency --------------------------------------------------------------------------


async def test_50_concurrent_upserts_of_one_token(wis: Wis2l) -> None:
    pid = await project(wis)
    results = await asyncio.gather(
        *(
            wis.tokens.upsert(project_id=pid, name="spacing.md", category="spacing", value=16)
            for _ in range(50)
        )
    )
    assert await count(wis, "design_tokens") == 1
    assert {(t.id, t.version, t.value) for t in results} == {(results[0].id, 1, 16)}
    assert len(await events(wis, "token.updated")) == 1


async def test_concurrent_upserts_of_different_values(wis: Wis2l) -> None:
    pid = await project(wis)
    rng = random.Random(7)
    values = [rng.choice(["#111", "#222", "#333"]) for _ in range(60)]
    results = await asyncio.gather(
        *(
            wis.tokens.upsert(project_id=pid, name="accent", category="color", value=v)
            for v in values
        )
    )
    [row] = await sql(wis, "SELECT id, value, version FROM design_tokens")
    changes = await events(wis, "token.updated")
    # Every applied change (creation included) has exactly one event and one version.
    assert row["version"] == len(changes)
    assert sorted(e["payload"]["version"] for e in changes) == list(range(1, row["version"] + 1))
    assert max(t.version for t in results) == row["version"]
    assert all(t.id == row["id"] for t in results)
    # The row holds the value of the latest change.
    latest = max((t for t in results if t.version == row["version"]), key=lambda t: t.updated_at)
    assert latest.value == row["value"]
    assert row["version"] > 1  # with 60 racing writers the value did change


async def test_concurrent_syncs_are_consistent_and_deadlock_free(wis: Wis2l) -> None:
    pid = await project(wis)
    names = [f"n{i:03}" for i in range(200)]
    rng = random.Random(11)

    def one_set() -> list[dict[str, Any]]:
        order = names[:]
        rng.shuffle(order)
        return [{"name": n, "category": "color", "value": rng.randint(0, 2)} for n in order]

    await asyncio.gather(
        *(wis.tokens.sync(pid, one_set()) for _ in range(6)),
        *(wis.tokens.upsert(project_id=pid, name=n, category="color", value=9) for n in names[:20]),
    )
    rows = await sql(wis, "SELECT sum(version) AS v, count(*) AS n FROM design_tokens")
    assert rows[0]["n"] == 200
    synced = await events(wis, "token.synced")
    updated = await events(wis, "token.updated")
    assert len(synced) == 6
    assert all(e["payload"]["count"] == 200 for e in synced)
    # Each version step of each token was counted by exactly one sync or one upsert.
    assert rows[0]["v"] == sum(e["payload"]["changed"] for e in synced) + len(updated)


# -- sync ---------------------------------------------------------------------------------


async def test_sync_upserts_many_and_records_one_event(wis: Wis2l) -> None:
    pid = await project(wis)
    existing = await wis.tokens.upsert(project_id=pid, name="keep", category="color", value=1)
    tokens: list[Any] = [
        {"name": "a", "category": "color", "value": "#fff"},
        TokenInput(name="b", category=TokenCategory.SPACING, value=8, group="scale"),
        {"name": "keep", "category": "color", "value": 1},
    ]
    synced = await wis.tokens.sync(pid, tokens)
    assert [t.name for t in synced] == ["a", "b", "keep"]
    assert synced[1].group == "scale"
    assert synced[2] == existing
    assert all(t.version == 1 for t in synced)
    assert sorted(
        await walk(lambda c: wis.tokens.find_all(pid, after=c)), key=lambda t: t.name
    ) == (sorted(synced, key=lambda t: t.name))
    [event] = await events(wis, "token.synced")
    assert (event["payload"]["count"], event["payload"]["changed"]) == (3, 2)
    assert event["project_id"] == pid
    assert len(await events(wis, "token.updated")) == 1  # only the earlier upsert

    # Copying tokens as DesignToken objects; one value changed, one regrouped.
    edited = [synced[0], TokenInput(name="b", category="spacing", value=16), synced[2]]
    edited[2] = TokenInput(name="keep", category="other", value=1, group="moved")
    again = await wis.tokens.sync(pid, edited)
    assert [t.version for t in again] == [1, 2, 1]
    assert (again[2].category, again[2].group) == (TokenCategory.OTHER, "moved")
    last = (await events(wis, "token.synced"))[-1]["payload"]
    assert (last["count"], last["changed"]) == (3, 1)

    # Nothing changed: still one audit event, with changed == 0.
    assert await wis.tokens.sync(pid, edited) == again
    last = (await events(wis, "token.synced"))[-1]["payload"]
    assert (last["count"], last["changed"]) == (3, 0)

    assert await wis.tokens.sync(pid, []) == []
    assert len(await events(wis, "token.synced")) == 4


@pytest.mark.parametrize(
    ("tokens", "field"),
    [
        ([{"name": "a", "category": "color", "value": 1}] * 2, "tokens[1].name"),
        ([{"name": "a", "category": "color"}], "tokens[0].value"),
        ([{"category": "color", "value": 1}], "tokens[0].name"),
        ([{"name": "a", "category": "colour", "value": 1}], "tokens[0].category"),
        (
            [
                {"name": "a", "category": "color", "value": 1},
                {"name": "b", "category": "color", "value": {1}},
            ],
            "tokens[1].value",
        ),
        ([{"name": "a", "category": "color", "value": 1, "group": ""}], "tokens[0].group"),
        ([object()], "tokens[0].name"),
        ([{"name": f"t{i}", "category": "color", "value": i} for i in range(10_001)], "tokens"),
    ],
)
async def test_bad_sync_writes_nothing(wis: Wis2l, tokens: list[Any], field: str) -> None:
    pid = await project(wis)
    with pytest.raises(ValidationError) as info:
        await wis.tokens.sync(pid, tokens)
    assert info.value.field == field
    assert await count(wis, "design_tokens") == 0
    assert await count(wis, "events") == 0


async def test_sync_missing_project_writes_nothing(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
        await wis.tokens.sync(uuid.uuid4(), [{"name": "a", "category": "color", "value": 1}])
    with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
        await wis.tokens.sync(uuid.uuid4(), [])
    assert await count(wis, "design_tokens") == 0
    assert await count(wis, "events") == 0


async def test_rolled_back_transaction_leaves_no_token_or_event(wis: Wis2l) -> None:
    pid = await project(wis)

    async def work() -> None:
        async with wis.transaction() as tx:
            await tx.tokens.upsert(project_id=pid, name="a", category="color", value=1)
            await tx.tokens.sync(pid, [{"name": "b", "category": "color", "value": 2}])
            assert len(await tx.tokens.find_all(pid)) == 2
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await work()
    assert await count(wis, "design_tokens") == 0
    assert await count(wis, "events") == 0


@pytest.mark.slow
@pytest.mark.timing
async def test_sync_1000_tokens_in_one_call(wis: Wis2l) -> None:
    pid, other = await project(wis), await project(wis)
    tokens: list[dict[str, Any]] = [
        {"name": f"color.{i:04}", "category": "color", "value": {"hex": f"#{i:06x}", "i": i}}
        for i in range(1000)
    ]
    start = time.perf_counter()
    synced = await wis.tokens.sync(pid, tokens)
    sync_s = time.perf_counter() - start
    assert [t.name for t in synced] == [t["name"] for t in tokens]
    assert await count(wis, "design_tokens") == 1000
    [event] = await events(wis, "token.synced")
    assert (event["payload"]["count"], event["payload"]["changed"]) == (1000, 1000)

    start = time.perf_counter()
    resync = await wis.tokens.sync(pid, tokens)
    resync_s = time.perf_counter() - start
    assert resync == synced

    start = time.perf_counter()
    for t in tokens:
        await wis.tokens.upsert(project_id=other, **t)
    upserts_s = time.perf_counter() - start
    assert len(await events(wis, "token.updated")) == 1000
    print(
        f"\n[bench] tokens.sync(1000 new) {sync_s * 1000:.1f} ms; "
        f"sync(1000 unchanged) {resync_s * 1000:.1f} ms; "
        f"1000 x upsert {upserts_s * 1000:.1f} ms"
    )
    assert sync_s < upserts_s


# -- hypothesis ---------------------------------------------------------------------------


@given(data=st.data())
async def test_any_valid_token_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    pid = await project(wis)
    kwargs = data.draw(token_fields(pid))
    token = await wis.tokens.upsert(**kwargs)
    assert (token.name, token.category, token.value, token.group, token.version) == (
        kwargs["name"],
        kwargs["category"],
        kwargs["value"],
        kwargs.get("group"),
        1,
    )
    assert await wis.tokens.find_by_id(token.id) == token
    again = await wis.tokens.upsert(**kwargs)
    assert again == token


@given(data=st.data())
async def test_any_valid_token_set_syncs(wis: Wis2l, data: st.DataObject) -> None:
    pid = await project(wis)
    tokens = data.draw(token_sets())
    synced = await wis.tokens.sync(pid, tokens)
    assert [(t.name, t.category, t.value, t.group) for t in synced] == [
        (t["name"], t["category"], t["value"], t.get("group")) for t in tokens
    ]
    stored = await wis.tokens.find_all(pid, limit=1000)
    assert sorted(stored, key=lambda t: t.name) == sorted(synced, key=lambda t: t.name)


@given(data=st.data())
async def test_any_invalid_token_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    pid = await project(wis)
    before = (await count(wis, "design_tokens"), await count(wis, "events"))
    kwargs, field = data.draw(bad_token_fields(pid))
    with pytest.raises(ValidationError) as info:
        await wis.tokens.upsert(**kwargs)
    assert info.value.field == field
    item = {k: v for k, v in kwargs.items() if k != "project_id"}
    with pytest.raises(ValidationError) as info:
        await wis.tokens.sync(kwargs["project_id"], [item])
    assert info.value.field == (field if field == "project_id" else f"tokens[0].{field}")
    assert (await count(wis, "design_tokens"), await count(wis, "events")) == before


# -- delete -------------------------------------------------------------------------------


async def test_delete_by_name(wis: Wis2l) -> None:
    pid, other = await project(wis), await project(wis)
    token = await wis.tokens.upsert(project_id=pid, name="color.bg", category="color", value="#000")
    kept = await wis.tokens.upsert(project_id=pid, name="color.fg", category="color", value="#fff")
    twin = await wis.tokens.upsert(project_id=other, name="color.bg", category="color", value=1)
    before = await events(wis)
    assert await wis.tokens.delete(pid, "color.bg") is True
    assert await wis.tokens.find_by_id(token.id) is None
    assert await wis.tokens.delete(str(pid), "color.bg") is False
    assert await wis.tokens.delete(pid, "nope") is False
    assert await wis.tokens.delete(uuid.uuid4(), "color.fg") is False
    assert [t.id for t in await walk(lambda c: wis.tokens.find_all(pid, after=c))] == [kept.id]
    assert await wis.tokens.find_by_id(twin.id) == twin  # another project's token of that name
    deleted = (await events(wis))[len(before) :]  # one TokenDeleted, from the first call only
    assert [(e["type"], e["subsystem"], e["project_id"]) for e in deleted] == [
        ("token.deleted", "slate", pid)
    ]
    assert deleted[0]["payload"]["token_id"] == str(token.id)
    assert (deleted[0]["payload"]["name"], deleted[0]["payload"]["category"]) == (
        "color.bg",
        "color",
    )
    again = await wis.tokens.upsert(project_id=pid, name="color.bg", category="color", value="#000")
    assert (again.version, again.id != token.id) == (1, True)  # a new token from version 1
    for args, field in [(("nope", "a"), "project_id"), ((pid, ""), "name"), ((pid, 5), "name")]:
        with pytest.raises(ValidationError) as info:
            await wis.tokens.delete(*args)  # type: ignore[arg-type]
        assert info.value.field == field


@pytest.mark.parametrize("tokens", [None, 5, {"name": "a", "category": "color", "value": 1}])
async def test_sync_needs_an_iterable_of_tokens(wis: Wis2l, tokens: Any) -> None:
    pid = await project(wis)
    with pytest.raises(ValidationError) as info:
        await wis.tokens.sync(pid, tokens)
    assert info.value.field == "tokens"
    assert await count(wis, "events") == 0
