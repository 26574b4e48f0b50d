"""WAYPOINT: a subscriber that prints deployments as they happen.

``wis.bus.subscribe`` runs a typed handler for ``DeploymentStarted``,
``DeploymentCompleted`` and ``DeploymentFailed`` on a durable JetStream consumer
(``deployment-watch``): the first run starts at the beginning of the stream, later runs
resume where the last one stopped, so nothing is missed while the watcher is down. Each
event type is its own consumer (``deployment-watch-deployment-started``, ...), pulled by
its own task: events of one type arrive in stream order, but nothing orders two
consumers, so a deployment's ``failed`` may print before its ``started`` (about one run in
three). The time printed first is when it happened. See docs/events.md, "Ordering".

By default the script also plays a demo while it watches: it deploys a build to staging
(which completes) and to production (which fails), and waits until the subscriber has
printed all four events::

    python examples/deployment_watch.py             # watch + demo, then exit
    python examples/deployment_watch.py --no-demo   # only watch, until Ctrl-C

Set DATABASE_URL / REDIS_URL / NATS_URL to use your servers, else an embedded stack runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from uuid import UUID

from _common import runtime

from wis2l_core import BuildStatus, DeploymentStatus, Engine, Environment, Wis2l
from wis2l_core.events import DeploymentCompleted, DeploymentFailed, DeploymentStarted

DeploymentEvent = DeploymentStarted | DeploymentCompleted | DeploymentFailed


def describe(event: DeploymentEvent) -> str:
    """One line per event: what happened, where, which version."""
    what = event.type.removeprefix("deployment.")
    line = f"{event.occurred_at:%H:%M:%S.%f}"[:-3]
    line += f" {what:<9} {event.environment:<10} v{event.version} ({event.deployment_id.hex[-8:]})"
    if isinstance(event, DeploymentCompleted) and event.url:
        line += f" -> {event.url}"
    return line


def watch(wis: Wis2l, only: set[UUID] | None, seen: asyncio.Queue[DeploymentEvent]) -> None:
    """Subscribe the printer (``only``: print just these projects' deployments)."""

    async def on_deployment(event: DeploymentEvent) -> None:
        if only is not None and event.project_id not in only:
            return
        print(f"event      {describe(event)}", flush=True)
        await seen.put(event)

    for event_type in (DeploymentStarted, DeploymentCompleted, DeploymentFailed):
        wis.bus.subscribe(event_type, on_deployment, durable="deployment-watch", concurrency=1)
    print(
        "watching   started, completed, failed: one consumer each, not ordered with each"
        " other (a failure may print before its start; the time is when it happened)",
        flush=True,
    )


async def demo(wis: Wis2l, seen: asyncio.Queue[DeploymentEvent], project_ids: set[UUID]) -> None:
    """Deploy one build to staging (completes) and production (fails); await 4 events."""
    stamp = int(time.time() * 1000)
    user = await wis.users.create(
        email=f"ops-{stamp}@example.com", name="Opal Ops", subject=f"nocturna|ops-{stamp}"
    )
    project = await wis.projects.create(
        owner_id=user.id, name="Tide Keeper", slug=f"tide-keeper-{stamp}", engine=Engine.WEB
    )
    project_ids.add(project.id)
    build = await wis.builds.create(project_id=project.id, target="web")
    await wis.builds.update(build.id, status=BuildStatus.BUILDING)
    build = await wis.builds.update(build.id, status=BuildStatus.COMPLETED)
    print(f"build      {build.target} {build.status} for {project.name}")

    staging = await wis.deployments.create(
        project_id=project.id, environment=Environment.STAGING, version="1.4.0", build_id=build.id
    )
    production = await wis.deployments.create(
        project_id=project.id, environment=Environment.PRODUCTION, version="1.4.0",
        build_id=build.id,
    )  # fmt: skip
    print(f"created    2 deployments of v1.4.0 ({staging.status})")
    for deployment in (staging, production):
        await wis.deployments.update(deployment.id, status=DeploymentStatus.IN_PROGRESS)
    staging = await wis.deployments.update(
        staging.id,
        status=DeploymentStatus.COMPLETED,
        url=f"https://staging.wis2l.example/{project.slug}",
    )
    production = await wis.deployments.update(production.id, status=DeploymentStatus.FAILED)
    print(f"moved      staging {staging.status}, production {production.status}")

    for _ in range(4):
        await asyncio.wait_for(seen.get(), timeout=15)
    print("watched    4 deployment events")


async def main(run_demo: bool) -> None:
    async with runtime() as wis:
        seen: asyncio.Queue[DeploymentEvent] = asyncio.Queue()
        project_ids: set[UUID] = set()
        # Demo: only this run's project (the stream may hold other deployments).
        watch(wis, project_ids if run_demo else None, seen)
        if run_demo:
            await demo(wis, seen, project_ids)
        else:
            print("watching deployments (Ctrl-C to stop)", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-demo", action="store_true", help="only watch, until Ctrl-C")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the runtime stops on the way out
        asyncio.run(main(not args.no_demo))
