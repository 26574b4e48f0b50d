"""Health checks against real servers: classification, time bounds, secrets, JSON, CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from importlib.metadata import version
from typing import Any
from uuid import uuid4

import attrs
import pytest
from nats.aio.client import Client as NatsClient

from wis2l_core import ServiceUnavailable, Settings
from wis2l_core.cache import RedisClient
from wis2l_core.cli import health as cli_health
from wis2l_core.db.pool import Database
from wis2l_core.events import EventBus
from wis2l_core.health import (
    CheckFailed,
    CheckResult,
    HealthChecker,
    HealthReport,
    HealthStatus,
    describe_error,
    secrets_of,
)
from wis2l_core.runtime import Wis2l
from wis2l_core.testing.servers import Servers

BOUND = 0.25
"""How much longer than its timeout health may take: on 2 cores at a load average of 7
(eight suites at once) the overshoot measured 2-21 ms; a loop stall or a GC pass can add
more, so a quarter second: a check that ignored its timeout would run for seconds."""


def dead_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never
    answers a byte: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


@attrs.define
class NatsPing:
    """The event bus's ping, until the bus exists: PING/PONG plus a JetStream call."""

    nc: NatsClient

    async def ping(self) -> Mapping[str, Any]:
        await self.nc.flush(timeout=5)
        info = await self.nc.jetstream().account_info()
        return {"streams": info.streams}


@attrs.frozen
class Backlog:
    size: int
    oldest_age_s: float | None


@attrs.define
class DbBacklog:
    """The outbox relay's backlog(), measured on the real events table."""

    database: Database

    async def backlog(self) -> Backlog:
        async with self.database.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS size,"
                " extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS age"
                " FROM events WHERE published_at IS NULL AND subject IS NOT NULL"
            )
            row = await cur.fetchone()
        assert row is not None
        return Backlog(size=row["size"], oldest_age_s=row["age"])


@pytest.fixture
async def redis_client(wis2l_settings: Settings) -> AsyncIterator[RedisClient]:
    client = RedisClient(wis2l_settings)
    await client.open()
    yield client
    await client.aclose()


@pytest.fixture
async def nats_ping(wis2l_servers: Servers) -> AsyncIterator[NatsPing]:
    nc = NatsClient()
    await nc.connect(servers=[wis2l_servers.nats_url], connect_timeout=2)
    yield NatsPing(nc)
    await nc.close()


async def dead_redis(**overrides: Any) -> RedisClient:
    client = RedisClient(Settings(redis_url=f"redis://127.0.0.1:{dead_port()}/0", **overrides))
    await client.open()
    return client


async def timed(checker: HealthChecker, **kwargs: Any) -> tuple[HealthReport, float]:
    start = time.perf_counter()
    report = await checker.run(**kwargs)
    return report, time.perf_counter() - start


@pytest.mark.timing
async def test_all_up_is_ok(wis: Wis2l, redis_client: RedisClient, nats_ping: NatsPing) -> None:
    checker = HealthChecker.for_services(
        wis.settings,
        database=wis.database,
        redis=redis_client,
        nats=nats_ping,
        outbox=DbBacklog(wis.database),
        started_at=time.monotonic() - 5,
    )
    assert checker.names == ("database", "redis", "nats", "outbox")
    report, elapsed = await timed(checker)
    assert report.status is HealthStatus.OK, report.to_dict()
    assert report.http_status == 200
    assert report.failed == ()
    assert {n: r.critical for n, r in report.checks.items()} == {
        "database": True,
        "redis": False,
        "nats": False,
        "outbox": False,
    }
    assert all(r.healthy and r.error is None for r in report.checks.values())
    assert all(0 < r.latency_ms < elapsed * 1000 + 1 for r in report.checks.values())
    assert report.checks["database"].details["pool_size"] >= 1
    assert report.checks["outbox"].details == {"size": 0, "oldest_age_s": None}
    assert report.checks["nats"].details["streams"] >= 0
    assert 5 <= report.uptime_s < 10
    assert report.version == version("wis2l-core")
    assert elapsed < 0.5


@pytest.mark.timing
async def test_hung_check_is_cut_at_its_timeout(wis: Wis2l, redis_client: RedisClient) -> None:
    async def hung() -> None:
        await asyncio.sleep(10)

    checker = HealthChecker(timeout=0.3)
    checker.add("database", lambda: _db(wis), critical=True)
    checker.add("redis", redis_client.ping)
    checker.add("hung", hung)
    report, elapsed = await timed(checker)
    assert elapsed < 0.3 + BOUND
    assert report.status is HealthStatus.DEGRADED
    assert report.http_status == 200
    assert report.failed == ("hung",)
    assert report.checks["hung"].error == "timed out after 0.3 s"
    assert 300 <= report.checks["hung"].latency_ms < 300 + BOUND * 1000
    assert report.checks["database"].healthy
    assert report.checks["redis"].healthy


