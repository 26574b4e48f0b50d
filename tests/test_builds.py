"""BuildRepository against a real PostgreSQL: the state machine, events, pages, races."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import field_is, has, make_project
from strategies import (
    INJECTIONS,
    bad_build_changes,
    bad_build_fields,
    build_fields,
    build_logs,
    json_objects,
    progress_values,
)
from wis2l_core import Build, BuildStatus, InvalidTransition, NotFound, ValidationError
from wis2l_core.db.builds import BUILD_TRANSITIONS
from wis2l_core.runtime import Wis2l

S = BuildStatus


async def events(wis: Wis2l) -> list[dict[str, Any]]:
    """Every event row, in insertion order."""
    async with wis.database.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT type, subsystem, project_id, subject, payload FROM events ORDER BY seq"
        )
        return list(await cur.fetchall())


async def build_in(wis: Wis2l, project_id: uuid.UUID, status: BuildStatus) -> Build:
    """A build brought to ``status`` by allowed moves."""
    build = await wis.builds.create(project_id=project_id, target="linux")
    if status is S.FAILED:
        return await wis.builds.update(build.id, status=S.FAILED)
    if status is not S.PENDING:
        build = await wis.builds.update(build.id, status=S.BUILDING)
    if status is S.COMPLETED:
        build = await wis.builds.update(build.id, status=S.COMPLETED)
    return build


B = BuildStatus
# The contract, spelled out here rather than read from the code under test.
MOVES = {
    (B.PENDING, B.BUILDING),
    (B.PENDING, B.FAILED),
    (B.BUILDING, B.COMPLETED),
    (B.BUILDING, B.FAILED),
}


def allowed(current: BuildStatus, requested: BuildStatus) -> bool:
    """Only the moves of DESIGN.md; the current status again is refused too."""
    return (current, requested) in MOVES


def test_the_transition_table_is_the_contract() -> None:
    assert {(a, b) for a, targets in BUILD_TRANSITIONS.items() for b in targets} == MOVES


async def test_create_and_find(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="webgl")
    assert (build.status, build.progress, build.logs, dict(build.artifacts)) == (
        S.PENDING,
        0,
        "",
        {},
    )
    assert build.started_at is None
    assert build.finished_at is None
    assert build.id.version == 7
    assert await wis.builds.find_by_id(build.id) == build
    assert await wis.builds.find_by_id(str(build.id)) == build
    assert await wis.builds.find_by_id(uuid.uuid4()) is None
    assert await events(wis) == []  # creating a build records no event


async def test_create_needs_a_project(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match="project_id"):
        await wis.builds.create(project_id=uuid.uuid4(), target="webgl")
    assert len(await wis.builds.find_all()) == 0


async def test_lifecycle_records_one_event_per_call(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="webgl")

    building = await wis.builds.update(build.id, status="building", log="compiling\n")
    assert building.status is S.BUILDING
    assert building.started_at is not None
    assert building.updated_at > build.updated_at
    progressed = await wis.builds.update(build.id, progress=40, log="linking\n")
    assert progressed.progress == 40
    assert progressed.logs == "compiling\nlinking\n"
    assert progressed.started_at == building.started_at
    done = await wis.builds.update(build.id, status=S.COMPLETED, artifacts={"game.wasm": 123})
    assert (done.status, done.progress, dict(done.artifacts)) == (
        S.COMPLETED,
        100,
        {"game.wasm": 123},
    )
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at
    assert await wis.builds.find_by_id(build.id) == done

    rows = await events(wis)
    assert [r["type"] for r in rows] == ["build.started", "build.progress", "build.completed"]
    assert all(r["subsystem"] == "ignis" and r["project_id"] == project_id for r in rows)
    assert [r["subject"] for r in rows] == [r["type"] for r in rows]
    started, progress, completed = (r["payload"] for r in rows)
    assert started["build_id"] == str(build.id)
    assert started["target"] == "webgl"
    assert progress["progress"] == 40
    assert completed["artifacts"] == {"game.wasm": 123}
    assert completed["target"] == "webgl"
    assert completed["project_id"] == str(project_id)


@pytest.mark.parametrize(
    ("current", "requested"), list(itertools.product(BuildStatus, BuildStatus))
)
async def test_every_transition_pair(
    wis: Wis2l, current: BuildStatus, requested: BuildStatus
) -> None:
    build = await build_in(wis, await make_project(wis), current)
    assert build.status is current
    before = len(await events(wis))
    if allowed(current, requested):
        after = await wis.builds.update(build.id, status=requested)
        assert after.status is requested
        new = [r["type"] for r in (await events(wis))[before:]]
        assert new == ([] if requested is current else [f"build.{_EVENT[requested]}"])
        if requested is current:
            assert after.started_at == build.started_at
    else:
        with pytest.raises(InvalidTransition) as info:
            await wis.builds.update(build.id, status=requested, log="x", artifacts={"k": 1})
        assert (info.value.current, info.value.requested) == (current.value, requested.value)
        assert info.value.field == "status"
        assert await wis.builds.find_by_id(build.id) == build  # nothing written
        assert len(await events(wis)) == before


_EVENT = {S.BUILDING: "started", S.COMPLETED: "completed", S.FAILED: "failed"}


async def test_timestamps_follow_the_status(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    failed_early = await build_in(wis, project_id, S.FAILED)
    assert failed_early.started_at is None
    assert failed_early.finished_at is not None
    building = await build_in(wis, project_id, S.BUILDING)
    again = await wis.builds.update(building.id, progress=10)
    assert again.started_at == building.started_at
    assert again.finished_at is None
    failed = await wis.builds.update(building.id, status="failed", progress=80)
    assert failed.progress == 80
    assert failed.finished_at is not None


async def test_progress_rules(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    pending = await wis.builds.create(project_id=project_id, target="web")
    with pytest.raises(InvalidTransition) as info:
        await wis.builds.update(pending.id, progress=10)
    assert (info.value.current, info.value.requested) == ("pending", "pending")
    # pending -> building with a progress in one call is fine
    building = await wis.builds.update(pending.id, status="building", progress=5)
    assert building.progress == 5
    for bad in (-1, 101, True, 5.5, "7"):
        with pytest.raises(ValidationError) as err:
            await wis.builds.update(pending.id, progress=bad)  # type: ignore[arg-type]
        assert err.value.field == "progress"
    with pytest.raises(ValidationError, match="progress 100") as err:
        await wis.builds.update(pending.id, status="completed", progress=90)
    with pytest.raises(ValidationError, match="pending") as err:
        await wis.builds.update(pending.id, status="pending", progress=0)
    assert err.value.field == "progress"
    assert not isinstance(err.value, InvalidTransition)
    assert await wis.builds.find_by_id(pending.id) == building
    done = await wis.builds.update(pending.id, status="completed", progress=100)
    with pytest.raises(InvalidTransition, check=has(current="completed")):
        await wis.builds.update(done.id, progress=50)


async def test_same_progress_and_log_only_record_no_event(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await build_in(wis, project_id, S.BUILDING)
    await wis.builds.update(build.id, progress=30)
    before = len(await events(wis))
    same = await wis.builds.update(build.id, progress=30, log="a")
    same = await wis.builds.update(build.id, log="b")
    assert (same.progress, same.logs) == (30, "ab")
    with pytest.raises(
        InvalidTransition, check=has(current="building")
    ):  # a second claim of a building build
        await wis.builds.update(build.id, status="building", log="c")
    assert len(await events(wis)) == before
    done = await wis.builds.update(build.id, status="completed")
    late = await wis.builds.update(done.id, log="uploaded\n", artifacts={"zip": "a.zip"})
    assert late.logs == "abuploaded\n"
    assert late.status is S.COMPLETED
    assert dict(late.artifacts) == {"zip": "a.zip"}
    assert len(await events(wis)) == before + 1


async def test_update_unknown_build(wis: Wis2l) -> None:
    with pytest.raises(NotFound, match="no build with id"):
        await wis.builds.update(uuid.uuid4(), status="building")
    with pytest.raises(NotFound, match="no build with id"):
        await wis.builds.update(uuid.uuid4(), log="x")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"status": "done"}, "status"),
        ({"artifacts": ["not", "an", "object"]}, "artifacts"),
        ({"artifacts": {"x": object()}}, "artifacts"),
        ({"artifacts": {1: "non-string key"}}, "artifacts"),
        ({"log": "nul\x00"}, "log"),
        ({"log": 12}, "log"),
    ],
)
async def test_bad_update_is_refused_before_sql(
    wis: Wis2l, kwargs: dict[str, Any], field: str
) -> None:
    build = await build_in(wis, await make_project(wis), S.BUILDING)
    with pytest.raises(ValidationError) as info:
        await wis.builds.update(build.id, **kwargs)
    assert info.value.field == field
    assert await wis.builds.find_by_id(build.id) == build


async def test_racing_finishers_exactly_one_wins(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    for _ in range(10):
        build = await build_in(wis, project_id, S.BUILDING)
        before = len(await events(wis))
        results = await asyncio.gather(
            wis.builds.update(build.id, status="completed", artifacts={"a": 1}),
            wis.builds.update(build.id, status="failed", log="boom"),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Build)]
        losers = [r for r in results if isinstance(r, InvalidTransition)]
        assert (len(winners), len(losers)) == (1, 1), results
        assert losers[0].current == winners[0].status.value
        assert await wis.builds.find_by_id(build.id) == winners[0]
        assert len(await events(wis)) == before + 1


async def test_concurrent_progress_and_logs_lose_nothing(wis: Wis2l) -> None:
    build = await build_in(wis, await make_project(wis), S.BUILDING)
    await asyncio.gather(*(wis.builds.update(build.id, log=f"{i};") for i in range(20)))
    final = await wis.builds.find_by_id(build.id)
    assert final is not None
    assert sorted(final.logs.rstrip(";").split(";"), key=int) == [str(i) for i in range(20)]


async def test_pages(wis: Wis2l) -> None:
    first, second = await make_project(wis), await make_project(wis)
    made = [await wis.builds.create(project_id=first, target=f"t{i}") for i in range(5)]
    other = await wis.builds.create(project_id=second, target="other")
    await wis.builds.update(made[1].id, status="building")
    await wis.builds.update(made[3].id, status="building")

    page = await wis.builds.find_by_project_id(first, limit=2)
    seen = list(page.items)
    while page.next_cursor:
        page = await wis.builds.find_by_project_id(first, limit=2, after=page.next_cursor)
        seen.extend(page.items)
    assert [b.id for b in seen] == [b.id for b in made]
    everything = await wis.builds.find_all(limit=100)
    assert [b.id for b in everything] == [*(b.id for b in made), other.id]
    building = await wis.builds.find_all(status="building")
    assert [b.id for b in building] == [made[1].id, made[3].id]
    assert len(await wis.builds.find_all(status=S.COMPLETED)) == 0
    with pytest.raises(ValidationError, check=field_is("status")):
        await wis.builds.find_all(status="sleeping")
    cursor = (await wis.builds.find_by_project_id(first, limit=1)).next_cursor
    assert cursor is not None
    with pytest.raises(ValidationError) as info:
        await wis.builds.find_all(after=cursor)  # a cursor of another list
    assert info.value.field == "after"
    tampered = cursor[:-2] + ("BB" if cursor.endswith("AA") else "AA")  # 1 in 4,096 ends so
    with pytest.raises(ValidationError, check=field_is("after")):
        await wis.builds.find_by_project_id(first, after=tampered)


@given(data=st.data())
async def test_any_valid_build_round_trips(wis: Wis2l, data: st.DataObject) -> None:
    fields = data.draw(build_fields(await make_project(wis)))
    build = await wis.builds.create(**fields)
    assert build.target == fields["target"]
    assert await wis.builds.find_by_id(build.id) == build


@given(data=st.data())
async def test_any_invalid_build_is_refused(wis: Wis2l, data: st.DataObject) -> None:
    project_id = await make_project(wis)
    fields, field = data.draw(bad_build_fields(project_id))
    with pytest.raises(ValidationError) as info:
        await wis.builds.create(**fields)
    assert info.value.field == field
    assert len(await wis.builds.find_by_project_id(project_id)) == 0


@given(artifacts=json_objects, log=build_logs, progress=progress_values)
async def test_any_valid_update_round_trips(
    wis: Wis2l, artifacts: dict[str, Any], log: str, progress: int
) -> None:
    build = await build_in(wis, await make_project(wis), S.BUILDING)
    updated = await wis.builds.update(build.id, artifacts=artifacts, log=log, progress=progress)
    assert (dict(updated.artifacts), updated.logs, updated.progress) == (artifacts, log, progress)
    assert await wis.builds.find_by_id(build.id) == updated


@given(change=bad_build_changes())
async def test_any_invalid_update_is_refused(
    wis: Wis2l, change: tuple[dict[str, Any], str]
) -> None:
    build = await build_in(wis, await make_project(wis), S.BUILDING)
    before = len(await events(wis))
    kwargs, field = change
    with pytest.raises(ValidationError) as info:
        await wis.builds.update(build.id, **kwargs)
    assert info.value.field == field
    assert await wis.builds.find_by_id(build.id) == build
    assert len(await events(wis)) == before


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_are_stored_verbatim(wis: Wis2l, evil: str) -> None:
    build = await wis.builds.create(project_id=await make_project(wis), target=evil)
    done = await wis.builds.update(build.id, log=evil, artifacts={evil: evil})
    assert (done.target, done.logs, dict(done.artifacts)) == (evil, evil, {evil: evil})
    assert (await wis.builds.find_all(status="pending")).items == (done,)


async def test_claiming_a_build_is_exclusive(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await wis.builds.create(project_id=project_id, target="web")
    results = await asyncio.gather(
        *(wis.builds.update(build.id, status="building") for _ in range(5)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, InvalidTransition)]
    assert (len(won), len(lost)) == (1, 4)
    rows = await events(wis)
    assert [r["type"] for r in rows].count("build.started") == 1


async def test_a_build_that_never_started_fails_at_progress_0(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    pending = await wis.builds.create(project_id=project_id, target="web")
    for progress in (73, 100, 1):
        with pytest.raises(ValidationError) as info:
            await wis.builds.update(pending.id, status="failed", progress=progress, log="x")
        assert info.value.field == "progress"
        assert not isinstance(info.value, InvalidTransition)
        assert "never started" in str(info.value)
    assert await wis.builds.find_by_id(pending.id) == pending  # nothing written
    assert await events(wis) == []
    failed = await wis.builds.update(pending.id, status="failed", progress=0, log="refused\n")
    assert (failed.status, failed.progress, failed.started_at) == (S.FAILED, 0, None)
    assert failed.finished_at is not None
    assert [r["type"] for r in await events(wis)] == ["build.failed"]
    # From building, failing keeps the progress reached.
    building = await build_in(wis, project_id, S.BUILDING)
    assert (await wis.builds.update(building.id, status="failed", progress=73)).progress == 73


async def test_a_progress_equal_to_the_stored_one_is_no_change(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    pending = await wis.builds.create(project_id=project_id, target="web")
    assert await wis.builds.update(pending.id, progress=0) == pending
    with pytest.raises(InvalidTransition, check=has(current="pending")):
        await wis.builds.update(pending.id, progress=1)
    done = await build_in(wis, project_id, S.COMPLETED)
    assert await wis.builds.update(done.id, progress=100) == done
    with pytest.raises(InvalidTransition, check=has(current="completed")):
        await wis.builds.update(done.id, progress=99)
    building = await build_in(wis, project_id, S.BUILDING)
    failed = await wis.builds.update(building.id, status="failed", progress=40)
    assert await wis.builds.update(failed.id, progress=40) == failed
    before = [r["type"] for r in await events(wis)]
    assert before.count("build.progress") == 0  # none of the equal values made an event


async def test_update_that_changes_nothing_keeps_updated_at(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await build_in(wis, project_id, S.BUILDING)
    build = await wis.builds.update(build.id, progress=30, artifacts={"a": [1]}, log="l\n")
    before = len(await events(wis))
    assert await wis.builds.update(build.id) == build
    assert await wis.builds.update(build.id, log="") == build
    same = await wis.builds.update(build.id, progress=30, artifacts={"a": [1.0]}, log="")
    assert same == build
    assert await wis.builds.find_by_id(build.id) == build
    assert len(await events(wis)) == before
    logged = await wis.builds.update(build.id, log="more\n")
    assert logged.updated_at > build.updated_at
    assert len(await events(wis)) == before  # a log line is no event


async def test_timestamps_never_predate_created_at(wis: Wis2l) -> None:
    # Transactions that began before the build was created, then start and finish it:
    # now() (the transaction's start) would stamp times before created_at.
    project_id = await make_project(wis)
    async with wis.transaction() as tx:
        assert await tx.builds.find_by_id(uuid.uuid4()) is None  # the transaction has begun
        await asyncio.sleep(0.01)
        build = await wis.builds.create(project_id=project_id, target="web")
        started = await tx.builds.update(build.id, status="building")
        await asyncio.sleep(0.001)
        done = await tx.builds.update(build.id, status="completed")
    assert build.created_at == build.updated_at
    assert started.started_at is not None
    assert started.started_at > build.created_at
    assert started.updated_at == started.started_at
    assert done.started_at == started.started_at
    assert done.finished_at is not None
    assert done.finished_at > started.started_at
    assert done.updated_at > started.updated_at
    early = await wis.builds.create(project_id=project_id, target="web")
    async with wis.transaction() as tx:
        await tx.builds.find_by_id(early.id)
        await asyncio.sleep(0.01)
        late = await wis.builds.create(project_id=project_id, target="web")
        failed = await tx.builds.update(late.id, status="failed")
    assert late.created_at > early.created_at
    assert failed.finished_at is not None
    assert failed.finished_at > late.created_at


async def test_logs_keep_their_last_lines(wis: Wis2l, monkeypatch: pytest.MonkeyPatch) -> None:
    from wis2l_core.db import builds as module
    from wis2l_core.sync.db import builds as generated

    build = await build_in(wis, await make_project(wis), S.BUILDING)
    monkeypatch.setattr(module, "MAX_LOGS", 20)
    monkeypatch.setattr(generated, "MAX_LOGS", 20)  # when re-collected by tests/sync
    kept = await wis.builds.update(build.id, log="line one\nline two\n")
    assert kept.logs == "line one\nline two\n"  # 18 characters: all kept
    trimmed = await wis.builds.update(build.id, log="three\n")
    # The last 20 characters start inside "line one": that partial line goes too.
    assert trimmed.logs == "line two\nthree\n"
    cut = await wis.builds.update(build.id, log="four4\n")
    assert cut.logs == "three\nfour4\n"
    exact = await wis.builds.update(build.id, log="abcdefghijklm\n")
    # The last 20 characters begin right after a newline: kept whole.
    assert exact.logs == "four4\nabcdefghijklm\n"
    long_line = await wis.builds.update(build.id, log="x" * 30)
    assert long_line.logs == "x" * 20  # one line longer than the cap: its tail
    one_line = await wis.builds.update(build.id, log="y" * 25 + "\n")
    assert one_line.logs == "y" * 19 + "\n"  # never emptied by the line-start rule
    assert await wis.builds.find_by_id(build.id) == one_line


async def test_logs_are_capped_per_build(wis: Wis2l) -> None:
    from wis2l_core.db.builds import MAX_LOG, MAX_LOGS

    assert (MAX_LOG, MAX_LOGS) == (1_000_000, 1_000_000)
    build = await build_in(wis, await make_project(wis), S.BUILDING)
    chunk = "".join(f"{i:09d}\n" for i in range(MAX_LOG // 10))  # 100,000 lines
    await wis.builds.update(build.id, log=chunk)
    full = await wis.builds.update(build.id, log="the end\n")
    assert len(full.logs) <= MAX_LOGS
    assert full.logs.endswith("000099999\nthe end\n")
    assert full.logs.startswith("000000001\n")  # line 0 dropped whole, not cut
    with pytest.raises(ValidationError) as info:
        await wis.builds.update(build.id, log="z" * (MAX_LOG + 1))
    assert info.value.field == "log"


async def test_delete(wis: Wis2l) -> None:
    project_id = await make_project(wis)
    build = await build_in(wis, project_id, S.BUILDING)
    other = await wis.builds.create(project_id=project_id, target="web")
    before = await events(wis)
    assert await wis.builds.delete(build.id) is True
    assert await wis.builds.find_by_id(build.id) is None
    assert await wis.builds.delete(str(build.id)) is False
    assert await wis.builds.delete(uuid.uuid4()) is False
    assert [b.id for b in await wis.builds.find_by_project_id(project_id)] == [other.id]
    assert await events(wis) == before  # its build.started stays; no new event
    with pytest.raises(NotFound, match="no build with id"):  # a worker still holding the id
        await wis.builds.update(build.id, progress=50)
    with pytest.raises(ValidationError) as info:
        await wis.builds.delete(42)  # type: ignore[arg-type]
    assert info.value.field == "id"
