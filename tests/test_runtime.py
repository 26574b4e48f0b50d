"""The runtime's lifecycle on the session's servers: start/stop, failures, modes, health.

Nothing here stops a shared server: a service that is "down" is a loopback port nobody
listens on (connections refused at once) or a socket that accepts and never answers (a
hung server). Tests that kill real servers are in test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import nats
import pytest
from tests.helpers import has

from wis2l_core import HealthStatus, ServiceUnavailable, Settings, StartupError, Wis2l, health_app
from wis2l_core import runtime as runtime_module
from wis2l_core.events import BuildProgress
from wis2l_core.testing.plugin import drop_stream

BOUND = 0.25
"""How much longer than its timeout a health report or a cut-short step may take."""


@pytest.fixture
async def runtime_settings(wis2l_settings: Settings) -> AsyncIterator[Settings]:
    """The test's settings; its JetStream stream is deleted afterwards."""
    yield wis2l_settings
    await drop_stream(wis2l_settings)


def dead_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections and never answers a byte: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def dead_db(password: str = "") -> str:
    auth = f"postgres:{password}@" if password else "postgres@"
    return f"postgresql://{auth}127.0.0.1:{dead_port()}/nowhere"


def progress(value: int = 1) -> BuildProgress:
    return BuildProgress(project_id=uuid.uuid4(), build_id=uuid.uuid4(), progress=value)


def pending_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() - before if not t.done()}


