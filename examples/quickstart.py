"""The whole WIS2L flow in one script.

A user signs in, starts a Godot project from a template, SPARK generates a component,
IGNIS builds it (pending -> building -> completed), WAYPOINT deploys it to staging, and
the audit log and health report show what happened.

Run it with no set-up at all (an embedded PostgreSQL, Valkey and NATS are started and
stopped for you)::

    python examples/quickstart.py

or against your own servers: set DATABASE_URL / REDIS_URL / NATS_URL first.
"""

from __future__ import annotations

import asyncio
import time

from _common import runtime

from wis2l_core import BuildStatus, DeploymentStatus, Engine, Language
from wis2l_core.events import BuildCompleted, DeploymentCompleted, DomainEvent


async def main() -> None:
    async with runtime() as wis:
        # identity: a nocturnaID.org user (the JWT `sub` maps to the user row)
        user = await wis.users.find_by_subject("nocturna|ada")
        if user is None:
            user = await wis.users.create(
                email="ada@example.com", name="Ada", subject="nocturna|ada"
            )
        print(f"user       {user.name} <{user.email}> role={user.role}")

        # IGNITION: a template, and a project started from it
        template = await wis.templates.find_by_slug("godot-platformer")
        if template is None:
            template = await wis.templates.create(
                slug="godot-platformer",
                name="Godot 2D platformer",
                engine=Engine.GODOT,
                files={"project.godot": '[application]\nconfig/name="Platformer"\n'},
            )
        slug = f"sky-jumper-{int(time.time())}"
        project = await wis.projects.create(
            owner_id=user.id,
            name="Sky Jumper",
            slug=slug,
            engine=Engine.GODOT,
            template_id=template.id,
            metadata={"genre": "platformer"},
        )
        print(f"project    {project.name} ({project.slug}) on {project.engine}")

        # Events reach JetStream through the outbox relay once their transaction commits;
        # a typed subscriber receives them (here: this project's completions).
        received: asyncio.Queue[DomainEvent] = asyncio.Queue()

        async def on_completed(event: BuildCompleted | DeploymentCompleted) -> None:
            if event.project_id == project.id:
                await received.put(event)

        wis.bus.subscribe(BuildCompleted, on_completed, durable="quickstart")
        wis.bus.subscribe(DeploymentCompleted, on_completed, durable="quickstart")

        # SPARK: an AI-generated component (its ComponentCreated event is in the outbox)
        component = await wis.components.create(
            project_id=project.id,
            name="PlayerController",
            language=Language.GDSCRIPT,
            code="extends CharacterBody2D\n\nfunc _physics_process(delta):\n\tpass\n",
            prompt="a player controller with double jump",
            model="spark-1",
            experts=("movement", "physics"),
        )
        component = await wis.components.update(
            component.id, code=component.code + "\n# double jump\n"
        )
        print(f"component  {component.name} v{component.version} ({component.language})")

        # IGNIS: a build through its states
        build = await wis.builds.create(project_id=project.id, target="html5")
        build = await wis.builds.update(build.id, status=BuildStatus.BUILDING, log="compiling\n")
        build = await wis.builds.update(build.id, progress=60, log="exporting\n")
        build = await wis.builds.update(
            build.id,
            status=BuildStatus.COMPLETED,
            artifacts={"html5": {"path": "builds/sky-jumper.zip", "bytes": 1_482_113}},
        )
        print(f"build      {build.target}: {build.status} {build.progress}%")

        # WAYPOINT: deploy the build to staging
        deployment = await wis.deployments.create(
            project_id=project.id, environment="staging", version="0.1.0", build_id=build.id
        )
        deployment = await wis.deployments.update(
            deployment.id, status=DeploymentStatus.IN_PROGRESS
        )
        deployment = await wis.deployments.update(
            deployment.id,
            status=DeploymentStatus.COMPLETED,
            url=f"https://staging.wis2l.example/{project.slug}",
        )
        print(f"deployment {deployment.environment} v{deployment.version}: {deployment.url}")

        for _ in range(2):
            event = await asyncio.wait_for(received.get(), timeout=15)
            print(f"received   {event.subject(wis.settings.namespace)} (id {event.id})")

        # the audit log: every write above recorded its event in the same transaction
        page = await wis.events.find_by_project_id(project.id)
        print(f"events     {len(page.items)} recorded for the project:")
        for row in page.items:
            print(f"           - {row.type:<22} ({row.subsystem})")

        # health: every service checked at once, each within its timeout
        report = await wis.health()
        checks = ", ".join(
            f"{name} {'up' if check.healthy else 'DOWN'} {check.latency_ms:.1f} ms"
            for name, check in report.checks.items()
        )
        print(f"health     {report.status} ({checks})")


if __name__ == "__main__":
    asyncio.run(main())
