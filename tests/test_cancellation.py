"""Cancelled calls never leak a pool connection, never return a broken one, never half-write.

Every public call that borrows a connection (reads, pages, writes, ``transaction()``, your
own SQL, the outbox relay) is cancelled at every await it reaches (after 0, 1, 2 ...
turns of the event loop), at random moments, and twice in a row (the second cancellation
landing while the first is being handled). Afterwards the pool is whole: every
connection is idle again within a bounded wait, ``max_size`` concurrent borrows all
succeed, and each pooled connection still answers. No write is half done: a component
exists with its outbox event or not at all, and each update bumped the version exactly
once per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.helpers import eventually, make_project

from wis2l_core import Wis2l
from wis2l_core.errors import NotFound, Wis2lError

Call = Callable[[int], Awaitable[Any]]


async def turns_taken(call: Call, i: int) -> int:
    """How many loop turns ``call(i)`` takes when nobody cancels it."""
    task = asyncio.ensure_future(call(i))
    turns = 0
    while not task.done():
        await asyncio.sleep(0)
        turns += 1
    await task
    return turns


DENSE = 100
"""Turns swept one by one; past them, the sweep steps so as to try about SPARSE more."""
SPARSE = 150
HANG = 100_000
"""Turns after which a call that never finishes is a hang (the steps past the measured
length grow, so reaching it takes a few dozen tries, not a hundred thousand)."""


async def cancel_at_every_await(call: Call, length: int) -> tuple[int, int]:
    """Run ``call(i)`` cancelled after ``i`` loop turns, for every ``i`` up to ``DENSE``,
    then in steps up to ``length`` (the call's own length, measured uncancelled), then on
    until a call finishes before its cancellation: the sweep has passed every await, the
    commit's too. (Most turns are spent waiting for the server at one await, so a step
    of a few turns still lands in every phase.)

    A call can finish early (its server answered fast) and still be cancelled later on a
    slower run, so an early finish does not end the sweep. Returns how many points were
    tried and the last one. Past ``length`` the steps grow by a quarter each: a run can
    take far longer than the measured one (a cancellation before it may have cost the pool
    a connection, and making one takes hundreds of turns); fails if the call is still
    cancelled at ``HANG`` turns.
    """
    stride = max(1, (length - DENSE) // SPARSE)
    turns = tried = 0
    while turns <= max(HANG, 20 * length):
        task = asyncio.ensure_future(call(turns))
        for _ in range(turns):
            await asyncio.sleep(0)
        tried += 1
        if task.done():
            await task
            if turns >= length:
                return tried, turns
        else:
            task.cancel()
            await settle(task)
        if turns < DENSE:
            turns += 1
        elif turns < length:
            turns += stride
        else:
            turns += max(stride, turns // 4)
    raise AssertionError(f"the call was still running after {turns} turns")


async def settle(task: asyncio.Future[Any]) -> None:
    """Wait for a cancelled task; only cancellation (or a completed call) may come out."""
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def storm(call: Call, count: int, *, seed: int, twice: bool = False) -> None:
    """``count`` concurrent calls, each cancelled at a random moment (``twice``: again
    right after the first cancellation); every one must end in a result or cancellation."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(call(i)) for i in range(count)]
    for task in tasks:
        delay = rng.uniform(0, 0.03)
        loop.call_later(delay, task.cancel)
        if twice:
            loop.call_later(delay + rng.uniform(0, 0.003), task.cancel)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise AssertionError(f"a cancelled call raised {result!r}") from result


async def assert_pool_whole(wis: Wis2l) -> None:
    """Every connection is back, max_size borrows at once succeed, and each one works."""
    pool = wis.database.pool

    def idle() -> bool:
        stats = pool.get_stats()
        return stats["pool_available"] == stats["pool_size"] and not stats.get(
            "requests_waiting", 0
        )

    await eventually(idle, timeout=5)
    size = pool.max_size
    gate = asyncio.Event()
    held = 0

    async def borrow() -> int:
        nonlocal held
        async with asyncio.timeout(5), wis.database.connection() as conn:
            held += 1
            if held == size:
                gate.set()
            await gate.wait()  # all max_size connections are out at the same moment
            cur = await conn.execute("SELECT 41 + 1 AS n", prepare=True)
            row = await cur.fetchone()
            assert row is not None
            return int(row["n"])

    assert await asyncio.gather(*(borrow() for _ in range(size))) == [42] * size
    await eventually(idle, timeout=5)
    stats = pool.get_stats()
    assert stats["pool_size"] <= size