@pytest.mark.timing
async def test_a_check_that_ignores_cancellation_still_cannot_hold_up_the_report() -> None:
    let_go = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await let_go.wait()  # refuses to stop until cancelled once more
            raise

    checker = HealthChecker(timeout=0.2)
    checker.add("stubborn", stubborn, critical=True)
    report, elapsed = await timed(checker)
    assert elapsed < 0.2 + BOUND
    assert report.status is HealthStatus.UNHEALTHY
    assert report.checks["stubborn"].error == "timed out after 0.2 s"
    await asyncio.sleep(0.01)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "wis2l-health-stubborn"]


async def _db(wis: Wis2l) -> None:
    async with wis.database.connection() as conn:
        await conn.execute("SELECT 1")


async def test_critical_failure_is_unhealthy_and_503(redis_client: RedisClient) -> None:
    not_started = Wis2l(Settings(database_url=f"postgresql://127.0.0.1:{dead_port()}/x"))
    checker = HealthChecker.for_services(
        not_started.settings, database=not_started.database, redis=redis_client
    )
    report = await checker.run()
    assert report.status is HealthStatus.UNHEALTHY
    assert report.http_status == 503
    assert report.failed == ("database",)
    assert report.checks["database"].error == (
        "ServiceUnavailable: database: the runtime is not started"
    )
    assert report.checks["redis"].healthy


@pytest.mark.timing
async def test_database_down_is_unhealthy_within_the_timeout() -> None:
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{dead_port()}/x", health_timeout=0.3
    )
    database = Database(settings)
    await database.open(wait=False)  # the pool keeps trying in the background
    try:
        report, elapsed = await timed(HealthChecker.for_services(settings, database=database))
    finally:
        await database.close()
    assert elapsed < 0.3 + BOUND
    assert report.status is HealthStatus.UNHEALTHY
    error = report.to_dict()["checks"]["database"]["error"]
    # A timeout while the pool's first attempt runs; once it failed, the reason at once.
    assert error == "timed out after 0.3 s" or error.startswith(
        "ServiceUnavailable: database unreachable: connection failed"
    ), error


@pytest.mark.timing
async def test_optional_failure_is_degraded_and_200(wis: Wis2l) -> None:
    redis = await dead_redis()
    try:
        checker = HealthChecker.for_services(wis.settings, database=wis.database, redis=redis)
        report, elapsed = await timed(checker)
    finally:
        await redis.aclose()
    assert report.status is HealthStatus.DEGRADED
    assert report.http_status == 200
    error = report.checks["redis"].error
    assert error is not None
    assert error.startswith("ServiceUnavailable: redis did not answer: ")
    assert "111" in error or "refused" in error.lower()
    assert elapsed < wis.settings.health_timeout


async def test_redis_critical_when_configured(wis: Wis2l) -> None:
    redis = await dead_redis()
    settings = attrs.evolve(wis.settings, critical_services={"database", "redis"})
    try:
        report = await HealthChecker.for_services(
            settings, database=wis.database, redis=redis
        ).run()
        only = await HealthChecker.for_services(settings, database=wis.database).run(
            critical_only=True
        )
    finally:
        await redis.aclose()
    assert report.status is HealthStatus.UNHEALTHY
    assert report.checks["redis"].critical
    assert only.status is HealthStatus.OK


@pytest.mark.timing
async def test_critical_only_skips_optional_checks(wis: Wis2l) -> None:
    async def hung() -> None:
        await asyncio.sleep(10)

    checker = HealthChecker.for_services(wis.settings, database=wis.database)
    checker.add("hung", hung)
    report, elapsed = await timed(checker, critical_only=True)
    assert list(report.checks) == ["database"]
    assert report.status is HealthStatus.OK
    assert elapsed < 0.5


@pytest.mark.timing
async def test_blackhole_redis_times_out_within_the_bound(wis: Wis2l, blackhole: int) -> None:
    # The driver would wait 5 s for the answer; the health timeout cuts it at 0.3 s.
    redis = RedisClient(
        Settings(redis_url=f"redis://127.0.0.1:{blackhole}/0", redis_socket_timeout=5)
    )
    await redis.open()
    settings = attrs.evolve(wis.settings, health_timeout=0.3)
    try:
        checker = HealthChecker.for_services(settings, database=wis.database, redis=redis)
        report, elapsed = await timed(checker)
    finally:
        await redis.aclose()
    assert elapsed < 0.3 + BOUND
    assert report.status is HealthStatus.DEGRADED
    assert report.checks["redis"].error == "timed out after 0.3 s"
    assert report.checks["database"].healthy


