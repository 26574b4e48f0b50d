"""`wis2l relay`: a relay process publishes what writers commit, stops cleanly on SIGTERM
without losing or repeating an event, answers health probes, refuses bad options in one
line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import DeliverPolicy
from tests.helpers import eventually, make_project

from wis2l_core import Settings, Wis2l
from wis2l_core.cli import main


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    return env | {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "NATS_URL": ",".join(settings.nats_urls),
        "WIS2L_NAMESPACE": settings.namespace,
        "WIS2L_STREAM": settings.stream_name,
        "WIS2L_ENV": "development",
        "WIS2L_SHUTDOWN_TIMEOUT": "5",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _relay(settings: Settings, tmp: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp / "relay.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wis2l_core.cli", "relay", "--lease", "2", *args],
        env=_env(settings),
        stdout=log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


async def _ready(proc: subprocess.Popen[bytes], tmp: Path) -> str:
    def started() -> bool:
        assert proc.poll() is None, (tmp / "relay.log").read_text()
        return "publishing" in (tmp / "relay.log").read_text()

    await eventually(started, timeout=30)
    return (tmp / "relay.log").read_text()


async def _in_stream(wis: Wis2l) -> Counter[str]:
    """How many times each event id is in the stream."""
    sub = await wis.bus.jetstream.subscribe(
        f"{wis.bus.namespace}.>",
        stream=wis.settings.stream_name,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    ids: Counter[str] = Counter()
    with contextlib.suppress(nats.errors.TimeoutError):
        while True:
            msg = await sub.next_msg(timeout=1.0)
            ids[(msg.headers or {})["Nats-Msg-Id"]] += 1
    await sub.unsubscribe()
    return ids


async def _unpublished(wis: Wis2l) -> int:
    count = await wis.database.fetch_val(
        "SELECT count(*) FROM events WHERE published_at IS NULL AND subject IS NOT NULL"
    )
    return int(count)


@pytest.mark.slow
async def test_the_relay_process_publishes_commits_and_stops_on_sigterm(
    wis: Wis2l, tmp_path: Path
) -> None:
    await wis.relay.stop()  # the process is the only relay
    project = await make_project(wis)
    port = _free_port()
    with _relay(wis.settings, tmp_path, "--health-port", str(port), "--batch-size", "50") as proc:
        banner = await _ready(proc, tmp_path)
        assert f"health on http://127.0.0.1:{port}/health" in banner

        def get(path: str) -> tuple[int, dict[str, object]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())

        status, body = await asyncio.to_thread(get, "/health")
        assert status == 200
        assert set(body["checks"]) >= {"database", "nats", "outbox"}  # type: ignore[arg-type]
        assert (await asyncio.to_thread(get, "/health/ready"))[0] == 200

        # A writer commits while the relay publishes; SIGTERM lands mid-stream.
        stop = asyncio.Event()
        written = 0

        async def writer() -> None:
            nonlocal written
            while not stop.is_set():
                await wis.components.create(
                    project_id=project, name=f"c{written}", language="lua", code="x"
                )
                written += 1

        task = asyncio.create_task(writer())
        await eventually(lambda: written >= 40, timeout=20)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        stop.set()
        await task
        log = (tmp_path / "relay.log").read_text()
        assert code == 0, log
        assert "stopped; published" in log
    # Whatever the stopped relay left unpublished, the next relay publishes once.
    left = await _unpublished(wis)
    await wis.relay.start()
    await eventually(lambda: _none_left(wis), timeout=20)
    ids = await _in_stream(wis)
    rows = await wis.database.fetch_all(
        "SELECT id::text AS id FROM events WHERE subject IS NOT NULL"
    )
    assert set(ids) == {r["id"] for r in rows}
    assert max(ids.values()) == 1, "an event is in the stream twice"
    assert written >= 40
    assert left < len(rows)  # the relay process published most of them


async def _none_left(wis: Wis2l) -> bool:
    return await _unpublished(wis) == 0


@pytest.mark.slow
async def test_sigint_also_stops_it_cleanly(wis: Wis2l, tmp_path: Path) -> None:
    await wis.relay.stop()
    with _relay(wis.settings, tmp_path, "--relay-id", "cli-test-1") as proc:
        banner = await _ready(proc, tmp_path)
        assert "relay cli-test-1 publishing" in banner
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert time.monotonic() - started < 10


async def test_an_app_with_its_relay_off_writes_and_leaves_publishing_to_others(
    wis: Wis2l,
) -> None:
    """``WIS2L_OUTBOX_RELAY=false``: the runtime writes events and measures the backlog,
    and publishes nothing itself."""
    import attrs

    await wis.relay.stop()  # the fixture's runtime: the other relay, started below
    off = Settings.from_env({"WIS2L_OUTBOX_RELAY": "false"})
    assert off.outbox_relay is False
    async with Wis2l(attrs.evolve(wis.settings, outbox_relay=False)) as app:
        assert not app.relay.running
        project = await make_project(app)
        await app.components.create(project_id=project, name="c", language="lua", code="x")
        await asyncio.sleep(0.5)
        assert await _unpublished(app) >= 1
        report = await app.health()
        assert report.checks["outbox"].details["size"] >= 1
    await wis.relay.start()
    await eventually(lambda: _none_left(wis), timeout=20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be 1..2000"),
        (["--batch-size", "many"], "invalid int value: 'many'"),
        (["--partitions", "0"], "--partitions must be 1..1024"),
        (["--relay-id", "two words"], "--relay-id"),
        (["--lease", "0.1"], "--lease must be at least 0.5"),
        (["--health-port", "70000"], "--health-port must be 0..65535"),
        (["--metrics"], "--metrics needs --health-port"),
    ],
)
def test_bad_options_are_one_line_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(["relay", *args]))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("wis2l relay: error: ")
    assert message in err


@pytest.mark.slow
async def test_metrics_serves_the_relays_metrics_to_prometheus(wis: Wis2l, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await wis.relay.stop()  # the process is the only relay
    project = await make_project(wis)
    for n in range(5):
        await wis.components.create(project_id=project, name=f"m{n}", language="lua", code="x")
    port = _free_port()
    args = ("--health-port", str(port), "--metrics")
    with _relay(wis.settings, tmp_path, *args) as proc:
        banner = await _ready(proc, tmp_path)
        assert f"metrics on http://127.0.0.1:{port}/metrics" in banner
        await eventually(lambda: _none_left(wis), timeout=20)

        def scrape() -> dict[str, float]:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.headers["content-type"].startswith("text/plain")
                text = r.read().decode()
            return {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }

        async def published() -> bool:
            samples = await asyncio.to_thread(scrape)
            return samples.get("wis2l_outbox_published_total", 0) >= 5

        await eventually(published, timeout=20)
        samples = await asyncio.to_thread(scrape)
        assert samples["messaging_client_sent_messages_total"] >= 5
        assert samples["wis2l_outbox_publish_latency_seconds_count"] >= 5
        assert "db_client_connection_max" in samples  # the relay's pool
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0


def test_production_with_nats_down_fails_in_one_line(
    wis2l_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith(("DATABASE_", "NATS_", "REDIS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", wis2l_database_url)
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("WIS2L_ENV", "production")
    monkeypatch.setenv("WIS2L_NATS_CONNECT_TIMEOUT", "1")
    assert main(["relay"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("wis2l relay: ServiceUnavailable: nats: cannot reach")


async def test_run_until_signal_in_process_publishes_serves_and_stops(
    wis: Wis2l, capsys: pytest.CaptureFixture[str]
) -> None:
    """The relay process's whole run in this process: started, health and /metrics on a
    port, a SIGTERM (sent once it is up), stopped; what it printed."""
    import httpx

    from wis2l_core.cli.relay import RelayProcess

    await wis.relay.stop()  # the in-process relay below is the only one
    project = await make_project(wis)
    await wis.components.create(project_id=project, name="c", language="lua", code="x")
    process = RelayProcess(wis.settings, relay_id="inproc", batch_size=10, poll_interval=0.1)
    seen: dict[str, object] = {}

    def started() -> None:
        async def look_then_stop() -> None:
            await eventually(lambda: _none_left(wis), timeout=20)
            banner = capsys.readouterr().err
            port = int(banner.split("health on http://127.0.0.1:")[1].split("/")[0])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                seen["health"] = (await http.get("/health")).json()
                seen["metrics"] = (await http.get("/metrics")).text
            seen["banner"] = banner
            os.kill(os.getpid(), signal.SIGTERM)

        seen["task"] = asyncio.get_running_loop().create_task(look_then_stop())

    code = await process.run_until_signal("127.0.0.1", 0, metrics=True, on_started=started)
    assert code == 0
    assert "relay inproc publishing (16 partitions)" in str(seen["banner"])
    assert "metrics on http://127.0.0.1:" in str(seen["banner"])
    health = seen["health"]
    assert isinstance(health, dict)
    assert set(health["checks"]) >= {"database", "nats", "outbox"}
    assert "wis2l_outbox_published_total" in str(seen["metrics"])
    assert process.stopping
    assert process.relay.published >= 1
    assert "stopped; published" in capsys.readouterr().err
