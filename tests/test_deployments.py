"""DeploymentRepository against a real PostgreSQL: state machine, URL checks, events."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import field_is, has, make_project
from strategies import INJECTIONS, bad_deployment_fields, bad_urls, deployment_fields, urls
from wis2l_core import (
    Deployment,
    DeploymentStatus,
    Environment,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from wis2l_core.db.deployments import DEPLOYMENT_TRANSITIONS
from wis2l_core.runtime import Wis2l

S = DeploymentStatus
_EVENT = {S.IN_PROGRESS: "started", S.COMPLETED: "completed", S.FAILED: "failed"}


async def events(wis: Wis2l) -> list[dict[str, Any]]:
    """Every event row, in insertion order."""
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT type, subsystem, project_id, payload FROM events ORDER BY seq"
        )
        return list(await cur.fetchall())


async def deployment_in(wis: Wis2l, project_id: uuid.UUID, status: DeploymentStatus) -> Deployment:
    """A deployment brought to ``status`` by allowed moves."""
    dep = await wis.deployments.create(project_id=project_id, environment="staging", version="1.0")
    if status is S.FAILED:
        return await wis.deployments.update(dep.id, status=S.FAILED)
    if status is not S.PENDING:
        dep = await wis.deployments.update(dep.id, status=S.IN_PROGRESS)
    if status is S.COMPLETED:
        dep = await wis.deployments.update(dep.id, status=S.COMPLETED)
    return dep


async def test_create_find_and_lifecycle(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="web")
    dep = await wis.deployments.create(
        project_id=project_id,
        environment=Environment.PRODUCTION,
        version="2.1.0",
        build_id=build.id,
    )
    assert (dep.status, dep.environment, dep.build_id, dep.url) == (
        S.PENDING,
        Environment.PRODUCTION,
        build.id,
        None,
    )
    assert await wis.deployments.find_by_id(dep.id) == dep
    assert await wis.deployments.find_by_id(uuid.uuid4()) is None
    assert await events(wis) == []

    started = await wis.deployments.update(dep.id, status="in_progress")
    live = await wis.deployments.update(
        dep.id, status="completed", url="https://play.wis2l.dev/g/2.1.0"
    )
    assert live.status is S.COMPLETED
    assert live.url == "https://play.wis2l.dev/g/2.1.0"
    assert live.updated_at > started.updated_at
    rows = await events(wis)
    assert [r["type"] for r in rows] == ["deployment.started", "deployment.completed"]
    assert all(r["subsystem"] == "waypoint" and r["project_id"] == project_id for r in rows)
    assert rows[1]["payload"]["url"] == "https://play.wis2l.dev/g/2.1.0"
    assert rows[1]["payload"]["environment"] == "production"
    assert rows[1]["payload"]["version"] == "2.1.0"
    assert rows[0]["payload"]["deployment_id"] == str(dep.id)


async def test_build_must_belong_to_the_project(wis: Wis2l) -> None:
    first, second = await make_project(wis), await make_project(wis)
    build = await wis.builds.create(project_id=second, target="web")
    with pytest.raises(NotFound, match="build_id"):
        await wis.deployments.create(
            project_id=first, environment="staging", version="1", build_id=build.id
        )
    with pytest.raises(NotFound, match=r"^build_id: no build"):
        await wis.deployments.create(
            project_id=first, environment="staging", version="1", build_id=uuid.uuid4()
        )
    with pytest.raises(NotFound, match="project_id"):
        await wis.deployments.create(project_id=uuid.uuid4(), environment="staging", version="1")
    assert len(await wis.deployments.find_all()) == 0


async def test_deleting_the_build_keeps_the_deployment(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="web")
    dep = await wis.deployments.create(
        project_id=project_id, environment="staging", version="1", build_id=build.id
    )
    live = await wis.deployments.update(dep.id, status="in_progress")
    assert await wis.builds.delete(build.id) is True
    found = await wis.deployments.find_by_id(dep.id)
    assert found is not None
    assert found.build_id is None
    # The rest of the record, and its status machine, are untouched.
    assert (found.id, found.status, found.version, found.environment) == (
        live.id,
        live.status,
        live.version,
        live.environment,
    )
    done = await wis.deployments.update(dep.id, status="completed", url="https://g.example")
    assert (done.status, done.build_id) == (S.COMPLETED, None)
    assert [r["type"] for r in await events(wis)] == [
        "deployment.started",
        "deployment.completed",
    ]


async def test_delete(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    dep = await deployment_in(wis, project_id, S.IN_PROGRESS)
    other = await deployment_in(wis, project_id, S.PENDING)
    before = await events(wis)
    assert await wis.deployments.delete(dep.id) is True
    assert await wis.deployments.find_by_id(dep.id) is None
    assert await wis.deployments.delete(str(dep.id)) is False
    assert await wis.deployments.delete(uuid.uuid4()) is False
    assert [d.id for d in await wis.deployments.find_by_project_id(project_id)] == [other.id]
    assert await events(wis) == before  # no event; the deployment's own events stay
    with pytest.raises(NotFound, match="no deployment with id"):
        await wis.deployments.update(dep.id, status="completed")
    with pytest.raises(ValidationError) as info:
        await wis.deployments.delete("nope")
    assert info.value.field == "id"


async def test_update_that_changes_nothing_keeps_updated_at(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    dep = await deployment_in(wis, project_id, S.IN_PROGRESS)
    dep = await wis.deployments.update(dep.id, url="https://a.example/x")
    before = len(await events(wis))
    assert await wis.deployments.update(dep.id) == dep
    assert await wis.deployments.update(dep.id, url="https://a.example/x") == dep
    assert await wis.deployments.find_by_id(dep.id) == dep
    assert len(await events(wis)) == before
    cleared = await wis.deployments.update(dep.id, url=None)
    assert cleared.updated_at > dep.updated_at
    # A status is a move, not a value: asking again for the current one is refused.
    with pytest.raises(InvalidTransition, check=has(current="in_progress")):
        await wis.deployments.update(dep.id, status="in_progress")


@pytest.mark.parametrize(
    ("current", "requested"), list(itertools.product(DeploymentStatus, DeploymentStatus))
)
async def test_every_transition_pair(
    wis: Wis2l, current: DeploymentStatus, requested: DeploymentStatus
) -> None:
    dep = await deployment_in(wis, await make_project(wis), current)
    before = len(await events(wis))
    if requested in DEPLOYMENT_TRANSITIONS[current]:
        after = await wis.deployments.update(dep.id, status=requested)
        assert after.status is requested
        new = [r["type"] for r in (await events(wis))[before:]]
        assert new == ([] if requested is current else [f"deployment.{_EVENT[requested]}"])
    else:
        with pytest.raises(InvalidTransition) as info:
            await wis.deployments.update(dep.id, status=requested, url="https://x.io")
        assert (info.value.current, info.value.requested) == (current.value, requested.value)
        assert await wis.deployments.find_by_id(dep.id) == dep
        assert len(await events(wis)) == before


async def test_url_only_changes_record_no_event(wis: Wis2l) -> None:
    dep = await deployment_in(wis, await make_project(wis), S.COMPLETED)
    before = len(await events(wis))
    moved = await wis.deployments.update(dep.id, url="http://mirror.example.org:8080/a?b=c#d")
    assert moved.url == "http://mirror.example.org:8080/a?b=c#d"
    cleared = await wis.deployments.update(dep.id, url=None)
    assert cleared.url is None
    assert cleared.status is S.COMPLETED
    assert len(await events(wis)) == before


@pytest.mark.parametrize(
    "url",
    [
        "ftp://files.example.org/x",
        "https://",
        "/relative/path",
        "https://exa mple.org/",
        "https://example.org/\x00",
        "https://example.org/\n",
        "https://example.org/" + "a" * 2048,
        "",
        42,
    ],
)
async def test_bad_url_is_refused_before_sql(wis: Wis2l, url: Any) -> None:
    dep = await deployment_in(wis, await make_project(wis), S.IN_PROGRESS)
    with pytest.raises(ValidationError) as info:
        await wis.deployments.update(dep.id, status="completed", url=url)
    assert info.value.field == "url"
    assert await wis.deployments.find_by_id(dep.id) == dep


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"environment": "qa"}, "environment"),
        ({"version": ""}, "version"),
        ({"version": "v" * 101}, "version"),
        ({"build_id": "not-a-uuid"}, "build_id"),
        ({"project_id": 7}, "project_id"),
    ],
)
async def test_bad_create_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    fields = {"project_id": await make_project(wis), "environment": "staging", "version": "1"}
    with pytest.raises(ValidationError) as info:
        await wis.deployments.create(**(fields | kwargs))
    assert info.value.field == field
    assert len(await wis.deployments.find_all()) == 0


async def test_update_unknown_deployment(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match="no deployment with id"):
        await wis.deployments.update(uuid.uuid4(), status="in_progress")
    with pytest.raises(ValidationError, check=field_is("status")):
        await wis.deployments.update(uuid.uuid4(), status="shipped")


async def test_racing_finishers_exactly_one_wins(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    for _ in range(10):
        dep = await deployment_in(wis, project_id, S.IN_PROGRESS)
        results = await asyncio.gather(
            wis.deployments.update(dep.id, status="completed", url="https://a.io"),
            wis.deployments.update(dep.id, status="failed"),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Deployment)]
        assert len(winners) == 1, results
        assert sum(isinstance(r, InvalidTransition) for r in results) == 1
        assert await wis.deployments.find_by_id(dep.id) == winners[0]


async def test_pages(wis: Wis2l) -> None:
    first, second = await make_project(wis), await make_project(wis)
    made = [
        await wis.deployments.create(project_id=first, environment="staging", version=str(i))
        for i in range(5)
    ]
    other = await wis.deployments.create(project_id=second, environment="production", version="9")
    page = await wis.deployments.find_by_project_id(first, limit=3)
    assert page.next_cursor is not None
    rest = await wis.deployments.find_by_project_id(first, limit=3, after=page.next_cursor)
    assert rest.next_cursor is None
    assert [d.id for d in (*page, *rest)] == [d.id for d in made]
    assert [d.id for d in await wis.deployments.find_all()] == [*(d.id for d in made), other.id]
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.deployments.find_all(after=page.next_cursor)


@given(data=st.data())
async def test_any_valid_deployment_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="web")
    fields = data.draw(deployment_fields(project_id, build.id))
    dep = await wis.deployments.create(**fields)
    assert (dep.version, dep.environment, dep.build_id) == (
        fields["version"],
        fields["environment"],
        fields.get("build_id"),
    )
    url = data.draw(urls)
    done = await wis.deployments.update(dep.id, status="in_progress", url=url)
    assert done.url == url
    assert await wis.deployments.find_by_id(dep.id) == done


@given(data=st.data())
async def test_any_invalid_deployment_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    project_id = await make_project(wis)
    fields, field = data.draw(bad_deployment_fields(project_id))
    with pytest.raises(ValidationError) as info:
        await wis.deployments.create(**fields)
    assert info.value.field == field
    assert len(await wis.deployments.find_by_project_id(project_id)) == 0


@given(url=bad_urls)
async def test_any_invalid_url_is_refused(wis: Wis2l, url: Any) -> None:
    dep = await deployment_in(wis, await make_project(wis), S.IN_PROGRESS)
    with pytest.raises(ValidationError) as info:
        await wis.deployments.update(dep.id, status="completed", url=url)
    assert info.value.field == "url"
    assert await wis.deployments.find_by_id(dep.id) == dep


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_are_stored_verbatim(wis: Wis2l, evil: str) -> None:
    dep = await wis.deployments.create(
        project_id=await make_project(wis), environment="staging", version=evil
    )
    assert (await wis.deployments.find_by_id(dep.id)) == dep
    assert dep.version == evil