async def test_outbox_backlog_past_its_limit_is_degraded(wis: Wis2l) -> None:
    await wis.relay.stop()  # else it publishes the rows before the check sees them
    async with wis.database.connection() as conn:
        await conn.execute(
            "INSERT INTO events (type, subsystem, subject, created_at) VALUES"
            " ('build.started', 'ignis', 'wis2l.build.started', now() - interval '120 s'),"
            " ('build.started', 'ignis', NULL, now() - interval '1 day'),"
            " ('build.started', 'ignis', 'wis2l.build.started', now())"
        )
    relay = DbBacklog(wis.database)
    late = await HealthChecker.for_services(wis.settings, database=wis.database, outbox=relay).run()
    assert late.status is HealthStatus.DEGRADED
    outbox = late.checks["outbox"]
    assert not outbox.healthy
    assert not outbox.critical
    assert outbox.details["size"] == 2  # the audit-only row (subject NULL) never waits
    assert 120 <= outbox.details["oldest_age_s"] < 130
    assert outbox.error is not None
    assert outbox.error.startswith("oldest unpublished event waited 120 s (limit 60 s)")
    assert late.to_dict()["checks"]["outbox"]["details"]["size"] == 2

    patient = await HealthChecker.for_services(wis.settings, outbox=relay, outbox_max_age=600).run()
    assert patient.status is HealthStatus.OK
    assert patient.checks["outbox"].details["size"] == 2


async def test_errors_never_show_a_password(wis2l_servers: Servers) -> None:
    settings = Settings(
        database_url=f"postgresql://postgres:Pg-s3cret@127.0.0.1:{dead_port()}/x",
        redis_url=f"redis://:Rd-s3cret@127.0.0.1:{dead_port()}/0",
        nats_urls=(f"nats://Nt-t0ken@127.0.0.1:{dead_port()}",),
    )

    async def leaky() -> None:
        raise ServiceUnavailable(
            f"cannot reach {settings.database_url} or {settings.redis_url} "
            "(dsn: host=db password=Kw-s3cret user=ada) with Nt-t0ken",
            service="database",
        )

    checker = HealthChecker.for_services(settings)
    checker.add("leaky", leaky, critical=True)
    report = await checker.run()
    text = json.dumps(report.to_dict())
    for secret in ("Pg-s3cret", "Rd-s3cret", "Kw-s3cret", "Nt-t0ken"):
        assert secret not in text
    error = report.checks["leaky"].error
    assert error is not None
    assert "postgresql://postgres:***@127.0.0.1:" in error
    assert "redis://:***@127.0.0.1:" in error
    assert "password=***" in error

    # Real drivers, real failures: the CLI's checks with these URLs.
    cli_report = await cli_health.collect(attrs.evolve(settings, health_timeout=1.0))
    text = json.dumps(cli_report.to_dict())
    assert cli_report.status is HealthStatus.UNHEALTHY
    for secret in ("Pg-s3cret", "Rd-s3cret", "Nt-t0ken"):
        assert secret not in text


def test_secrets_of_finds_passwords_and_nats_tokens() -> None:
    settings = Settings(
        database_url="postgresql://ada:p%40ss@db/x",
        redis_url="redis://127.0.0.1:6379/0",
        nats_urls=("nats://tok3n@n1:4222", "nats://u:pw9@n2:4222"),
    )
    assert set(secrets_of(settings)) == {"p%40ss", "p@ss", "tok3n", "pw9"}
    settings = Settings(
        database_url="postgresql://ada@db/x?sslmode=require&password=q%2Bw+1&sslpassword=kp9",
        redis_url="redis://127.0.0.1:6379/0?password=rq7",
    )
    assert {"q%2Bw+1", "q+w+1", "q+w 1", "kp9", "rq7"} <= set(secrets_of(settings))


