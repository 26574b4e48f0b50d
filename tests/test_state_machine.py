"""A Hypothesis state machine over projects, components and builds against an in-memory model.

The machine drives a real runtime on a database of its own, and checks after every step
that the database holds exactly what the model says: the rows (read back through the
paged lists), each component's version, each build's status, progress, artifacts, logs and
timestamps, how many events of each type were recorded, and each build's own events in order.
Transactions are exercised both ways: committed ones apply their writes and events,
rolled-back ones (an exception inside ``wis.transaction()``) leave no trace.

Builds follow the state machine of ``wis2l_core.db.builds``, written out again here from its
docstrings (not imported, so a change there fails this test): ``builds.update`` is expected
to raise ``ValidationError`` (bad input before any SQL, or a progress on ``pending ->
failed``), ``NotFound`` or ``InvalidTransition`` exactly when :class:`Model` says so, and
then to have written nothing (the rows, ``updated_at`` included, and the events are
compared after every step). An accepted call that changes nothing keeps ``updated_at``;
a component update to the code it has makes no version and no event.
``probe_build`` tries every status on a live build, each in a rolled-back transaction.

Adding an entity (deployments next; builds are the worked example): give :class:`Model` its
dict and its part of ``delete_project``'s cascade, add a Bundle and rules to
:class:`ProjectsMachine`, and extend ``_check_rows`` / ``TX_ACTIONS``. Rules never write
around the model: every write goes through ``self.run(...)`` and is mirrored in
``self.model`` only once it is known to have committed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tests.helpers import has

from wis2l_core import (
    Build,
    BuildStatus,
    Conflict,
    Engine,
    InvalidTransition,
    Language,
    NotFound,
    Settings,
    ValidationError,
)
from wis2l_core.runtime import Repositories, Transaction, Wis2l
from wis2l_core.sentinel import UNSET, Unset
from wis2l_core.testing.plugin import drop_stream

T = TypeVar("T")

SLUGS = st.sampled_from(["alpha", "beta", "gamma", "delta", "pong", "tetris-2"])
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
# A few fixed values, so that updates to the code a component already has happen often.
CODE = st.sampled_from(["", "x = 1"]) | st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30
)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of ``choices``, picked with the given weights."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda i: pool[i])


@attrs.frozen
class Bad:
    """An artifacts value ``builds.update`` must refuse (not a JSON object)."""

    value: object


# Targets: mostly valid (1..100 characters, no NUL); the last three are not.
TARGETS = st.sampled_from(
    ["webgl", "windows", "linux", "android", "ünï-cödé", "t" * 100, "", "t" * 101, "web\x00gl"]
)
STATUSES: st.SearchStrategy[BuildStatus | str | Unset] = st.sampled_from(
    [UNSET, UNSET, UNSET, *BuildStatus, "building", "failed", "done"]
)
PROGRESS: st.SearchStrategy[int | Unset] = weighted(
    (4, st.just(UNSET)), (5, st.integers(0, 100) | st.just(100)), (1, st.sampled_from([-1, 101]))
)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(-1e6, 1e6, allow_nan=False)
    | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
)
JSON_KEY = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
ARTIFACT_MAPS = st.dictionaries(
    JSON_KEY,
    st.recursive(
        JSON_LEAF,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_KEY, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
ARTIFACTS: st.SearchStrategy[dict[str, Any] | Bad | Unset] = weighted(
    (6, st.just(UNSET)),
    (3, ARTIFACT_MAPS),
    (1, st.sampled_from([["a.wasm"], {"size": float("nan")}, {"k": "a\x00b"}, {1: "x"}]).map(Bad)),
)
LOG_LINES = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20
) | st.sampled_from(["step 1/3\n", "warning: ok\r\n", "'); DROP TABLE builds; --"])
LOGS: st.SearchStrategy[str | None] = weighted(
    (4, st.none()), (5, LOG_LINES), (1, st.just("bad\x00log"))
)


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


# -- the model ----------------------------------------------------------------------------


@attrs.define
class ProjectModel:
    slug: str
    name: str
    engine: Engine


@attrs.define
class ComponentModel:
    project_id: UUID
    name: str
    code: str
    version: int = 1

    def apply_code(self, code: str, events: Counter[str]) -> None:
        """Mirror ``components.update(code=...)``: the code stored already is no change."""
        if code != self.code:
            self.code, self.version = code, self.version + 1
            events["component.updated"] += 1


@attrs.define
class BuildModel:
    project_id: UUID
    target: str
    status: BuildStatus = BuildStatus.PENDING
    progress: int = 0
    artifacts: dict[str, Any] = attrs.field(factory=dict)
    logs: str = ""
    # Set by the database: taken from the row that set them, then they must never change.
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    def row(self) -> tuple[Any, ...]:
        return (
            self.project_id,
            self.target,
            self.status,
            self.progress,
            self.artifacts,
            self.logs,
            self.started_at,
            self.finished_at,
            self.updated_at,
        )


def _build_row(b: Build) -> tuple[Any, ...]:
    return (
        b.project_id,
        b.target,
        b.status,
        b.progress,
        b.artifacts,
        b.logs,
        b.started_at,
        b.finished_at,
        b.updated_at,
    )


# The build state machine as builds.py documents it (deliberately not imported from there).
P, B, C, F = BuildStatus.PENDING, BuildStatus.BUILDING, BuildStatus.COMPLETED, BuildStatus.FAILED
BUILD_MOVES: dict[BuildStatus, frozenset[BuildStatus]] = {
    P: frozenset({B, F}),
    B: frozenset({C, F}),
    C: frozenset(),
    F: frozenset(),
}
FINAL = frozenset({C, F})
STATUS_EVENTS = {B: "build.started", C: "build.completed", F: "build.failed"}


@attrs.frozen
class BuildUpdate:
    """The keywords of one ``builds.update`` call (``UNSET``/``None``: left out)."""

    status: BuildStatus | str | Unset = UNSET
    progress: int | Unset = UNSET
    artifacts: dict[str, Any] | Bad | Unset = UNSET
    log: str | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not isinstance(self.status, Unset):
            out["status"] = self.status
        if not isinstance(self.progress, Unset):
            out["progress"] = self.progress
        if isinstance(self.artifacts, Bad):
            out["artifacts"] = self.artifacts.value
        elif not isinstance(self.artifacts, Unset):
            out["artifacts"] = self.artifacts
        if self.log is not None:
            out["log"] = self.log
        return out

    def target_status(self) -> BuildStatus | None:
        """The status asked for (``None``: none; call only once :meth:`bad_fields` is empty)."""
        return None if isinstance(self.status, Unset) else BuildStatus(self.status)

    def bad_fields(self) -> set[str]:
        """The fields ``update`` must refuse with a ``ValidationError`` before any SQL."""
        bad: set[str] = set()
        status: BuildStatus | None = None
        if not isinstance(self.status, Unset):
            if self.status in set(BuildStatus):
                status = BuildStatus(self.status)
            else:
                bad.add("status")
        if not isinstance(self.progress, Unset):
            out_of_range = isinstance(self.progress, bool) or not 0 <= self.progress <= 100
            # completed means 100; a pending build has no progress
            if out_of_range or (status is C and self.progress != 100) or status is P:
                bad.add("progress")
        if isinstance(self.artifacts, Bad):
            bad.add("artifacts")
        if self.log is not None and "\x00" in self.log:
            bad.add("log")
        return bad


def refusal(
    build: BuildModel, status: BuildStatus | None, progress: int | Unset
) -> type[ValidationError] | None:
    """The error ``update`` must raise for ``build`` once its input is valid, or ``None``.

    A status must be a move of :data:`BUILD_MOVES`: the status the build already has is
    refused too (moving to ``building`` is an exclusive claim), with ``InvalidTransition``.
    A progress equal to the stored one is no change, accepted anywhere; another one
    without a status needs ``building`` (else ``InvalidTransition``), and a build that
    never started fails at its progress 0 (``pending -> failed`` with another progress is
    a ``ValidationError``). Artifacts and logs go anywhere.
    """
    new_progress = not isinstance(progress, Unset) and progress != build.progress
    if status is None:
        return InvalidTransition if new_progress and build.status is not B else None
    if status not in BUILD_MOVES[build.status]:
        return InvalidTransition
    if status is F and build.status is P and new_progress:
        return ValidationError
    return None


def legal_updates(status: BuildStatus) -> st.SearchStrategy[BuildUpdate]:
    """Updates the model accepts for a build in ``status``: what a build worker would send.

    Weighted towards moving on, so that builds get to ``completed`` within a run.
    """
    notes: dict[str, st.SearchStrategy[Any]] = {
        "artifacts": weighted((2, st.just(UNSET)), (1, ARTIFACT_MAPS)),
        "log": st.none() | LOG_LINES,
    }
    percent = st.integers(0, 100)
    if status is P:
        return weighted(
            (
                4,
                st.builds(
                    BuildUpdate, status=st.just(B), progress=st.just(UNSET) | percent, **notes
                ),
            ),
            (
                1,
                st.builds(
                    BuildUpdate, status=st.just(F), progress=st.sampled_from([UNSET, 0]), **notes
                ),
            ),
        )
    if status is B:
        return weighted(
            (3, st.builds(BuildUpdate, progress=percent, **notes)),
            (
                2,
                st.builds(
                    BuildUpdate, status=st.just(C), progress=st.sampled_from([UNSET, 100]), **notes
                ),
            ),
            (
                1,
                st.builds(
                    BuildUpdate, status=st.just(F), progress=st.just(UNSET) | percent, **notes
                ),
            ),
        )
    return st.builds(BuildUpdate, **notes)  # a finished build still takes artifacts and logs


@attrs.define
class Model:
    """What the database should hold; copied for a transaction, swapped in on commit."""

    projects: dict[UUID, ProjectModel] = attrs.field(factory=dict)
    components: dict[UUID, ComponentModel] = attrs.field(factory=dict)
    builds: dict[UUID, BuildModel] = attrs.field(factory=dict)
    events: Counter[str] = attrs.field(factory=Counter)
    # Each build's events in order (payloads without id/occurred_at); they outlive the build.
    build_events: dict[UUID, list[dict[str, Any]]] = attrs.field(factory=dict)

    def slug_taken(self, slug: str, by: UUID | None = None) -> bool:
        return any(p.slug == slug and pid != by for pid, p in self.projects.items())

    def delete_project(self, pid: UUID) -> None:
        """Delete a project and cascade to its children (events stay)."""
        del self.projects[pid]
        for cid in [c for c, m in self.components.items() if m.project_id == pid]:
            del self.components[cid]
        for bid in [b for b, m in self.builds.items() if m.project_id == pid]:
            del self.builds[bid]

    def add_build(self, made: Build) -> None:
        """Mirror a build ``builds.create`` returned (no event for a create)."""
        expected = BuildModel(
            project_id=made.project_id, target=made.target, updated_at=made.updated_at
        )
        assert _build_row(made) == expected.row()
        self.builds[made.id] = expected

    def apply_update(self, bid: UUID, update: BuildUpdate, made: Build) -> None:
        """Mirror an accepted ``builds.update`` and check the row it returned."""
        build = self.builds[bid]
        before, before_progress = build.status, build.progress
        before_row = build.row()
        status = update.target_status()
        if status is not None:
            build.status = status
        if status is C:
            build.progress = 100
        elif not isinstance(update.progress, Unset):
            build.progress = update.progress
        if isinstance(update.artifacts, dict):
            build.artifacts = copy.deepcopy(update.artifacts)
        build.logs += update.log or ""
        if status is B:  # only ever from pending
            assert made.started_at is not None
            build.started_at = made.started_at
        if status in FINAL:
            assert made.finished_at is not None
            build.finished_at = made.finished_at
        if build.row()[:-1] == before_row[:-1]:
            # Nothing changed (no keywords, or the stored values): updated_at stays.
            assert made.updated_at == build.updated_at
        else:
            assert build.updated_at is not None
            assert made.updated_at > build.updated_at
            build.updated_at = made.updated_at
        assert _build_row(made) == build.row()
        assert made.updated_at >= made.created_at
        # Stamped by the statement that set them: never before the build was created.
        for stamp in (build.started_at, build.finished_at):
            assert stamp is None or stamp >= made.created_at
        if build.started_at is not None and build.finished_at is not None:
            assert build.started_at <= build.finished_at

        detail: dict[str, Any]
        if build.status is not before:
            kind = STATUS_EVENTS[build.status]
            detail = {"target": build.target}
            if build.status is C:
                detail["artifacts"] = copy.deepcopy(build.artifacts)
        elif build.progress != before_progress:
            kind, detail = "build.progress", {"progress": build.progress}
        else:
            return
        self.events[kind] += 1
        self.build_events.setdefault(bid, []).append(
            {"type": kind, "project_id": str(build.project_id), "build_id": str(bid), **detail}
        )


# -- the machine --------------------------------------------------------------------------


class ProjectsMachine(RuleBasedStateMachine):
    """Projects, components and builds through the public API, mirrored in :class:`Model`."""

    projects = Bundle("projects")
    components = Bundle("components")
    builds = Bundle("builds")

    def __init__(self, runner: asyncio.Runner, wis: Wis2l) -> None:
        super().__init__()
        self.runner = runner
        self.wis = wis
        self.model = Model()
        self.serial = itertools.count()
        self.owner: UUID | None = None

    def run(self, coro: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await coro

        return self.runner.run(wrap())

    @initialize(target=projects)
    def fresh_database(self) -> UUID:
        # One database per test; every machine run starts from empty tables, then one
        # project with one pending build, so the build rules have work from the first step.
        self.run(_truncate(self.wis))
        user = self.run(self.wis.users.create(email="sm@example.com", name="SM", subject="sm"))
        self.owner = user.id
        pid = self.run(self._create_project(self.wis, "seed", "Seed", Engine.GODOT))
        self.model.projects[pid] = ProjectModel(slug="seed", name="Seed", engine=Engine.GODOT)
        self.model.add_build(self.run(self.wis.builds.create(project_id=pid, target="webgl")))
        return pid

    # -- projects ---------------------------------------------------------------------

    @rule(target=projects, slug=SLUGS, name=NAMES, engine=st.sampled_from(list(Engine)))
    def create_project(self, slug: str, name: str, engine: Engine) -> UUID:
        if self.model.slug_taken(slug):
            with pytest.raises(Conflict) as info:
                self.run(self._create_project(self.wis, slug, name, engine))
            assert info.value.field == "slug"
            # Still return an id so the bundle can hold a project that does not exist.
            return UUID(int=next(self.serial))
        made = self.run(self._create_project(self.wis, slug, name, engine))
        self.model.projects[made] = ProjectModel(slug=slug, name=name, engine=engine)
        return made

    async def _create_project(self, repos: Any, slug: str, name: str, engine: Engine) -> UUID:
        assert self.owner is not None
        made = await repos.projects.create(owner_id=self.owner, name=name, slug=slug, engine=engine)
        return made.id  # type: ignore[no-any-return]

    @rule(pid=projects, slug=st.none() | SLUGS, name=st.none() | NAMES)
    def update_project(self, pid: UUID, slug: str | None, name: str | None) -> None:
        changes: dict[str, Any] = {}
        if slug is not None:
            changes["slug"] = slug
        if name is not None:
            changes["name"] = name
        current = self.model.projects.get(pid)
        if current is None:
            with pytest.raises(NotFound, match="no project with id"):
                self.run(self.wis.projects.update(pid, **changes))
            return
        if slug is not None and self.model.slug_taken(slug, by=pid):
            with pytest.raises(Conflict, check=has(field="slug")):
                self.run(self.wis.projects.update(pid, **changes))
            return
        expected = (slug or current.slug, name or current.name)
        updated = self.run(self.wis.projects.update(pid, **changes))
        assert (updated.slug, updated.name) == expected
        current.slug, current.name = expected

    @rule(pid=consumes(projects))
    def delete_project(self, pid: UUID) -> None:
        existed = pid in self.model.projects
        assert self.run(self.wis.projects.delete(pid)) is existed
        if existed:
            self.model.delete_project(pid)

    # -- components -------------------------------------------------------------------

    @rule(target=components, pid=projects, name=NAMES, code=CODE)
    def create_component(self, pid: UUID, name: str, code: str) -> UUID:
        if pid not in self.model.projects:
            with pytest.raises(NotFound, match=r"^project_id: the referenced row"):
                self.run(self._create_component(self.wis, pid, name, code))
            return UUID(int=next(self.serial))
        cid = self.run(self._create_component(self.wis, pid, name, code))
        self.model.components[cid] = ComponentModel(project_id=pid, name=name, code=code)
        self.model.events["component.created"] += 1
        return cid

    @staticmethod
    async def _create_component(repos: Any, pid: UUID, name: str, code: str) -> UUID:
        made = await repos.components.create(
            project_id=pid, name=name, language=Language.GDSCRIPT, code=code
        )
        return made.id  # type: ignore[no-any-return]

    @rule(cid=components, code=CODE)
    def update_component(self, cid: UUID, code: str) -> None:
        current = self.model.components.get(cid)
        if current is None:
            with pytest.raises(NotFound, match="no component with id"):
                self.run(self.wis.components.update(cid, code=code))
            return
        updated = self.run(self.wis.components.update(cid, code=code))
        current.apply_code(code, self.model.events)
        assert (updated.code, updated.version) == (code, current.version)

    @rule(cid=consumes(components))
    def delete_component(self, cid: UUID) -> None:
        existed = cid in self.model.components
        assert self.run(self.wis.components.delete(cid)) is existed
        if existed:
            del self.model.components[cid]
            self.model.events["component.deleted"] += 1

    # -- builds -----------------------------------------------------------------------

    def _unfinished(self) -> list[UUID]:
        return sorted(bid for bid, m in self.model.builds.items() if m.status not in FINAL)

    def _pick_build(self, data: st.DataObject) -> UUID:
        """A live build; half the time an unfinished one (finished builds pile up)."""
        pool = self._unfinished()
        if not pool or data.draw(st.booleans()):
            pool = sorted(self.model.builds)
        return data.draw(st.sampled_from(pool))

    @rule(target=builds, pid=projects, build_target=TARGETS)
    def create_build(self, pid: UUID, build_target: str) -> UUID:
        valid = 1 <= len(build_target) <= 100 and "\x00" not in build_target
        if not valid or pid not in self.model.projects:
            with pytest.raises((ValidationError, NotFound)) as info:
                self.run(self.wis.builds.create(project_id=pid, target=build_target))
            if valid:
                assert type(info.value) is NotFound
            else:
                assert type(info.value) is ValidationError
                assert info.value.field == "target"
            return UUID(int=next(self.serial))
        made = self.run(self.wis.builds.create(project_id=pid, target=build_target))
        self.model.add_build(made)
        return made.id

    @rule(
        bid=builds,
        status=STATUSES,
        progress=PROGRESS,
        artifacts=ARTIFACTS,
        log=LOGS,
    )
    def update_build(
        self,
        bid: UUID,
        status: BuildStatus | str | Unset,
        progress: int | Unset,
        artifacts: dict[str, Any] | Bad | Unset,
        log: str | None,
    ) -> None:
        """Any update, valid or not, of any build (even one that never existed)."""
        update = BuildUpdate(status=status, progress=progress, artifacts=artifacts, log=log)
        self.run(_update_build(self.wis, self.model, bid, update))

    @precondition(lambda self: bool(self.model.builds))
    @rule(data=st.data(), status=st.sampled_from(BuildStatus) | st.just(UNSET), log=LOGS)
    def move_build(self, data: st.DataObject, status: BuildStatus | Unset, log: str | None) -> None:
        """Any status (and maybe a progress) for a live build: moves it must refuse, too."""
        bid = self._pick_build(data)
        progress = data.draw(st.just(UNSET) | st.integers(0, 100) | st.just(100))
        update = BuildUpdate(status=status, progress=progress, log=log)
        self.run(_update_build(self.wis, self.model, bid, update))

    @precondition(lambda self: bool(self._unfinished()))
    @rule(data=st.data())
    def advance_build(self, data: st.DataObject) -> None:
        """What a build worker does to an unfinished build: a move its state machine allows."""
        bid = data.draw(st.sampled_from(self._unfinished()))
        update = data.draw(legal_updates(self.model.builds[bid].status))
        self.run(_update_build(self.wis, self.model, bid, update))

    @precondition(lambda self: bool(self.model.builds))
    @rule(data=st.data(), percent=st.integers(0, 100))
    def probe_build(self, data: st.DataObject, percent: int) -> None:
        """Every status, with and without a progress, on one live build, each rolled back.

        Each call runs in a transaction of its own that is then rolled back, so each must do
        exactly what the model says: the whole transition table, from whatever status the
        build has reached, and moves the model allows are tried, not only refused ones.
        """
        bid = self._pick_build(data)
        for status in [UNSET, *BuildStatus]:
            for progress in (UNSET, percent):
                shadow = copy.deepcopy(self.model)
                update = BuildUpdate(status=status, progress=progress, log=f"probe {status}\n")

                async def attempt(shadow: Model = shadow, update: BuildUpdate = update) -> None:
                    async with self.wis.transaction() as tx:
                        await _update_build(tx, shadow, bid, update)
                        raise Rollback

                with pytest.raises(Rollback):
                    self.run(attempt())

    @rule(pid=projects, bid=builds, status=st.sampled_from(BuildStatus))
    def list_builds(self, pid: UUID, bid: UUID, status: BuildStatus) -> None:
        """The per-project and per-status lists and ``find_by_id`` agree with the model."""
        self.run(self._check_lists(pid, bid, status))

    async def _check_lists(self, pid: UUID, bid: UUID, status: BuildStatus) -> None:
        builds = self.model.builds
        mine = await _walk(
            lambda after: self.wis.builds.find_by_project_id(pid, limit=2, after=after)
        )
        assert [b.id for b in mine] == sorted(b for b, m in builds.items() if m.project_id == pid)
        in_status = await _walk(
            lambda after: self.wis.builds.find_all(status=status, limit=2, after=after)
        )
        assert [b.id for b in in_status] == sorted(
            b for b, m in builds.items() if m.status is status
        )
        found = await self.wis.builds.find_by_id(bid)
        if bid in builds:
            assert found is not None
            assert _build_row(found) == builds[bid].row()
        else:
            assert found is None

    # -- transactions -----------------------------------------------------------------

    @rule(data=st.data(), commit=st.booleans())
    def transaction(self, data: st.DataObject, commit: bool) -> None:
        """A few valid writes in one transaction, then commit or roll back."""
        shadow = copy.deepcopy(self.model)
        steps = data.draw(st.lists(st.sampled_from(sorted(TX_ACTIONS)), min_size=1, max_size=4))

        async def work() -> None:
            async with self.wis.transaction() as tx:
                for step in steps:
                    await TX_ACTIONS[step](self, tx, shadow, data)
                if not commit:
                    raise Rollback

        if commit:
            self.run(work())
            self.model = shadow
        else:
            with pytest.raises(Rollback):
                self.run(work())

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def database_matches_model(self) -> None:
        if self.owner is None:  # before initialize
            return
        self.run(self._check_rows())

    async def _check_rows(self) -> None:
        projects = await _walk(lambda after: self.wis.projects.find_all(limit=3, after=after))
        assert {p.id: (p.slug, p.name, p.engine) for p in projects} == {
            pid: (m.slug, m.name, m.engine) for pid, m in self.model.projects.items()
        }
        assert [p.id for p in projects] == sorted(p.id for p in projects)
        components = await _walk(lambda after: self.wis.components.find_all(limit=4, after=after))
        assert {c.id: (c.project_id, c.name, c.code, c.version) for c in components} == {
            cid: (m.project_id, m.name, m.code, m.version)
            for cid, m in self.model.components.items()
        }
        builds = await _walk(lambda after: self.wis.builds.find_all(limit=5, after=after))
        assert {b.id: _build_row(b) for b in builds} == {
            bid: m.row() for bid, m in self.model.builds.items()
        }
        async with self.wis.database.pool.connection() as conn:
            cur = await conn.execute("SELECT type, project_id, payload FROM events ORDER BY seq")
            events = await cur.fetchall()
        assert Counter(r["type"] for r in events) == +self.model.events
        per_build: dict[UUID, list[dict[str, Any]]] = {}
        for row in events:
            if not row["type"].startswith("build."):
                continue
            payload = {k: v for k, v in row["payload"].items() if k not in ("id", "occurred_at")}
            per_build.setdefault(UUID(payload["build_id"]), []).append(payload)
            # The audit log outlives its project: project_id is NULL once it is deleted.
            pid = UUID(payload["project_id"])
            assert row["project_id"] == (pid if pid in self.model.projects else None)
        assert per_build == self.model.build_events


async def _update_build(repos: Repositories, model: Model, bid: UUID, update: BuildUpdate) -> None:
    """Call ``builds.update``, check it does what ``model`` predicts, mirror it if it wrote."""
    kwargs = update.kwargs()
    bad = update.bad_fields()
    build = model.builds.get(bid)
    status = None if bad else update.target_status()
    expected: type[Exception] | None = None
    if bad:
        expected = ValidationError
    elif build is None:
        expected = NotFound
    else:
        expected = refusal(build, status, update.progress)
    if expected is None:
        made = await repos.builds.update(bid, **kwargs)
        model.apply_update(bid, update, made)
        return
    with pytest.raises((ValidationError, NotFound)) as info:
        await repos.builds.update(bid, **kwargs)
    error = info.value
    assert type(error) is expected, (expected, error)
    if isinstance(error, InvalidTransition):
        assert build is not None
        requested = (status or build.status).value
        assert (error.field, error.current, error.requested) == (
            "status",
            build.status.value,
            requested,
        )
    elif isinstance(error, ValidationError):
        # Bad input names its field; the one refusal after SQL is the progress of a
        # build that never started.
        assert error.field in (bad or {"progress"}), (error.field, bad)


# Writes a transaction may make; each is valid for the shadow model it updates.
TxAction = Callable[[ProjectsMachine, Transaction, Model, st.DataObject], Awaitable[None]]


async def _tx_create_project(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    slug = f"tx-{next(m.serial)}"
    pid = await m._create_project(tx, slug, "in tx", Engine.WEB)
    shadow.projects[pid] = ProjectModel(slug=slug, name="in tx", engine=Engine.WEB)


async def _tx_create_component(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.projects:
        return
    pid = data.draw(st.sampled_from(sorted(shadow.projects)))
    code = data.draw(CODE)
    cid = await m._create_component(tx, pid, "tx component", code)
    shadow.components[cid] = ComponentModel(project_id=pid, name="tx component", code=code)
    shadow.events["component.created"] += 1


async def _tx_update_component(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.components:
        return
    cid = data.draw(st.sampled_from(sorted(shadow.components)))
    code = data.draw(CODE)
    updated = await tx.components.update(cid, code=code)
    current = shadow.components[cid]
    current.apply_code(code, shadow.events)
    assert updated.version == current.version


async def _tx_delete_project(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.projects:
        return
    pid = data.draw(st.sampled_from(sorted(shadow.projects)))
    assert await tx.projects.delete(pid) is True
    shadow.delete_project(pid)


async def _tx_create_build(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.projects:
        return
    pid = data.draw(st.sampled_from(sorted(shadow.projects)))
    shadow.add_build(await tx.builds.create(project_id=pid, target="tx-target"))


async def _tx_advance_build(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.builds:
        return
    bid = data.draw(st.sampled_from(sorted(shadow.builds)))
    await _update_build(tx, shadow, bid, data.draw(legal_updates(shadow.builds[bid].status)))


async def _tx_poke_build(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    """Any update, so refused ones happen inside transactions too (and must not spoil them)."""
    if not shadow.builds:
        return
    bid = data.draw(st.sampled_from(sorted(shadow.builds)))
    update = data.draw(
        st.builds(BuildUpdate, status=STATUSES, progress=PROGRESS, artifacts=ARTIFACTS, log=LOGS)
    )
    await _update_build(tx, shadow, bid, update)


TX_ACTIONS: dict[str, TxAction] = {
    "create_project": _tx_create_project,
    "create_component": _tx_create_component,
    "update_component": _tx_update_component,
    "delete_project": _tx_delete_project,
    "create_build": _tx_create_build,
    "advance_build": _tx_advance_build,
    "poke_build": _tx_poke_build,
}


async def _walk(fetch: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    seen: list[Any] = []
    after = None
    while True:
        page = await fetch(after)
        seen.extend(page)
        if (after := page.next_cursor) is None:
            return seen


async def _truncate(wis: Wis2l) -> None:
    # DELETE, not TRUNCATE: on these few rows it is ~10x faster (TRUNCATE swaps files), and
    # it runs before every example. Users cascade to projects and everything under them.
    async with wis.database.pool.connection() as conn:
        await conn.execute("DELETE FROM events; DELETE FROM users; DELETE FROM templates")
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM projects) + (SELECT count(*) FROM components)"
            " + (SELECT count(*) FROM design_tokens) + (SELECT count(*) FROM builds)"
            " + (SELECT count(*) FROM deployments) AS n"
        )
        row = await cur.fetchone()
        assert row is not None
        assert row["n"] == 0


def test_projects_components_builds_state_machine(wis2l_settings: Settings) -> None:
    """The machine runs on this test's database, namespace and stream (one event loop)."""
    runner = asyncio.Runner()
    wis = Wis2l(wis2l_settings)
    try:
        runner.run(wis.start())
        run_state_machine_as_test(
            # A factory works at run time; the stub only names the class form.
            lambda: ProjectsMachine(runner, wis),  # type: ignore[arg-type]
            settings=settings(
                max_examples=25,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        runner.run(wis.stop())
        runner.run(drop_stream(wis2l_settings))
        runner.close()
