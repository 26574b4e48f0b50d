"""``wis2l db seed``: idempotent sample data for the examples, the notebook and demos.

Everything goes through the repositories (so the seed also exercises them, and records
the same events a real app would), in one transaction under an advisory lock: two seeds
at once do not collide, and a failed seed leaves nothing behind. Rows are found by their
natural keys (e-mail, slug, component name, token name, build target, deployment
environment + version) before being created, so a second run changes nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from wis2l_core.config import Settings
from wis2l_core.db.errors import map_errors
from wis2l_core.db.pool import Database
from wis2l_core.db.repositories import Repositories
from wis2l_core.models import Build, BuildStatus, Deployment, DeploymentStatus, Project

__all__ = ["SeedReport", "seed", "seed_database"]

# pg_advisory_xact_lock key of the seed (any fixed bigint other than the migrator's).
LOCK_KEY = 0x1E6D_0A2C_5EED_0001
KINDS = ("users", "templates", "projects", "components", "tokens", "builds", "deployments")

USERS: tuple[dict[str, Any], ...] = (
    {"email": "ada@wis2l.dev", "name": "Ada Admin", "subject": "nocturna|seed-ada",
     "role": "admin"},
    {"email": "grace@wis2l.dev", "name": "Grace Developer", "subject": "nocturna|seed-grace"},
    {"email": "linus@wis2l.dev", "name": "Linus Viewer", "subject": "nocturna|seed-linus",
     "role": "viewer"},
)  # fmt: skip

TEMPLATES: tuple[dict[str, Any], ...] = (
    {"slug": "unity-2d-platformer", "name": "Unity 2D platformer", "engine": "unity",
     "description": "A side-scrolling platformer with a tilemap and a character controller.",
     "files": {"Assets/Scripts/PlayerController.cs": "public class PlayerController {}",
               "ProjectSettings/ProjectVersion.txt": "m_EditorVersion: 6000.0.23f1"}},
    {"slug": "godot-top-down", "name": "Godot top-down adventure", "engine": "godot",
     "description": "A top-down scene with a player, a camera and a TileMapLayer.",
     "files": {"project.godot": "config_version=5", "scenes/main.tscn": "[gd_scene format=3]"}},
    {"slug": "pico8-shmup", "name": "PICO-8 shoot 'em up", "engine": "pico8",
     "description": "A vertical shooter in 8192 tokens.",
     "files": {"shmup.p8": "pico-8 cartridge // http://www.pico-8.com\nversion 42"}},
    {"slug": "web-canvas-starter", "name": "Web canvas starter", "engine": "web",
     "description": "A game loop on an HTML canvas, in TypeScript.",
     "files": {"index.html": "<canvas id=game></canvas>",
               "src/main.ts": "requestAnimationFrame(loop)"}},
    {"slug": "love2d-puzzle", "name": "LÖVE puzzle", "engine": "love2d",
     "description": "A grid puzzle with tweened moves.",
     "files": {"main.lua": "function love.draw() end"}},
)  # fmt: skip

PROJECTS: tuple[dict[str, Any], ...] = (
    {"slug": "starfall", "name": "Starfall", "engine": "godot", "owner": "grace@wis2l.dev",
     "template": "godot-top-down", "description": "Catch falling stars before dawn.",
     "metadata": {"genre": "arcade", "players": 1},
     "components": [
         {"name": "PlayerMovement", "language": "gdscript", "model": "spark-code-1",
          "prompt": "8-way movement with acceleration", "experts": ["movement", "input"],
          "code": "extends CharacterBody2D\n\n@export var speed := 180.0\n"},
         {"name": "StarGlow", "language": "glsl", "model": "spark-shader-1",
          "prompt": "a soft pulsing glow", "experts": ["shaders"],
          "code": "void fragment() { COLOR.a *= 0.8 + 0.2 * sin(TIME); }\n"}],
     "tokens": [
         {"name": "color.sky", "category": "color", "group": "palette", "value": "#0b1d3a"},
         {"name": "color.star", "category": "color", "group": "palette", "value": "#ffd75e"},
         {"name": "spacing.tile", "category": "spacing", "value": {"px": 16}},
         {"name": "font.title", "category": "typography",
          "value": {"family": "Press Start 2P", "size": 24}}],
     "builds": [
         {"target": "linux", "status": "completed", "progress": 100,
          "artifacts": {"starfall.x86_64": {"bytes": 48_213_004}}},
         {"target": "windows", "status": "failed", "progress": 63,
          "log": "error: export template for Windows is missing\n"},
         {"target": "web", "status": "building", "progress": 40},
         {"target": "android", "status": "pending"}],
     "deployments": [
         {"environment": "staging", "version": "0.3.0", "build": "linux",
          "status": "completed", "url": "https://staging.wis2l.dev/starfall/0.3.0/"},
         {"environment": "production", "version": "0.3.0", "build": "linux",
          "status": "in_progress"}]},
    {"slug": "pixel-drift", "name": "Pixel Drift", "engine": "pico8", "owner": "ada@wis2l.dev",
     "template": "pico8-shmup", "description": "A tiny racer.", "metadata": {"jam": "lowrezjam"},
     "components": [
         {"name": "drift_physics", "language": "lua", "model": "spark-code-1",
          "prompt": "arcade drifting", "experts": ["physics"],
          "code": "function drift(car)\n  car.vx *= 0.96\nend\n"}],
     "tokens": [
         {"name": "color.road", "category": "color", "group": "pico8", "value": 5},
         {"name": "color.car", "category": "color", "group": "pico8", "value": 8}],
     "builds": [
         {"target": "pico8", "status": "completed", "progress": 100,
          "artifacts": {"pixel-drift.p8.png": {"bytes": 31_337}}}],
     "deployments": [
         {"environment": "staging", "version": "1.0.0", "build": "pico8", "status": "failed"}]},
    {"slug": "neon-runner", "name": "Neon Runner", "engine": "unity", "owner": "grace@wis2l.dev",
     "template": "unity-2d-platformer", "description": None, "metadata": {},
     "components": [
         {"name": "RunnerController", "language": "csharp", "model": "spark-code-1",
          "prompt": "an endless runner controller", "experts": ["movement"],
          "code": "public sealed class RunnerController : MonoBehaviour { }\n"}],
     "tokens": [{"name": "shadow.glow", "category": "shadow", "value": "0 0 12px #ff00ff"}],
     "builds": [{"target": "webgl", "status": "building", "progress": 75}],
     "deployments": [{"environment": "staging", "version": "0.1.0", "status": "pending"}]},
)  # fmt: skip


@attrs.define
class SeedReport:
    """How many rows of each kind the seed created, and how many were already there."""

    created: Counter[str] = attrs.field(factory=Counter)
    existing: Counter[str] = attrs.field(factory=Counter)

    def lines(self) -> list[str]:
        """One summary line per kind, e.g. ``users: 3 created, 0 already there``."""
        return [
            f"{kind}: {self.created[kind]} created, {self.existing[kind]} already there"
            for kind in KINDS
        ]

    def count(self, kind: str, created: bool) -> None:
        """Count one row of ``kind``."""
        (self.created if created else self.existing)[kind] += 1


async def seed_database(settings: Settings) -> SeedReport:
    """Seed the database of ``settings`` in one transaction (see the module docstring).

    Raises:
        ServiceUnavailable: the database cannot be reached.
        Wis2lError: a write was refused (the transaction is rolled back).
    """
    db = Database(attrs.evolve(settings, db_pool_min_size=1, db_pool_max_size=1))
    await db.open()
    try:
        async with db.connection() as conn:
            with map_errors():
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                    return await seed(Repositories(db, conn))
    finally:
        await db.close()


async def seed(repos: Repositories) -> SeedReport:
    """Create whatever sample rows are missing, through ``repos``; return the counts."""
    report = SeedReport()
    users = {}
    for fields in USERS:
        user = await repos.users.find_by_email(fields["email"])
        report.count("users", user is None)
        users[fields["email"]] = user or await repos.users.create(**fields)
    templates = {}
    for fields in TEMPLATES:
        template = await repos.templates.find_by_slug(fields["slug"])
        report.count("templates", template is None)
        templates[fields["slug"]] = template or await repos.templates.create(**fields)
    for spec in PROJECTS:
        project = await repos.projects.find_by_slug(spec["slug"])
        report.count("projects", project is None)
        if project is None:
            project = await repos.projects.create(
                owner_id=users[spec["owner"]].id,
                template_id=templates[spec["template"]].id,
                **{k: spec[k] for k in ("slug", "name", "engine", "description", "metadata")},
            )
        await _children(repos, project, spec, report)
    return report


async def _children(
    repos: Repositories, project: Project, spec: dict[str, Any], report: SeedReport
) -> None:
    components = {
        c.name for c in (await repos.components.find_by_project_id(project.id, limit=1000))
    }
    for fields in spec["components"]:
        report.count("components", fields["name"] not in components)
        if fields["name"] not in components:
            await repos.components.create(project_id=project.id, **fields)
    stored = await repos.tokens.find_all(project.id, limit=1000)
    tokens = {t.name: (t.category.value, t.group, t.value) for t in stored}
    for fields in spec["tokens"]:
        wanted = (fields["category"], fields.get("group"), fields["value"])
        same = tokens.get(fields["name"]) == wanted
        report.count("tokens", not same)
        if not same:
            await repos.tokens.upsert(project_id=project.id, **fields)
    builds = {b.target: b for b in await repos.builds.find_by_project_id(project.id, limit=1000)}
    for fields in spec["builds"]:
        report.count("builds", fields["target"] not in builds)
        if fields["target"] not in builds:
            builds[fields["target"]] = await _build(repos, project, fields)
    page = await repos.deployments.find_by_project_id(project.id, limit=1000)
    deployments = {(d.environment.value, d.version) for d in page}
    for fields in spec["deployments"]:
        key = (fields["environment"], fields["version"])
        report.count("deployments", key not in deployments)
        if key not in deployments:
            build = builds.get(fields.get("build", ""))
            await _deployment(repos, project, fields, build)


async def _build(repos: Repositories, project: Project, fields: dict[str, Any]) -> Build:
    """A build driven through its state machine to the wanted status."""
    build = await repos.builds.create(project_id=project.id, target=fields["target"])
    status = BuildStatus(fields["status"])
    if status is BuildStatus.PENDING:
        return build
    if status is not BuildStatus.FAILED or fields["progress"]:
        build = await repos.builds.update(
            build.id, status="building", log=f"building {fields['target']}\n"
        )
        if status is not BuildStatus.COMPLETED:
            build = await repos.builds.update(build.id, progress=fields["progress"])
    if status is BuildStatus.COMPLETED:
        build = await repos.builds.update(
            build.id, status=status, artifacts=fields["artifacts"], log="done\n"
        )
    elif status is BuildStatus.FAILED:
        build = await repos.builds.update(build.id, status=status, log=fields.get("log", ""))
    return build


async def _deployment(
    repos: Repositories, project: Project, fields: dict[str, Any], build: Build | None
) -> Deployment:
    """A deployment driven through its state machine to the wanted status."""
    deployment = await repos.deployments.create(
        project_id=project.id,
        environment=fields["environment"],
        version=fields["version"],
        build_id=None if build is None else build.id,
    )
    status = DeploymentStatus(fields["status"])
    if status in (DeploymentStatus.IN_PROGRESS, DeploymentStatus.COMPLETED):
        deployment = await repos.deployments.update(deployment.id, status="in_progress")
    if status in (DeploymentStatus.COMPLETED, DeploymentStatus.FAILED):
        deployment = await repos.deployments.update(
            deployment.id, status=status, url=fields.get("url")
        )
    return deployment