def test_describe_error_masks_every_form_without_being_told_the_secret() -> None:
    message = (
        "nats: no servers available: nats://Tk-n4ts@n1:4222, tls://u:Nt-pw1@n2:4222; "
        "pg: postgresql://ada@db/x?sslmode=require&password=Pq-pw2&sslpassword=Sp-pw3; "
        "redis: redis://cache:6379/0?password=Rq-pw4 and rediss://:Rd-pw5@cache/0; "
        "conninfo: host=db password='Ci pw6' dbname=x"
    )
    text = describe_error(ConnectionError(message))
    for secret in ("Tk-n4ts", "Nt-pw1", "Pq-pw2", "Sp-pw3", "Rq-pw4", "Rd-pw5", "Ci pw6", "pw6"):
        assert secret not in text
    assert "nats://***@n1:4222" in text
    assert "sslmode=require&password=***&sslpassword=***" in text


def test_describe_error_is_short_one_line_and_typed() -> None:
    assert describe_error(ValueError("bad\n  value")) == "ValueError: bad value"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(CheckFailed("backlog too old")) == "backlog too old"
    long = describe_error(RuntimeError("x" * 500 + " redis://u:hunter22@h/0"))
    assert len(long) == 200
    assert long.endswith("...")
    assert "hunter22" not in describe_error(RuntimeError("redis://u:hunter22@h/0 " + "x" * 500))
    assert describe_error(OSError("token: abc123")) == "OSError: token: ***"


async def test_check_failed_keeps_its_details_and_plain_message() -> None:
    async def full() -> None:
        raise CheckFailed("disk 99% full", details={"free_mb": 12})

    checker = HealthChecker()
    checker.add("disk", full)
    result = (await checker.run()).checks["disk"]
    assert (result.healthy, result.error, dict(result.details)) == (
        False,
        "disk 99% full",
        {"free_mb": 12},
    )
    checker.remove("disk")
    checker.remove("disk")
    assert (await checker.run()).status is HealthStatus.OK


def test_to_dict_shape_is_exactly_the_contract() -> None:
    report = HealthReport(
        status=HealthStatus.DEGRADED,
        checks={
            "database": CheckResult("database", True, True, 1.234, None),
            "redis": CheckResult("redis", False, False, 2000.0, "timed out after 2.0 s"),
            "outbox": CheckResult(
                "outbox", True, False, 0.5, details={"size": 0, "oldest_age_s": None}
            ),
        },
        uptime_s=12.3456,
        version="0.1.0",
    )
    data = report.to_dict()
    assert data == {
        "status": "degraded",
        "uptime_s": 12.346,
        "version": "0.1.0",
        "checks": {
            "database": {"healthy": True, "critical": True, "latency_ms": 1.23, "error": None},
            "redis": {
                "healthy": False,
                "critical": False,
                "latency_ms": 2000.0,
                "error": "timed out after 2.0 s",
            },
            "outbox": {
                "healthy": True,
                "critical": False,
                "latency_ms": 0.5,
                "error": None,
                "details": {"size": 0, "oldest_age_s": None},
            },
        },
    }
    assert list(data) == ["status", "uptime_s", "version", "checks"]
    assert json.loads(json.dumps(data)) == data
    assert report.http_status == 200
    assert attrs.evolve(report, status=HealthStatus.UNHEALTHY).http_status == 503
    with pytest.raises(TypeError):
        report.checks["x"] = report.checks["database"]  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        report.status = HealthStatus.OK  # type: ignore[misc]


def test_an_empty_checker_is_ok() -> None:
    report = asyncio.run(HealthChecker().run())
    assert report.status is HealthStatus.OK
    assert report.checks == {}


# --- wis2l health (CLI) -------------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch, servers: Servers, *argv: str, **env: str
) -> tuple[int, float]:
    for name in ("WIS2L_CRITICAL_SERVICES", "WIS2L_HEALTH_TIMEOUT", "WIS2L_ENV"):
        monkeypatch.delenv(name, raising=False)
    base = {
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "NATS_URL": servers.nats_url,
    }
    for name, value in (base | env).items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    cli_health.add_parser(parser.add_subparsers())
    args = parser.parse_args(["health", *argv])
    start = time.perf_counter()
    code = args.func(args)
    return code, time.perf_counter() - start


def ensure_stream(servers: Servers, name: str) -> None:
    """Create the event stream as the app does at its first start."""

    async def ensure() -> None:
        bus = EventBus(Settings(nats_urls=(servers.nats_url,), stream_name=name))
        await bus.open(require=True)
        await bus.close()

    asyncio.run(ensure())


def test_cli_all_up_exits_0_with_a_table(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wis2l_servers: Servers,
    wis2l_database_url: str,
) -> None:
    ensure_stream(wis2l_servers, Settings().stream_name)
    code, _ = run_cli(monkeypatch, wis2l_servers, DATABASE_URL=wis2l_database_url)
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["check", "status", "critical", "latency", "ms", "error"]
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["database", "ok", "yes"],
        ["redis", "ok", "no"],
        ["nats", "ok", "no"],
    ]
    assert "status: ok" in out


