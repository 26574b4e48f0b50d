"""wis2l_core.sync.Wis2l itself: lifecycle, transactions, the outbox, bus.publish, health,
threads, and a caller whose own event loop is running (Jupyter)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import nats
import pytest
from nats.js.errors import NotFoundError

from wis2l_core import (
    BuildProgress,
    HealthStatus,
    NotFound,
    ServiceUnavailable,
    Settings,
    ValidationError,
)
from wis2l_core.sync import Wis2l
from wis2l_core.testing.plugin import drop_stream


@pytest.fixture(autouse=True)
def _drop_stream(wis2l_settings: Settings) -> Iterator[None]:
    """The runtimes the tests start themselves make the test's stream: delete it after."""
    yield
    asyncio.run(drop_stream(wis2l_settings))


def last_message(settings: Settings, subject: str, timeout: float = 10.0) -> Any:
    """The last message JetStream stored on ``subject``, waiting up to ``timeout`` for one."""

    async def get() -> Any:
        nc = await nats.connect(list(settings.nats_urls), connect_timeout=2)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    return await js.get_last_msg(settings.stream_name, subject)
                except NotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await nc.close()

    return asyncio.run(get())


def make_project(wis: Wis2l) -> uuid.UUID:
    tag = uuid.uuid4().hex
    user = wis.users.create(email=f"{tag}@example.com", name="U", subject=tag)
    return wis.projects.create(owner_id=user.id, name="P", slug=f"p-{tag[:8]}", engine="godot").id


def test_context_manager_starts_and_closes(wis2l_settings: Settings) -> None:
    wis = Wis2l(wis2l_settings)
    assert not wis.started
    with pytest.raises(ServiceUnavailable):  # no I/O before start, and no loop either
        wis.users.find_by_id(uuid.uuid4())
    with pytest.raises(ServiceUnavailable):
        wis.bus.publish(BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=1))
    with wis as same:
        assert same is wis
        assert wis.started
        wis.start()  # idempotent
        assert wis.users.find_by_id(uuid.uuid4()) is None
    assert not wis.started
    wis.close()  # idempotent
    wis.start()  # a closed runtime starts again
    try:
        assert wis.users.find_by_email("nobody@example.com") is None
    finally:
        wis.close()


def test_a_transaction_commits_or_rolls_back_as_a_whole(sync_wis: Wis2l) -> None:
    wis = sync_wis
    user = wis.users.create(email="ada@example.com", name="Ada", subject="s-ada")

    def fails_halfway() -> None:
        with wis.transaction() as tx:
            tx.projects.create(owner_id=user.id, name="Gone", slug="gone", engine="godot")
            tx.users.update(user.id, name="Ada L")
            tx.projects.create(owner_id=user.id, name="Bad", slug="Not A Slug", engine="godot")

    with pytest.raises(ValidationError):
        fails_halfway()
    assert wis.projects.find_by_slug("gone") is None
    assert wis.users.find_by_id(user.id) == user
    with wis.transaction() as tx:
        project = tx.projects.create(owner_id=user.id, name="Kept", slug="kept", engine="godot")
        assert wis.projects.find_by_slug("kept") is None  # not committed yet
    assert wis.projects.find_by_slug("kept") == project
    with pytest.raises(NotFound):
        wis.users.update(uuid.uuid4(), name="x")


def test_a_write_reaches_nats_through_the_outbox(wis2l_settings: Settings) -> None:
    with Wis2l(wis2l_settings) as wis:  # with its outbox relay
        project_id = make_project(wis)
        build = wis.builds.create(project_id=project_id, target="webgl")
        wis.builds.update(build.id, status="building")
        msg = last_message(wis2l_settings, wis.bus.subject("build.started"))
    assert msg.headers["Nats-Msg-Id"]
    assert str(build.id) in msg.data.decode()


def test_bus_publish_reaches_nats(sync_wis: Wis2l, wis2l_settings: Settings) -> None:
    event = BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=42)
    sync_wis.bus.publish(event)
    msg = last_message(wis2l_settings, sync_wis.bus.subject(event))
    assert msg.headers["Nats-Msg-Id"] == str(event.id)
    assert '"progress":42' in msg.data.decode()
    with pytest.raises(ValidationError):
        sync_wis.bus.publish("not an event")  # type: ignore[arg-type]


def test_health_reports_every_service(sync_wis: Wis2l) -> None:
    report = sync_wis.health()
    assert report.status is HealthStatus.OK, report.to_dict()
    assert set(report.checks) == {"database", "redis", "nats"}  # no relay in this fixture
    assert report.checks["database"].details["pool_size"] >= 1
    assert report.http_status == 200


def test_health_before_start_and_with_redis_down(wis2l_settings: Settings) -> None:
    report = Wis2l(wis2l_settings).health()
    assert report.status is HealthStatus.UNHEALTHY
    assert not report.checks["database"].healthy
    dead = attrs.evolve(wis2l_settings, redis_url="redis://127.0.0.1:1/0")
    with Wis2l(dead) as wis:
        report = wis.health()
        assert report.status is HealthStatus.DEGRADED
        assert not report.checks["redis"].healthy
        assert set(report.checks) == {"database", "redis", "nats", "outbox"}
        assert wis.cache.get("k") is None  # fails open
        assert wis.cache.set("k", 1) is False


def test_threads_share_one_runtime(sync_wis: Wis2l) -> None:
    project_id = make_project(sync_wis)
    build = sync_wis.builds.create(project_id=project_id, target="linux")

    def claim(_: int) -> str:
        try:
            sync_wis.builds.update(build.id, status="building")
        except ValidationError as exc:
            return type(exc).__name__
        return "won"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(claim, range(8)))
    assert outcomes.count("won") == 1
    assert outcomes.count("InvalidTransition") == 7


async def test_works_while_the_callers_event_loop_runs(wis2l_settings: Settings) -> None:
    """As in Jupyter: the calling thread's loop is running, and blocking calls are fine."""
    loop = asyncio.get_running_loop()
    with Wis2l(wis2l_settings) as wis:
        project_id = make_project(wis)
        assert wis.health().status is HealthStatus.OK
        event = BuildProgress(project_id=project_id, build_id=uuid.uuid4(), progress=7)
        wis.bus.publish(event)
        assert wis._loop._thread is not threading.current_thread()
    assert asyncio.get_running_loop() is loop  # ours is untouched, still running