async def assert_no_half_writes(wis: Wis2l) -> None:
    orphans = await wis.database.fetch_val(
        "SELECT count(*) FROM components c WHERE NOT EXISTS (SELECT 1 FROM events e"
        " WHERE e.type = 'component.created' AND e.payload->>'component_id' = c.id::text)"
    )
    assert orphans == 0, "a component without its ComponentCreated event"
    ghosts = await wis.database.fetch_val(
        "SELECT count(*) FROM events e WHERE e.type = 'component.created' AND NOT EXISTS"
        " (SELECT 1 FROM components c WHERE e.payload->>'component_id' = c.id::text)"
    )
    assert ghosts == 0, "a ComponentCreated event without its component"
    mismatched = await wis.database.fetch_all(
        "SELECT c.id, c.version, (SELECT count(*) FROM events e WHERE e.type ="
        " 'component.updated' AND e.payload->>'component_id' = c.id::text) AS updates"
        " FROM components c WHERE c.version <> 1 + (SELECT count(*) FROM events e WHERE"
        " e.type = 'component.updated' AND e.payload->>'component_id' = c.id::text)"
    )
    assert mismatched == [], "an update without its event, or the reverse"


@pytest.fixture
async def calls(wis: Wis2l) -> dict[str, Call]:
    """Every public call that borrows a connection, as ``call(i)``."""
    pid = await make_project(wis)
    seeded = await wis.components.create(
        project_id=pid, name="Seed", language="gdscript", code="pass"
    )
    await wis.database.execute(
        "CREATE TABLE notes (component_id uuid PRIMARY KEY, body text NOT NULL)"
    )
    for i in range(12):  # enough rows for several pages
        await wis.components.create(project_id=pid, name=f"C{i}", language="lua", code="")

    async def find_by_id(i: int) -> Any:
        return await wis.components.find_by_id(seeded.id)

    async def pages(i: int) -> Any:
        page = await wis.components.find_by_project_id(pid, limit=3)
        while page.next_cursor is not None:
            page = await wis.components.find_by_project_id(pid, limit=3, after=page.next_cursor)
        return page

    async def create(i: int) -> Any:
        return await wis.components.create(
            project_id=pid, name=f"N{i}", language="python", code="print()"
        )

    async def update(i: int) -> Any:
        return await wis.components.update(seeded.id, code=f"print({i})")

    async def transaction(i: int) -> Any:
        async with wis.transaction() as tx:
            component = await tx.components.create(
                project_id=pid, name=f"T{i}", language="lua", code=""
            )
            await tx.execute(
                "INSERT INTO notes (component_id, body) VALUES (%s, %s)", (component.id, "x")
            )
            await tx.components.update(component.id, code="-- changed")
            return await tx.fetch_one("SELECT count(*) AS n FROM notes")

    async def raw_sql(i: int) -> Any:
        await wis.database.execute("UPDATE notes SET body = %(b)s WHERE false", {"b": str(i)})
        return await wis.database.fetch_all("SELECT id FROM components ORDER BY id LIMIT 5")

    async def connection(i: int) -> Any:
        async with wis.database.connection() as conn:
            await conn.execute("SELECT pg_sleep(0.001)")
            async with conn.transaction():
                await conn.execute("SELECT 1")

    return {
        "find_by_id": find_by_id,
        "pages": pages,
        "create": create,
        "update": update,
        "transaction": transaction,
        "raw_sql": raw_sql,
        "connection": connection,
    }


CALLS = ["find_by_id", "pages", "create", "update", "transaction", "raw_sql", "connection"]