def test_cli_missing_stream_fails_nats_as_the_runtime_does(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wis2l_servers: Servers,
    wis2l_database_url: str,
) -> None:
    stream = f"H{uuid4().hex[:12].upper()}"  # never created
    code, _ = run_cli(
        monkeypatch, wis2l_servers, "--json", DATABASE_URL=wis2l_database_url, WIS2L_STREAM=stream
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1  # nats is not critical by default
    assert data["status"] == "degraded"
    nats = data["checks"]["nats"]
    assert nats["healthy"] is False
    assert nats["error"] == f"ServiceUnavailable: nats: stream {stream} is missing"


def test_cli_json_and_redis_down_exits_1(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wis2l_servers: Servers,
    wis2l_database_url: str,
) -> None:
    code, _ = run_cli(
        monkeypatch,
        wis2l_servers,
        "--json",
        DATABASE_URL=wis2l_database_url,
        REDIS_URL=f"redis://127.0.0.1:{dead_port()}/0",
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["status"] == "degraded"
    assert data["checks"]["redis"]["healthy"] is False
    assert data["checks"]["database"]["details"]["server_version"]


@pytest.mark.timing
def test_cli_database_down_exits_2_with_the_table_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wis2l_servers: Servers
) -> None:
    code, elapsed = run_cli(
        monkeypatch, wis2l_servers, DATABASE_URL=f"postgresql://127.0.0.1:{dead_port()}/x"
    )
    captured = capsys.readouterr()
    assert code == 2
    row = next(line for line in captured.out.splitlines() if line.startswith("database"))
    assert row.split()[1:3] == ["FAILED", "yes"]
    assert "Connection refused" in row or "connection failed" in row
    assert "status: unhealthy" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert elapsed < 2


@pytest.mark.timing
def test_cli_hung_servers_exit_2_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wis2l_servers: Servers,
    blackhole: int,
) -> None:
    code, elapsed = run_cli(
        monkeypatch,
        wis2l_servers,
        "--timeout",
        "0.3",
        DATABASE_URL=f"postgresql://127.0.0.1:{blackhole}/x",
        REDIS_URL=f"redis://127.0.0.1:{blackhole}/0",
        NATS_URL=f"nats://127.0.0.1:{blackhole}",
    )
    out = capsys.readouterr().out
    assert code == 2
    assert out.count("timed out after 0.3 s") == 3
    assert elapsed < 0.3 + 0.2  # the timeout, plus starting and closing an event loop


def test_cli_bad_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], wis2l_servers: Servers
) -> None:
    code, _ = run_cli(monkeypatch, wis2l_servers, REDIS_URL="http://nope")
    assert code == 2
    assert "REDIS_URL" in capsys.readouterr().err
    code, _ = run_cli(monkeypatch, wis2l_servers, "--timeout", "0")
    assert code == 2


# --- an unmigrated database ---------------------------------------------------------------


async def test_an_unmigrated_database_is_unhealthy_and_says_to_migrate(
    wis2l_settings: Settings, empty_database_url: str
) -> None:
    """Not "degraded 200": nothing works without the schema, so readiness must fail."""
    async with Wis2l(attrs.evolve(wis2l_settings, database_url=empty_database_url)) as wis:
        report = await wis.health()
    assert (report.status, report.http_status) == (HealthStatus.UNHEALTHY, 503)
    database = report.checks["database"]
    assert not database.healthy
    assert "wis2l db migrate" in (database.error or "")


async def test_a_database_behind_the_library_is_unhealthy(wis: Wis2l) -> None:
    assert (await wis.health()).status is HealthStatus.OK
    await wis.database.execute("DELETE FROM wis2l_migrations WHERE name LIKE '0002%'")
    report = await wis.health()
    assert report.status is HealthStatus.UNHEALTHY
    error = report.checks["database"].error or ""
    assert "1 migration(s) not applied, from 0002_" in error
    assert "wis2l db migrate" in error


def test_cli_unmigrated_database_exits_2_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wis2l_servers: Servers,
    empty_database_url: str,
) -> None:
    code, _ = run_cli(monkeypatch, wis2l_servers, DATABASE_URL=empty_database_url)
    out = capsys.readouterr().out
    assert code == 2
    row = next(line for line in out.splitlines() if line.startswith("database"))
    assert row.split()[1:3] == ["FAILED", "yes"]
    assert "wis2l db migrate" in row
