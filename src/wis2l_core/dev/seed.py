"""``wis2l db seed``: idempotent, repeatable sample data for the examples, the notebook and demos.

Six projects on six engines, with components and design tokens, and a history to chart:
:data:`HISTORY_DAYS` days of builds (durations drawn per engine around a typical one:
PICO-8 builds take seconds, Godot a few minutes, Unity and Unreal many; about one in eight
fails, early or late) and of deployments (to staging most days, to production now and then,
of a version staging took; most complete, some fail), then today's state: builds
completed, failed, running and queued, deployments completed, failed, in progress and
pending. The draws come from a fixed random seed, so every run plans the same data,
placed relative to the day it runs.

Every row is written through the repositories, so the seed records the same events a real
app would, in one transaction under an advisory lock: two seeds at once do not collide,
and a failed seed leaves nothing behind. Rows are found by their natural keys before being
created (e-mail, slug, component name, token name, the n-th build of a project's target,
deployment environment + version), so a second run changes nothing. The rows it creates
are then placed in the past by one ``UPDATE`` per table: builds, deployments and their
events get the planned times (``created_at``, ``started_at``, ``finished_at``, the events'
``occurred_at``), and users, templates and projects predate the history.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import attrs

from wis2l_core.config import Settings
from wis2l_core.db.errors import map_errors
from wis2l_core.db.locks import SEED
from wis2l_core.db.pool import Database
from wis2l_core.db.repositories import Transaction
from wis2l_core.models import Build, BuildStatus, Deployment, DeploymentStatus, Page

__all__ = ["HISTORY_DAYS", "SeedReport", "seed", "seed_database"]

KINDS = ("users", "templates", "projects", "components", "tokens", "builds", "deployments")
HISTORY_DAYS = 10
"""The days of build and deployment history before today (today's state comes on top)."""
RANDOM_SEED = 20_260_611

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

# Per project: "history" draws builds of its targets on each past day (how many: a range),
# deploys to staging on a day with a completed build (chance), and promotes a version
# staging took to production (chance); history versions are "<release>.<n>". "builds" and
# "deployments" are today's state, "ago" minutes before the seed runs.
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
     "history": {"targets": ("linux", "windows", "web"), "per_day": (1, 3),
                 "staging": 0.6, "production": 0.3, "release": "0.2"},
     "builds": [
         {"target": "linux", "status": "completed", "progress": 100, "ago": 170,
          "artifacts": {"starfall.x86_64": {"bytes": 48_213_004}}},
         {"target": "windows", "status": "failed", "progress": 63, "ago": 120,
          "log": "error: export template for Windows is missing\n"},
         {"target": "web", "status": "building", "progress": 40, "ago": 3},
         {"target": "android", "status": "pending", "ago": 1}],
     "deployments": [
         {"environment": "staging", "version": "0.3.0", "build": "linux", "ago": 150,
          "status": "completed", "url": "https://staging.wis2l.dev/starfall/0.3.0/"},
         {"environment": "production", "version": "0.3.0", "build": "linux", "ago": 2,
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
     "history": {"targets": ("pico8", "web"), "per_day": (2, 5),
                 "staging": 0.7, "production": 0.35, "release": "0.9"},
     "builds": [
         {"target": "pico8", "status": "completed", "progress": 100, "ago": 40,
          "artifacts": {"pixel-drift.p8.png": {"bytes": 31_337}}}],
     "deployments": [
         {"environment": "staging", "version": "1.0.0", "build": "pico8", "ago": 30,
          "status": "failed"}]},
    {"slug": "neon-runner", "name": "Neon Runner", "engine": "unity", "owner": "grace@wis2l.dev",
     "template": "unity-2d-platformer", "description": None, "metadata": {},
     "components": [
         {"name": "RunnerController", "language": "csharp", "model": "spark-code-1",
          "prompt": "an endless runner controller", "experts": ["movement"],
          "code": "public sealed class RunnerController : MonoBehaviour { }\n"}],
     "tokens": [{"name": "shadow.glow", "category": "shadow", "value": "0 0 12px #ff00ff"}],
     "history": {"targets": ("webgl", "android"), "per_day": (0, 3),
                 "staging": 0.5, "production": 0.25, "release": "0.0"},
     "builds": [{"target": "webgl", "status": "building", "progress": 75, "ago": 10}],
     "deployments": [{"environment": "staging", "version": "0.1.0", "status": "pending",
                      "ago": 1}]},
    {"slug": "tiny-dungeon", "name": "Tiny Dungeon", "engine": "love2d", "owner": "ada@wis2l.dev",
     "template": "love2d-puzzle", "description": "Push crates, find the stairs.",
     "metadata": {"genre": "puzzle"},
     "components": [
         {"name": "grid_moves", "language": "lua", "model": "spark-code-1",
          "prompt": "tweened moves on a grid", "experts": ["movement"],
          "code": "function move(e, dx, dy)\n  e.tx, e.ty = e.x + dx, e.y + dy\nend\n"}],
     "tokens": [{"name": "color.wall", "category": "color", "group": "palette",
                 "value": "#3b2f2f"}],
     "history": {"targets": ("linux", "windows"), "per_day": (1, 3),
                 "staging": 0.4, "production": 0.2, "release": "0.4"},
     "builds": [{"target": "linux", "status": "completed", "progress": 100, "ago": 90,
                 "artifacts": {"tiny-dungeon.love": {"bytes": 2_402_112}}}],
     "deployments": []},
    {"slug": "orbit", "name": "Orbit", "engine": "web", "owner": "grace@wis2l.dev",
     "template": "web-canvas-starter", "description": "One-button gravity slingshot.",
     "metadata": {"genre": "casual"}, "components": [], "tokens": [],
     "history": {"targets": ("web",), "per_day": (1, 3),
                 "staging": 0.6, "production": 0.3, "release": "1.1"},
     "builds": [], "deployments": []},
    {"slug": "iron-keep", "name": "Iron Keep", "engine": "unreal", "owner": "grace@wis2l.dev",
     "template": None, "description": "A castle siege in first person.",
     "metadata": {"genre": "action"}, "components": [], "tokens": [],
     "history": {"targets": ("windows", "linux"), "per_day": (0, 2),
                 "staging": 0.35, "production": 0.15, "release": "0.7"},
     "builds": [{"target": "windows", "status": "failed", "progress": 88, "ago": 60,
                 "log": "error: out of disk space while cooking content\n"}],
     "deployments": []},
)  # fmt: skip


@attrs.frozen
class EngineProfile:
    """How builds of an engine behave: a typical duration, its spread and a failure rate.

    Durations are lognormal around ``median`` seconds (``spread`` is the sigma of their
    logarithm): most builds take about the median, a few much longer.
    """

    median: float
    spread: float
    failure_rate: float


ENGINES: dict[str, EngineProfile] = {
    "pico8": EngineProfile(median=8, spread=0.35, failure_rate=0.06),
    "love2d": EngineProfile(median=25, spread=0.4, failure_rate=0.1),
    "web": EngineProfile(median=70, spread=0.4, failure_rate=0.1),
    "godot": EngineProfile(median=200, spread=0.35, failure_rate=0.12),
    "unity": EngineProfile(median=600, spread=0.3, failure_rate=0.18),
    "unreal": EngineProfile(median=1500, spread=0.25, failure_rate=0.2),
}
"""The build behaviour of each seeded engine."""

BUILD_ERRORS = (
    "error: shader compilation failed",
    "error: asset import timed out",
    "error: missing export template",
    "error: test suite failed (3 of 212)",
    "error: out of memory while packing textures",
)


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


@attrs.define(eq=False)
class _Build:
    """A planned build: where it ends up and when each step happens."""

    slug: str
    target: str
    status: BuildStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: int = 0
    artifacts: dict[str, Any] = attrs.Factory(dict)
    log: str = ""
    row: Build | None = None  # the stored build, once found or created
    new: bool = False


@attrs.define(eq=False)
class _Deployment:
    """A planned deployment: where it ends up and when each step happens."""

    slug: str
    environment: str
    version: str
    status: DeploymentStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    build: _Build | None = None
    url: str | None = None
    row: Deployment | None = None
    new: bool = False


async def seed_database(settings: Settings) -> SeedReport:
    """Seed the database of ``settings`` in one transaction (see the module docstring).

    Args:
        settings: the database to seed (``database_url``); a one-connection pool is used.

    Returns:
        The rows created and found, per kind.

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
                    return await seed(Transaction(db, conn))
    finally:
        await db.close()


async def seed(tx: Transaction) -> SeedReport:
    """Create whatever sample rows are missing, inside ``tx``; return the counts.

    ``async with wis.transaction() as tx: await seed(tx)`` seeds through a running
    runtime; the seed's writes commit with the transaction.

    Args:
        tx: an open transaction (``wis.transaction()``).

    Returns:
        The rows created and found, per kind.

    Raises:
        Wis2lError: a write was refused (roll the transaction back).
    """
    await tx.execute("SELECT pg_advisory_xact_lock(%s)", (SEED,))
    now: datetime = await tx.fetch_val("SELECT statement_timestamp()")
    report = SeedReport()
    made: dict[str, list[UUID]] = defaultdict(list)  # table -> rows created now
    users = {}
    for fields in USERS:
        user = await tx.users.find_by_email(fields["email"])
        report.count("users", user is None)
        if user is None:
            user = await tx.users.create(**fields)
            made["users"].append(user.id)
        users[fields["email"]] = user
    templates = {}
    for fields in TEMPLATES:
        template = await tx.templates.find_by_slug(fields["slug"])
        report.count("templates", template is None)
        if template is None:
            template = await tx.templates.create(**fields)
            made["templates"].append(template.id)
        templates[fields["slug"]] = template
    projects: dict[str, UUID] = {}
    for spec in PROJECTS:
        project = await tx.projects.find_by_slug(spec["slug"])
        report.count("projects", project is None)
        if project is None:
            template = templates.get(spec["template"] or "")
            project = await tx.projects.create(
                owner_id=users[spec["owner"]].id,
                template_id=None if template is None else template.id,
                **{k: spec[k] for k in ("slug", "name", "engine", "description", "metadata")},
            )
            made["projects"].append(project.id)
        projects[spec["slug"]] = project.id
        await _components_and_tokens(tx, project.id, spec, report)
    builds, deployments = _plan(now)
    await _find(tx, projects, builds, deployments, report)
    await _run(tx, projects, builds, deployments)
    await _backdate(tx, now, made, builds, deployments)
    return report


async def _components_and_tokens(
    tx: Transaction, project_id: UUID, spec: dict[str, Any], report: SeedReport
) -> None:
    components = {c.name for c in await _every(tx.components.find_by_project_id, project_id)}
    for fields in spec["components"]:
        report.count("components", fields["name"] not in components)
        if fields["name"] not in components:
            await tx.components.create(project_id=project_id, **fields)
    stored = await _every(tx.tokens.find_all, project_id)
    tokens = {t.name: (t.category.value, t.group, t.value) for t in stored}
    for fields in spec["tokens"]:
        wanted = (fields["category"], fields.get("group"), fields["value"])
        same = tokens.get(fields["name"]) == wanted
        report.count("tokens", not same)
        if not same:
            await tx.tokens.upsert(project_id=project_id, **fields)


T = TypeVar("T")


async def _every(list_call: Callable[..., Awaitable[Page[T]]], project_id: UUID) -> list[T]:
    """Every item of a project's list call, page after page."""
    items: list[T] = []
    after = None
    while True:
        page = await list_call(project_id, limit=1000, after=after)
        items += page.items
        if page.next_cursor is None:
            return items
        after = page.next_cursor


# -- the plan (no I/O): the same draws every run ------------------------------------------


def _plan(now: datetime) -> tuple[list[_Build], list[_Deployment]]:
    """Every build and deployment of the seed, oldest first, placed relative to ``now``."""
    rng = random.Random(RANDOM_SEED)  # noqa: S311 (demo data, not secrets)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    builds: list[_Build] = []
    deployments: list[_Deployment] = []
    for spec in PROJECTS:
        engine, history = ENGINES[spec["engine"]], spec["history"]
        staged: _Deployment | None = None  # the newest version staging took
        for days_ago in range(HISTORY_DAYS, 0, -1):
            day = today - timedelta(days=days_ago)
            hours = sorted(rng.uniform(8, 19) for _ in range(rng.randint(*history["per_day"])))
            made = [_past_build(rng, spec, engine, day + timedelta(hours=h)) for h in hours]
            builds += made
            done = [b for b in made if b.status is BuildStatus.COMPLETED]
            if done and rng.random() < history["staging"]:
                assert done[-1].finished_at is not None
                at = done[-1].finished_at + timedelta(minutes=rng.uniform(5, 45))
                n = sum(d.slug == spec["slug"] and d.environment == "staging" for d in deployments)
                version = f"{history['release']}.{n + 1}"
                deployment = _past_deployment(
                    rng, spec, environment="staging", version=version, at=at, build=done[-1]
                )
                deployments.append(deployment)
                if deployment.status is DeploymentStatus.COMPLETED:
                    staged = deployment
            if staged is not None and rng.random() < history["production"]:
                assert staged.finished_at is not None
                at = max(
                    day + timedelta(hours=rng.uniform(16.5, 18.5)),
                    staged.finished_at + timedelta(minutes=rng.uniform(20, 90)),
                )
                deployments.append(
                    _past_deployment(
                        rng,
                        spec,
                        environment="production",
                        version=staged.version,
                        at=at,
                        build=staged.build,
                    )
                )
                staged = None
        for fields in spec["builds"]:
            builds.append(_current_build(rng, spec, engine, fields, now))
        for fields in spec["deployments"]:
            deployments.append(_current_deployment(rng, spec, fields, now, builds))
    builds.sort(key=lambda b: b.created_at)
    deployments.sort(key=lambda d: d.created_at)
    return builds, deployments


def _duration(rng: random.Random, engine: EngineProfile) -> timedelta:
    return timedelta(seconds=rng.lognormvariate(math.log(engine.median), engine.spread))


def _past_build(
    rng: random.Random, spec: dict[str, Any], engine: EngineProfile, at: datetime
) -> _Build:
    """A finished build queued at ``at``: it waits, runs, and completes or fails part-way."""
    target = rng.choice(spec["history"]["targets"])
    started = at + timedelta(seconds=min(rng.lognormvariate(math.log(20), 0.8), 600))
    duration = _duration(rng, engine)
    build = _Build(spec["slug"], target, BuildStatus.COMPLETED, at, started, progress=100)
    if rng.random() < engine.failure_rate:
        share = rng.uniform(0.05, 0.95)  # some fail at once, some near the end
        build.status, build.progress = BuildStatus.FAILED, max(1, int(share * 100))
        build.finished_at = started + duration * share
        build.log = f"{rng.choice(BUILD_ERRORS)}\n"
    else:
        build.finished_at = started + duration
        size = int(rng.lognormvariate(math.log(engine.median * 60_000), 0.2))
        build.artifacts = {f"{spec['slug']}-{target}.zip": {"bytes": size}}
    return build


def _current_build(
    rng: random.Random,
    spec: dict[str, Any],
    engine: EngineProfile,
    fields: dict[str, Any],
    now: datetime,
) -> _Build:
    """Today's build of ``fields``: queued ``ago`` minutes before ``now``."""
    status = BuildStatus(fields["status"])
    build = _Build(spec["slug"], fields["target"], status, now - timedelta(minutes=fields["ago"]))
    build.progress = fields.get("progress", 0)
    build.artifacts, build.log = fields.get("artifacts", {}), fields.get("log", "")
    if status is not BuildStatus.PENDING:
        build.started_at = build.created_at + timedelta(seconds=rng.uniform(5, 40))
    if status in (BuildStatus.COMPLETED, BuildStatus.FAILED):
        assert build.started_at is not None
        ran = _duration(rng, engine) * (build.progress / 100)
        build.finished_at = min(build.started_at + ran, now - timedelta(seconds=1))
    return build


def _past_deployment(
    rng: random.Random,
    spec: dict[str, Any],
    *,
    environment: str,
    version: str,
    at: datetime,
    build: _Build | None,
) -> _Deployment:
    """A finished deployment started at ``at``: production takes longer, fails less."""
    production = environment == "production"
    failed = rng.random() < (0.08 if production else 0.15)
    took = rng.lognormvariate(math.log(120 if production else 45), 0.4)
    deployment = _Deployment(
        spec["slug"],
        environment,
        version,
        DeploymentStatus.FAILED if failed else DeploymentStatus.COMPLETED,
        at,
        started_at=at + timedelta(seconds=rng.uniform(1, 10)),
        build=build,
    )
    assert deployment.started_at is not None
    deployment.finished_at = deployment.started_at + timedelta(
        seconds=took * (rng.uniform(0.2, 1) if failed else 1)
    )
    if not failed:
        deployment.url = f"https://{environment}.wis2l.dev/{spec['slug']}/{version}/"
    return deployment


def _current_deployment(
    rng: random.Random,
    spec: dict[str, Any],
    fields: dict[str, Any],
    now: datetime,
    builds: Sequence[_Build],
) -> _Deployment:
    """Today's deployment of ``fields``, of the project's newest build of its target."""
    status = DeploymentStatus(fields["status"])
    at = now - timedelta(minutes=fields["ago"])
    build = next(
        (b for b in reversed(builds) if b.slug == spec["slug"] and b.target == fields.get("build")),
        None,
    )
    deployment = _Deployment(
        spec["slug"], fields["environment"], fields["version"], status, at, build=build
    )
    deployment.url = fields.get("url")
    if status is not DeploymentStatus.PENDING:
        deployment.started_at = at + timedelta(seconds=rng.uniform(1, 10))
    if status in (DeploymentStatus.COMPLETED, DeploymentStatus.FAILED):
        assert deployment.started_at is not None
        deployment.finished_at = deployment.started_at + timedelta(seconds=rng.uniform(30, 120))
    return deployment


# -- writing it ---------------------------------------------------------------------------


async def _find(
    tx: Transaction,
    projects: dict[str, UUID],
    builds: list[_Build],
    deployments: list[_Deployment],
    report: SeedReport,
) -> None:
    """Match the plan with the stored rows: the n-th build of a project's target, and a
    project's deployment of an environment and version."""
    stored_builds: dict[tuple[str, str], list[Build]] = defaultdict(list)
    stored_deployments: dict[tuple[str, str, str], Deployment] = {}
    for slug, project_id in projects.items():
        for row in await _every(tx.builds.find_by_project_id, project_id):
            stored_builds[slug, row.target].append(row)
        for found in await _every(tx.deployments.find_by_project_id, project_id):
            stored_deployments[slug, found.environment.value, found.version] = found
    seen: Counter[tuple[str, str]] = Counter()
    for build in builds:
        stored = stored_builds[build.slug, build.target]
        n = seen[build.slug, build.target]
        seen[build.slug, build.target] += 1
        build.row = stored[n] if n < len(stored) else None
        build.new = build.row is None
        report.count("builds", build.new)
    for deployment in deployments:
        key = (deployment.slug, deployment.environment, deployment.version)
        deployment.row = stored_deployments.get(key)
        deployment.new = deployment.row is None
        report.count("deployments", deployment.new)


async def _run(
    tx: Transaction,
    projects: dict[str, UUID],
    builds: list[_Build],
    deployments: list[_Deployment],
) -> None:
    """Drive the new rows through their state machines, every step in time order (so ids,
    time-ordered UUIDs, follow the history too)."""
    steps: list[tuple[datetime, int, _Build | _Deployment]] = []
    items: list[_Build | _Deployment] = [*builds, *deployments]
    for item in items:
        if item.new:
            times = (item.created_at, item.started_at, item.finished_at)
            steps += [(at, step, item) for step, at in enumerate(times) if at is not None]
    steps.sort(key=lambda s: (s[0], s[1]))
    for _, step, item in steps:
        if isinstance(item, _Build):
            await _build_step(tx, projects, item, step)
        else:
            await _deployment_step(tx, projects, item, step)


async def _build_step(tx: Transaction, projects: dict[str, UUID], build: _Build, step: int) -> None:
    if step == 0:
        build.row = await tx.builds.create(project_id=projects[build.slug], target=build.target)
        return
    assert build.row is not None
    if step == 1:
        progress = build.progress if build.status is BuildStatus.BUILDING else 0
        build.row = await tx.builds.update(
            build.row.id, status="building", progress=progress, log=f"building {build.target}\n"
        )
    elif build.status is BuildStatus.COMPLETED:
        build.row = await tx.builds.update(
            build.row.id, status="completed", artifacts=build.artifacts, log="done\n"
        )
    else:
        build.row = await tx.builds.update(
            build.row.id, status="failed", progress=build.progress, log=build.log
        )


async def _deployment_step(
    tx: Transaction, projects: dict[str, UUID], deployment: _Deployment, step: int
) -> None:
    if step == 0:
        build = None if deployment.build is None else deployment.build.row
        deployment.row = await tx.deployments.create(
            project_id=projects[deployment.slug],
            environment=deployment.environment,
            version=deployment.version,
            build_id=None if build is None else build.id,
        )
        return
    assert deployment.row is not None
    if step == 1:
        deployment.row = await tx.deployments.update(deployment.row.id, status="in_progress")
    else:
        deployment.row = await tx.deployments.update(
            deployment.row.id, status=deployment.status, url=deployment.url
        )


# One statement per table. Under session_replication_role = replica (when the role may set
# it) the updated_at trigger does not fire, so updated_at gets the planned time of the
# last change; otherwise the trigger stamps the seed's own time, as for any real change.
_BACKDATE_BUILDS = """
UPDATE builds AS b
SET created_at = v.created_at, started_at = v.started_at, finished_at = v.finished_at,
    updated_at = v.updated_at
FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[],
            %s::timestamptz[]) AS v(id, created_at, started_at, finished_at, updated_at)
WHERE b.id = v.id
"""
_BACKDATE_DEPLOYMENTS = """
UPDATE deployments AS d
SET created_at = v.created_at, updated_at = v.updated_at
FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[]) AS v(id, created_at, updated_at)
WHERE d.id = v.id
"""
# The events of a build or deployment name it in their payload; occurred_at moves too.
_BACKDATE_EVENTS = """
UPDATE events AS e
SET created_at = v.at, updated_at = v.at,
    payload = jsonb_set(e.payload, '{occurred_at}', to_jsonb(v.occurred_at))
FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::timestamptz[], %s::text[])
     AS v(project_id, type, row_id, at, occurred_at)
WHERE e.project_id = v.project_id AND e.type = v.type
  AND coalesce(e.payload->>'deployment_id', e.payload->>'build_id') = v.row_id
"""
_BACKDATE_SETUP = """
WITH u AS (
    UPDATE users SET created_at = %(users_at)s, updated_at = %(users_at)s
    WHERE id = ANY(%(users)s::uuid[])
), t AS (
    UPDATE templates SET created_at = %(users_at)s, updated_at = %(users_at)s
    WHERE id = ANY(%(templates)s::uuid[])
)
UPDATE projects SET created_at = %(projects_at)s, updated_at = %(projects_at)s
WHERE id = ANY(%(projects)s::uuid[])
"""


async def _backdate(
    tx: Transaction,
    now: datetime,
    made: dict[str, list[UUID]],
    builds: list[_Build],
    deployments: list[_Deployment],
) -> None:
    """Give the rows created now their planned times (see the module docstring)."""
    new_builds = [b for b in builds if b.new and b.row is not None]
    new_deployments = [d for d in deployments if d.new and d.row is not None]
    if not (new_builds or new_deployments or any(made.values())):
        return
    events: list[tuple[UUID, str, UUID, datetime]] = []
    for b in new_builds:
        assert b.row is not None
        if b.started_at is not None:
            events.append((b.row.project_id, "build.started", b.row.id, b.started_at))
        if b.finished_at is not None:
            events.append((b.row.project_id, f"build.{b.status.value}", b.row.id, b.finished_at))
    for d in new_deployments:
        assert d.row is not None
        if d.started_at is not None:
            events.append((d.row.project_id, "deployment.started", d.row.id, d.started_at))
        if d.finished_at is not None:
            kind = f"deployment.{d.status.value}"
            events.append((d.row.project_id, kind, d.row.id, d.finished_at))
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=HISTORY_DAYS)
    replica = await tx.fetch_val("SELECT current_setting('is_superuser') = 'on'")
    if replica:
        await tx.execute("SET LOCAL session_replication_role = replica")
    await tx.execute(
        _BACKDATE_BUILDS,
        (
            [b.row.id for b in new_builds if b.row],
            [b.created_at for b in new_builds],
            [b.started_at for b in new_builds],
            [b.finished_at for b in new_builds],
            [b.finished_at or b.started_at or b.created_at for b in new_builds],
        ),
    )
    await tx.execute(
        _BACKDATE_DEPLOYMENTS,
        (
            [d.row.id for d in new_deployments if d.row],
            [d.created_at for d in new_deployments],
            [d.finished_at or d.started_at or d.created_at for d in new_deployments],
        ),
    )
    await tx.execute(
        _BACKDATE_EVENTS,
        (
            [e[0] for e in events],
            [e[1] for e in events],
            [str(e[2]) for e in events],
            [e[3] for e in events],
            [e[3].astimezone(UTC).isoformat() for e in events],
        ),
    )
    await tx.execute(
        _BACKDATE_SETUP,
        {
            "users": made["users"],
            "templates": made["templates"],
            "projects": made["projects"],
            "users_at": start - timedelta(days=3),
            "projects_at": start - timedelta(days=1),
        },
    )
    if replica:
        await tx.execute("SET LOCAL session_replication_role = origin")