@pytest.mark.slow  # about 200-300 cancellations per call, up to its end: 20-40 s in all
@pytest.mark.parametrize("name", CALLS)
async def test_cancelled_at_every_await_the_pool_stays_whole(
    wis: Wis2l, calls: dict[str, Call], name: str
) -> None:
    await calls[name](-1)  # warm: the pool is full and the statements are prepared
    length = max([await turns_taken(calls[name], -2 - i) for i in range(3)])
    tried, last = await cancel_at_every_await(calls[name], length)
    assert last >= length, f"{tried} points tried, up to turn {last} of {length}"
    await assert_pool_whole(wis)
    await assert_no_half_writes(wis)
    assert await calls[name](0) is not None or name == "connection"  # still works after


async def test_a_cancellation_storm_over_every_call_with_the_relay_running(
    wis: Wis2l, calls: dict[str, Call]
) -> None:
    relay = wis.relay

    async def relay_restarts() -> None:
        for _ in range(3):  # stopping the relay cancels it mid-pass
            await asyncio.sleep(0.01)
            await relay.stop(0)
            await relay.start()

    def mixed(i: int) -> Awaitable[Any]:
        return calls[CALLS[i % len(CALLS)]](i)

    await asyncio.gather(
        storm(mixed, 350, seed=11),
        storm(mixed, 150, seed=12, twice=True),
        relay_restarts(),
    )
    await assert_pool_whole(wis)
    await assert_no_half_writes(wis)

    # The relay survived its cancellations: every committed event reaches the stream.
    async def relayed() -> bool:
        return (await relay.backlog()).size == 0

    await eventually(relayed, timeout=10)
    # Transactions are all or nothing: a note exists exactly for the components made there.
    unmatched = await wis.database.fetch_val(
        "SELECT count(*) FROM components c FULL JOIN notes n ON n.component_id = c.id"
        " WHERE c.name LIKE 'T%%' AND n.component_id IS NULL OR c.id IS NULL"
    )
    assert unmatched == 0


async def test_a_transaction_cancelled_inside_its_block_rolls_back(wis: Wis2l) -> None:
    pid = await make_project(wis)
    made: list[uuid.UUID] = []
    entered = asyncio.Event()

    async def body() -> None:
        async with wis.transaction() as tx:
            component = await tx.components.create(
                project_id=pid, name="Gone", language="lua", code=""
            )
            made.append(component.id)
            entered.set()
            await asyncio.Event().wait()  # cancelled here, inside the open transaction

    task = asyncio.ensure_future(body())
    await entered.wait()
    task.cancel()
    await settle(task)
    assert await wis.components.find_by_id(made[0]) is None
    with pytest.raises(NotFound, match="no component with id"):
        await wis.components.update(made[0], code="x")
    await assert_pool_whole(wis)


async def test_the_fast_path_keeps_psycopg_pool_bookkeeping(wis: Wis2l) -> None:
    """An idle connection handed out without the lock is counted and comes back."""
    pool = wis.database.pool
    await eventually(lambda: pool.get_stats()["pool_available"] >= 1, timeout=5)
    before = pool.get_stats()
    conn = pool.take_idle()
    assert conn is not None
    assert pool.get_stats()["pool_available"] == before["pool_available"] - 1
    assert pool.put_idle(conn)
    after = pool.get_stats()
    assert after["pool_available"] == before["pool_available"]
    assert after["requests_num"] == before.get("requests_num", 0) + 1
    # A connection left inside a transaction is not taken back on the fast path.
    conn = pool.take_idle()
    assert conn is not None
    await conn.execute("BEGIN")
    assert not pool.put_idle(conn)
    await pool.putconn(conn)  # psycopg_pool rolls it back
    await assert_pool_whole(wis)


async def test_a_statement_cut_short_inside_a_transaction_is_never_committed(
    wis: Wis2l,
) -> None:
    """A timeout caught inside the block: the whole transaction rolls back, even the
    writes that finished before it, rather than committing a half-done statement."""
    pid = await make_project(wis)

    async def body() -> None:
        async with wis.transaction() as tx:
            await tx.components.create(project_id=pid, name="Whole", language="lua", code="")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0):
                    await tx.components.create(project_id=pid, name="Half", language="lua", code="")
            # the block goes on and ends normally, as if nothing happened

    with pytest.raises(Wis2lError, match="cancelled"):
        await body()
    assert (await wis.components.find_by_project_id(pid)).items == ()
    await assert_no_half_writes(wis)
    await assert_pool_whole(wis)
