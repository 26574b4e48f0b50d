"""IGNIS: a build worker, and a second process watching its events.

The worker takes every pending build (``wis.builds.find_all(status="pending")``), moves
each one ``pending -> building``, reports progress, and completes it. Each of those
writes records its event in the same transaction; the outbox relay publishes them to
JetStream, where a *separate process* (this script with ``--watch``) subscribes to
``BuildStarted``, ``BuildProgress`` and ``BuildCompleted`` and prints them.

One command shows both sides (it queues three demo builds, starts the watcher as a
subprocess pointed at the same servers, then works)::

    python examples/build_worker.py

or against your own servers: set DATABASE_URL / REDIS_URL / NATS_URL first. To run the
watcher on its own (it prints every build event until Ctrl-C)::

    python examples/build_worker.py --watch
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from uuid import UUID

from _common import runtime, server_env

from wis2l_core import Build, BuildStatus, Engine, InvalidTransition, Settings, Wis2l
from wis2l_core.events import BuildCompleted, BuildProgress, BuildStarted
from wis2l_core.notebook import all_pages

TARGETS = ("linux", "windows", "web")
STEPS = (25, 50, 75)
WATCH_TIMEOUT = 30.0
# What the watcher waits for per build: each event type, each progress step.
EXPECTED = {"build.started", "build.completed", *(f"build.progress:{p}" for p in STEPS)}


def short(build_id: UUID) -> str:
    """The last 8 hex digits of an id (UUIDv7's first digits are the time)."""
    return build_id.hex[-8:]


# -- the watcher (a second process) ---------------------------------------------------------


async def watch(build_ids: set[UUID]) -> int:
    """Print build events; with ``build_ids``, exit once each of them has completed.

    Events of one type arrive in order; the three types are three consumers, so a
    build's last progress may arrive after its completion.
    """
    # The watcher only reads events: no migrations, no default subscribers of its own.
    async with Wis2l(Settings.from_env(), seed_subscribers=False) as wis:
        seen: dict[UUID, set[str]] = {build_id: set() for build_id in build_ids}
        done = asyncio.Event()

        async def on_event(event: BuildStarted | BuildProgress | BuildCompleted) -> None:
            if build_ids and event.build_id not in build_ids:
                return  # an older build of the stream's history
            if isinstance(event, BuildStarted):
                detail = event.target
            elif isinstance(event, BuildProgress):
                detail = f"{event.progress}%"
            else:
                detail = f"{event.target} artifacts={sorted(event.artifacts)}"
            print(f"{event.type:<16}{short(event.build_id)} {detail}", flush=True)
            kind = (
                f"{event.type}:{event.progress}" if isinstance(event, BuildProgress) else event.type
            )
            seen.setdefault(event.build_id, set()).add(kind)
            # Each event type has its own consumer, so they may arrive in any order: wait
            # until every expected event of every build is in.
            if build_ids and all(kinds >= EXPECTED for kinds in seen.values()):
                done.set()

        # A durable consumer: it starts at the beginning of the stream the first time,
        # then resumes where it left off, so no event is missed while the watcher is down.
        for event_type in (BuildStarted, BuildProgress, BuildCompleted):
            wis.bus.subscribe(event_type, on_event, durable="build-watcher", concurrency=1)
        print(f"watching {len(build_ids) or 'all'} builds", flush=True)
        if not build_ids:
            await asyncio.Event().wait()  # until Ctrl-C
        try:
            await asyncio.wait_for(done.wait(), WATCH_TIMEOUT)
        except TimeoutError:
            print("timed out waiting for the builds to complete", flush=True)
            return 1
        print(f"all {len(build_ids)} builds completed", flush=True)
    return 0


# -- the worker -----------------------------------------------------------------------------


async def queue_demo_builds(wis: Wis2l) -> list[Build]:
    """A demo user and project with one pending build per target."""
    stamp = int(time.time() * 1000)
    user = await wis.users.create(
        email=f"worker-{stamp}@example.com", name="Build Bot", subject=f"nocturna|bot-{stamp}"
    )
    project = await wis.projects.create(
        owner_id=user.id, name="Moon Miner", slug=f"moon-miner-{stamp}", engine=Engine.BEVY
    )
    return [await wis.builds.create(project_id=project.id, target=t) for t in TARGETS]


async def work(wis: Wis2l, build: Build) -> Build | None:
    """Take one pending build through building -> progress -> completed."""
    try:
        build = await wis.builds.update(
            build.id, status=BuildStatus.BUILDING, log=f"building {build.target}\n"
        )
    except InvalidTransition:  # another worker took it first
        print(f"worker  {short(build.id)} taken by another worker")
        return None
    print(f"worker  {short(build.id)} {build.target}: building")
    for step in STEPS:
        await asyncio.sleep(0.05)  # the real work
        build = await wis.builds.update(build.id, progress=step, log=f"{step}%\n")
        print(f"worker  {short(build.id)} {build.target}: {build.progress}%")
    build = await wis.builds.update(
        build.id,
        status=BuildStatus.COMPLETED,
        artifacts={build.target: {"path": f"builds/{build.target}.zip", "bytes": 1024}},
    )
    print(f"worker  {short(build.id)} {build.target}: {build.status} {build.progress}%")
    return build


async def relay(stream: asyncio.StreamReader) -> None:
    """Print the watcher's lines as they come, prefixed."""
    while line := await stream.readline():
        print(f"watcher | {line.decode().rstrip()}", flush=True)


async def main() -> int:
    async with runtime() as wis:
        queued = await queue_demo_builds(wis)
        print(f"queued  {len(queued)} builds: {', '.join(b.target for b in queued)}")
        pending = await all_pages(wis.builds.find_all, status=BuildStatus.PENDING)
        print(f"worker  took {len(pending)} pending builds")

        watcher = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--watch",
            *(str(b.id) for b in pending),
            env=server_env(wis.settings),
            stdout=asyncio.subprocess.PIPE,
        )
        assert watcher.stdout is not None
        print(f"watcher | {(await watcher.stdout.readline()).decode().rstrip()}")
        printer = asyncio.create_task(relay(watcher.stdout))

        completed = [b for b in [await work(wis, b) for b in pending] if b is not None]
        code = await asyncio.wait_for(watcher.wait(), WATCH_TIMEOUT + 15)
        await printer
        print(f"worker  completed {len(completed)} builds; watcher exited {code}")
        return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watch", action="store_true", help="only watch build events")
    parser.add_argument("builds", nargs="*", type=UUID, help="with --watch: exit once done")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(asyncio.run(watch(set(args.builds)) if args.watch else main()))