async def ready_status(wis: Wis2l) -> int:
    """GET /health/ready through the ASGI app; return the HTTP status."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health/ready", "root_path": ""}
    await health_app(wis)(scope, receive, send)
    return int(sent[0]["status"])


async def consumer_counts(settings: Settings, consumer: str) -> tuple[int, int]:
    """(messages waiting, messages delivered and not acknowledged) of a consumer."""
    nc = await nats.connect(list(settings.nats_urls), connect_timeout=2)
    try:
        info = await nc.jetstream().consumer_info(settings.stream_name, consumer)
        return info.num_pending or 0, info.num_ack_pending or 0
    finally:
        await nc.close()


def assert_all_closed(wis: Wis2l) -> None:
    assert not wis.started
    assert wis.stopping
    with pytest.raises(ServiceUnavailable, check=has(service="database")):
        _ = wis.database.pool
    with pytest.raises(ServiceUnavailable, check=has(service="redis")):
        _ = wis.redis.redis
    assert not wis.bus.connected
    assert not wis.relay.running


# -- start and stop ----------------------------------------------------------------------


async def test_start_and_stop_are_idempotent_concurrent_and_restartable(
    runtime_settings: Settings,
) -> None:
    wis = Wis2l(runtime_settings, seed_subscribers=False)
    assert (wis.started, wis.stopping) == (False, True)  # not ready before start
    await asyncio.gather(wis.start(), wis.start())
    pool = wis.database.pool
    await wis.start()
    assert wis.database.pool is pool  # opened once
    assert (wis.started, wis.stopping) == (True, False)
    assert wis.bus.ready
    assert wis.relay.running
    await asyncio.gather(wis.stop(), wis.stop())
    assert_all_closed(wis)
    await wis.stop()

    # stop() during start() waits for it, then stops
    starting = asyncio.create_task(wis.start())
    await asyncio.sleep(0)
    await wis.stop()
    assert starting.done()
    assert starting.exception() is None
    assert_all_closed(wis)

    async with wis as again:  # and it starts again, fully working
        assert again is wis
        user = await wis.users.create(email="ada@example.com", name="Ada", subject="n|1")
        assert (await wis.users.find_by_id(user.id)) == user
        assert (await wis.health()).status is HealthStatus.OK
    assert_all_closed(wis)


@pytest.mark.timing
async def test_all_up_is_ok_and_the_fixture_runtime_is_ready(wis: Wis2l) -> None:
    started = time.perf_counter()
    report = await wis.health()
    took = time.perf_counter() - started
    assert report.status is HealthStatus.OK, report.to_dict()
    assert report.http_status == 200
    assert list(report.checks) == ["database", "redis", "nats", "outbox"]
    assert all(check.healthy and check.error is None for check in report.checks.values())
    assert [n for n, c in report.checks.items() if c.critical] == ["database"]
    assert took < 1.0
    assert wis.started
    assert not wis.stopping
    assert await ready_status(wis) == 200
    ready = await wis.health(critical_only=True)
    assert list(ready.checks) == ["database"]


async def test_stop_runs_every_step_when_some_fail_and_logs_them(
    runtime_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wis2l_core.runtime")
    wis = Wis2l(runtime_settings, seed_subscribers=False)
    await wis.start()
    real_relay_stop, real_bus_close = wis.relay.stop, wis.bus.close

    async def relay_stop_fails(timeout: float | None = None) -> None:
        await real_relay_stop(timeout)
        raise RuntimeError("relay stop failed")

    async def bus_close_fails(timeout: float | None = None) -> None:
        await real_bus_close(timeout)
        raise OSError("bus close failed")

    wis.relay.stop = relay_stop_fails  # type: ignore[method-assign]
    wis.bus.close = bus_close_fails  # type: ignore[method-assign]
    await wis.stop()  # does not raise
    assert_all_closed(wis)  # Redis and the pool closed after the failures
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "error while stopping the outbox relay",
        "error while stopping the event bus",
    ]
    assert all(r.exc_info is not None for r in failures)
    assert "relay stop failed" in caplog.text
    assert "bus close failed" in caplog.text


@pytest.mark.timing
async def test_a_hung_step_is_cut_short_and_the_rest_still_run(
    runtime_settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "CLOSE_GRACE", 0.2)
    settings = attrs.evolve(runtime_settings, shutdown_timeout=0.5)
    wis = Wis2l(settings, seed_subscribers=False)
    await wis.start()
    real_relay_stop = wis.relay.stop

    async def relay_stop_hangs(timeout: float | None = None) -> None:
        await real_relay_stop(timeout)
        await asyncio.Event().wait()  # never returns

    wis.relay.stop = relay_stop_hangs  # type: ignore[method-assign]
    started = time.perf_counter()
    await wis.stop()
    took = time.perf_counter() - started
    assert 0.7 - 0.05 < took < 0.7 + BOUND  # shutdown_timeout + CLOSE_GRACE
    assert_all_closed(wis)
    assert "stopping the outbox relay took more than 0.7 s; cut short" in caplog.text


async def test_a_cancelled_stop_still_runs_every_step(runtime_settings: Settings) -> None:
    wis = Wis2l(runtime_settings, seed_subscribers=False)
    await wis.start()
    real_relay_stop = wis.relay.stop
    in_step = asyncio.Event()

    async def slow_relay_stop(timeout: float | None = None) -> None:
        in_step.set()
        try:
            await asyncio.sleep(10)
        finally:
            await real_relay_stop(timeout)

    wis.relay.stop = slow_relay_stop  # type: ignore[method-assign]
    stopping = asyncio.create_task(wis.stop())
    await asyncio.wait_for(in_step.wait(), 5)
    assert wis.stopping
    assert wis.started
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert_all_closed(wis)


# -- in-flight handlers ------------------------------------------------------------------


@pytest.mark.timing
async def test_stop_lets_a_running_handler_finish_and_readiness_fails_at_once(
    runtime_settings: Settings,
) -> None:
    wis = Wis2l(runtime_settings, seed_subscribers=False)
    began = asyncio.Event()
    seen: list[tuple[bool, bool, int]] = []

    @wis.bus.subscribe(BuildProgress, durable="slow", concurrency=1)
    async def slow(event: BuildProgress) -> None:
        began.set()
        await asyncio.sleep(1.0)
        seen.append((wis.started, wis.stopping, await ready_status(wis)))

    await wis.start()
    await wis.bus.publish(progress())
    await asyncio.wait_for(began.wait(), 10)
    assert not wis.stopping
    started = time.perf_counter()
    await wis.stop()
    took = time.perf_counter() - started
    assert seen == [(True, True, 503)]  # the handler ran to its end, seeing the stop begun
    assert 0.8 < took < 1.0 + 0.5
    assert await consumer_counts(runtime_settings, "slow-build-progress") == (0, 0)  # acked


@pytest.mark.timing
async def test_a_handler_past_the_shutdown_timeout_is_cancelled_and_redelivered(
    runtime_settings: Settings,
) -> None:
    settings = attrs.evolve(runtime_settings, shutdown_timeout=0.5)
    first, second = Wis2l(settings, seed_subscribers=False), Wis2l(settings, seed_subscribers=False)
    began, again = asyncio.Event(), asyncio.Event()
    event = progress(7)
    redelivered: list[uuid.UUID] = []

    @first.bus.subscribe(BuildProgress, durable="stuck", ack_wait=1.0)
    async def stuck(e: BuildProgress) -> None:
        began.set()
        await asyncio.sleep(30)

    @second.bus.subscribe(BuildProgress, durable="stuck", ack_wait=1.0)
    async def handled(e: BuildProgress) -> None:
        redelivered.append(e.id)
        again.set()

    await first.start()
    await first.bus.publish(event)
    await asyncio.wait_for(began.wait(), 10)
    started = time.perf_counter()
    await first.stop()
    took = time.perf_counter() - started
    assert 0.5 - 0.05 < took < 0.5 + 0.5
    async with second:
        await asyncio.wait_for(again.wait(), 10)
    assert redelivered == [event.id]


# -- a service down: development mode ----------------------------------------------------


@pytest.mark.timing
@pytest.mark.parametrize("how", ["refused", "hung"])
async def test_redis_down_is_degraded_200_within_the_timeout(
    runtime_settings: Settings, blackhole: int, how: str
) -> None:
    port = dead_port() if how == "refused" else blackhole
    settings = attrs.evolve(
        runtime_settings, redis_url=f"redis://127.0.0.1:{port}/0", health_timeout=0.5
    )
    async with Wis2l(settings, seed_subscribers=False) as wis:
        started = time.perf_counter()
        report = await wis.health()
        took = time.perf_counter() - started
        assert report.status is HealthStatus.DEGRADED, report.to_dict()
        assert report.http_status == 200
        assert report.failed == ("redis",)
        assert took < 0.5 + BOUND
        assert await ready_status(wis) == 200
        assert await wis.cache.get("k") is None  # fails open
        user = await wis.users.create(email="r@example.com", name="R", subject="n|r")
        assert user.email == "r@example.com"


@pytest.mark.timing
@pytest.mark.slow
async def test_database_down_in_development_starts_unhealthy_503_within_the_timeout(
    runtime_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = attrs.evolve(
        runtime_settings,
        database_url=dead_db(),
        db_connect_timeout=1.0,
        db_pool_timeout=1.0,  # the relay's stop waits for its pass to give up a connection
        health_timeout=0.5,
    )
    wis = Wis2l(settings, seed_subscribers=False)
    started = time.perf_counter()
    await wis.start()
    start_took = time.perf_counter() - started
    try:
        assert start_took < 1.0 + 1.0 + 1.0  # the pool's wait, then one probe
        assert "database unreachable at start" in caplog.text
        assert "Connection refused" in caplog.text  # the probe's reason, not a pool timeout
        started = time.perf_counter()
        report = await wis.health()
        took = time.perf_counter() - started
        assert report.status is HealthStatus.UNHEALTHY
        assert report.http_status == 503
        assert not report.checks["database"].healthy
        assert took < 0.5 + BOUND
        assert await ready_status(wis) == 503
    finally:
        await wis.stop()
    assert_all_closed(wis)


@pytest.mark.timing
async def test_development_starts_with_only_the_database(runtime_settings: Settings) -> None:
    settings = attrs.evolve(
        runtime_settings,
        redis_url=f"redis://127.0.0.1:{dead_port()}/0",
        nats_urls=(f"nats://127.0.0.1:{dead_port()}",),
        nats_connect_timeout=0.5,
        health_timeout=0.5,
    )
    wis = Wis2l(settings)
    started = time.perf_counter()
    async with wis:
        assert time.perf_counter() - started < 0.5 + 0.5 + 1.0
        report = await wis.health()
        assert report.status is HealthStatus.DEGRADED
        assert set(report.failed) == {"redis", "nats"}
        assert report.checks["database"].healthy
        assert report.checks["outbox"].healthy
        assert await wis.cache.get("k") is None  # fails open
    assert_all_closed(wis)


# -- production mode ---------------------------------------------------------------------


@pytest.mark.timing
async def test_production_refuses_to_start_without_the_database_and_leaves_nothing(
    runtime_settings: Settings,
) -> None:
    secret = "s3cret-Pa55word"
    settings = attrs.evolve(
        runtime_settings,
        environment="production",
        database_url=dead_db(password=secret),
        db_connect_timeout=1.0,
    )
    wis = Wis2l(settings)
    before = asyncio.all_tasks()
    started = time.perf_counter()
    with pytest.raises(StartupError) as caught:
        await asyncio.wait_for(wis.start(), 30)  # a failure, not a hang
    took = time.perf_counter() - started
    await asyncio.sleep(0.05)
    assert set(caught.value.failures) == {"database"}
    assert "database" in str(caught.value)
    assert "Connection refused" in caught.value.failures["database"]
    assert secret not in str(caught.value)
    assert took < 1.0 + 1.0 + 1.0
    assert pending_tasks(before) == set()
    assert_all_closed(wis)
    await wis.stop()  # nothing to do


async def test_production_with_nats_critical_refuses_to_start_without_it(
    runtime_settings: Settings,
) -> None:
    settings = attrs.evolve(
        runtime_settings,
        environment="production",
        critical_services={"database", "nats"},
        nats_urls=(f"nats://127.0.0.1:{dead_port()}",),
        nats_connect_timeout=0.5,
    )
    wis = Wis2l(settings)
    before = asyncio.all_tasks()
    with pytest.raises(StartupError) as caught:
        await asyncio.wait_for(wis.start(), 30)  # a failure, not a hang
    await asyncio.sleep(0.05)
    assert set(caught.value.failures) == {"nats"}
    assert "nats" in str(caught.value)
    assert pending_tasks(before) == set()
    assert_all_closed(wis)


@pytest.mark.slow
async def test_production_names_every_critical_service_that_is_down(
    runtime_settings: Settings,
) -> None:
    settings = attrs.evolve(
        runtime_settings,
        environment="production",
        critical_services={"database", "redis", "nats"},
        database_url=dead_db(),
        redis_url=f"redis://127.0.0.1:{dead_port()}/0",
        nats_urls=(f"nats://127.0.0.1:{dead_port()}",),
        db_connect_timeout=1.0,
        nats_connect_timeout=0.5,
    )
    wis = Wis2l(settings)
    with pytest.raises(StartupError) as caught:
        await asyncio.wait_for(wis.start(), 30)  # a failure, not a hang
    assert list(caught.value.failures) == ["database", "redis", "nats"]
    assert_all_closed(wis)


async def test_production_starts_degraded_when_an_optional_service_is_down(
    runtime_settings: Settings,
) -> None:
    settings = attrs.evolve(
        runtime_settings,
        environment="production",
        redis_url=f"redis://127.0.0.1:{dead_port()}/0",
        nats_urls=(f"nats://127.0.0.1:{dead_port()}",),
        nats_connect_timeout=0.5,
    )
    async with Wis2l(settings, seed_subscribers=False) as wis:
        report = await wis.health()
        assert report.status is HealthStatus.DEGRADED
        assert set(report.failed) == {"redis", "nats"}
        assert await ready_status(wis) == 200


# -- run_until_signal --------------------------------------------------------------------


async def test_run_until_signal_stops_on_sigterm_and_removes_its_handlers(
    runtime_settings: Settings,
) -> None:
    wis = Wis2l(runtime_settings, seed_subscribers=False)
    running = asyncio.create_task(wis.run_until_signal())
    while not wis.started:  # the handlers are installed before start() begins
        assert not running.done()
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 10)
    assert_all_closed(wis)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def test_a_signal_during_start_stops_the_runtime_once_it_is_up(
    runtime_settings: Settings,
) -> None:
    # NATS down in development: start() waits nats_connect_timeout for it
    settings = attrs.evolve(
        runtime_settings, nats_urls=(f"nats://127.0.0.1:{dead_port()}",), nats_connect_timeout=1.0
    )
    wis = Wis2l(settings, seed_subscribers=False)
    running = asyncio.create_task(wis.run_until_signal())
    await asyncio.sleep(0.3)  # inside start(), waiting for NATS
    assert not wis.started
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0)
    assert wis.stopping
    await asyncio.wait_for(running, 10)
    assert_all_closed(wis)
