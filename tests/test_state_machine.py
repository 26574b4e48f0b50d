"""A Hypothesis state machine over projects and components against an in-memory model.

The machine drives a real runtime on a database of its own, and checks after every step
that the database holds exactly what the model says: the rows (read back through the
paged lists), each component's version, and how many events of each type were recorded.
Transactions are exercised both ways: committed ones apply their writes and events,
rolled-back ones (an exception inside ``wis.transaction()``) leave no trace.

Adding an entity (builds, deployments): give :class:`Model` its dict and its part of
``delete_project``'s cascade, add a Bundle and rules to :class:`ProjectsMachine`, and
extend ``_check_rows`` / ``TX_ACTIONS``. Rules never write around the model: every write
goes through ``self.run(...)`` and is mirrored in ``self.model`` only once it is known to
have committed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
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
    rule,
    run_state_machine_as_test,
)

from wis2l_core import Conflict, Engine, Language, NotFound, Settings
from wis2l_core.runtime import Transaction, Wis2l
from wis2l_core.testing.plugin import drop_stream

T = TypeVar("T")

SLUGS = st.sampled_from(["alpha", "beta", "gamma", "delta", "pong", "tetris-2"])
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
CODE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


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


@attrs.define
class Model:
    """What the database should hold; copied for a transaction, swapped in on commit."""

    projects: dict[UUID, ProjectModel] = attrs.field(factory=dict)
    components: dict[UUID, ComponentModel] = attrs.field(factory=dict)
    events: Counter[str] = attrs.field(factory=Counter)

    def slug_taken(self, slug: str, by: UUID | None = None) -> bool:
        return any(p.slug == slug and pid != by for pid, p in self.projects.items())

    def delete_project(self, pid: UUID) -> None:
        """Delete a project and cascade to its children (events stay)."""
        del self.projects[pid]
        for cid in [c for c, m in self.components.items() if m.project_id == pid]:
            del self.components[cid]


# -- the machine --------------------------------------------------------------------------


class ProjectsMachine(RuleBasedStateMachine):
    """Projects and components through the public API, mirrored in :class:`Model`."""

    projects = Bundle("projects")
    components = Bundle("components")

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

    @initialize()
    def fresh_database(self) -> None:
        # One database per test; every machine run starts from empty tables.
        self.run(_truncate(self.wis))
        user = self.run(self.wis.users.create(email="sm@example.com", name="SM", subject="sm"))
        self.owner = user.id

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
            with pytest.raises(NotFound):
                self.run(self.wis.projects.update(pid, **changes))
            return
        if slug is not None and self.model.slug_taken(slug, by=pid):
            with pytest.raises(Conflict):
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
            with pytest.raises(NotFound):
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
            with pytest.raises(NotFound):
                self.run(self.wis.components.update(cid, code=code))
            return
        updated = self.run(self.wis.components.update(cid, code=code))
        current.code, current.version = code, current.version + 1
        assert (updated.code, updated.version) == (code, current.version)
        self.model.events["component.updated"] += 1

    @rule(cid=consumes(components))
    def delete_component(self, cid: UUID) -> None:
        existed = cid in self.model.components
        assert self.run(self.wis.components.delete(cid)) is existed
        if existed:
            del self.model.components[cid]
            self.model.events["component.deleted"] += 1

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
        async with self.wis.database.pool.connection() as conn:
            cur = await conn.execute("SELECT type, count(*) AS n FROM events GROUP BY type")
            counts = {r["type"]: r["n"] for r in await cur.fetchall()}
        assert counts == {k: v for k, v in self.model.events.items() if v}


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
    current.code, current.version = code, current.version + 1
    assert updated.version == current.version
    shadow.events["component.updated"] += 1


async def _tx_delete_project(
    m: ProjectsMachine, tx: Transaction, shadow: Model, data: st.DataObject
) -> None:
    if not shadow.projects:
        return
    pid = data.draw(st.sampled_from(sorted(shadow.projects)))
    assert await tx.projects.delete(pid) is True
    shadow.delete_project(pid)


TX_ACTIONS: dict[str, TxAction] = {
    "create_project": _tx_create_project,
    "create_component": _tx_create_component,
    "update_component": _tx_update_component,
    "delete_project": _tx_delete_project,
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
    async with wis.database.pool.connection() as conn:
        await conn.execute(
            "TRUNCATE users, templates, projects, components, design_tokens, builds,"
            " deployments, events"
        )


def test_projects_and_components_state_machine(wis2l_settings: Settings) -> None:
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
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        runner.run(wis.stop())
        runner.run(drop_stream(wis2l_settings))
        runner.close()
