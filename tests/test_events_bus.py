"""EventBus against a real NATS: stream provisioning, publishing, subscribers, DLQ, tail."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import attrs
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StorageType, StreamConfig
from tests.helpers import eventually, field_is, has, make_project

from wis2l_core.cli import main
from wis2l_core.config import Settings
from wis2l_core.errors import ConfigError, ServiceUnavailable, ValidationError, Wis2lError
from wis2l_core.events import (
    CATALOGUE,
    BuildCompleted,
    BuildProgress,
    ComponentCreated,
    DeploymentCompleted,
    DomainEvent,
    EventBus,
    TokensSynced,
    TokenUpdated,
    asyncapi_document,
    encode_event,
)
from wis2l_core.models import Environment, Language, TokenCategory
from wis2l_core.testing.plugin import drop_stream

FAST = (0.05,)  # backoff for the retry tests


async def read_all(bus: EventBus, subject: str, wait: float = 0.5) -> list[Msg]:
    """Every message of ``subject`` in the stream, in stream order."""
    sub = await bus.jetstream.subscribe(
        subject,
        stream=bus.settings.stream_name,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    msgs = []
    try:
        while True:
            msgs.append(await sub.next_msg(timeout=wait))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return msgs


def progress(p: uuid.UUID, value: int) -> BuildProgress:
    return BuildProgress(project_id=p, build_id=p, progress=value)


# -- stream ------------------------------------------------------------------------------


async def test_open_updates_a_drifted_stream_and_keeps_its_messages(
    wis2l_settings: Settings,
) -> None:
    ns, name = wis2l_settings.namespace, wis2l_settings.stream_name
    nc = await nats.connect(list(wis2l_settings.nats_urls))
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[f"{ns}.build.*"],
            storage=StorageType.FILE,
            duplicate_window=10,
        )
    )
    await js.publish(f"{ns}.build.progress", b"{}")
    bus = EventBus(wis2l_settings)
    try:
        await bus.open()
        info = await js.stream_info(name)
        assert info.config.subjects == [f"{ns}.>"]
        assert info.config.duplicate_window == pytest.approx(120)
        assert info.state.messages == 1  # updated in place, nothing lost
        await bus.ensure_stream()  # already right: a no-op
    finally:
        await bus.close(1)
        await nc.close()
        await drop_stream(wis2l_settings)


async def test_replicas_above_one_on_a_single_server_is_a_config_error(
    wis2l_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus(attrs.evolve(wis2l_settings, stream_replicas=3))
    try:
        await bus.open()  # logs, does not raise: the operator must fix the setting
        assert not bus.ready
        assert "WIS2L_STREAM_REPLICAS=3 needs a NATS cluster" in caplog.text
        with pytest.raises(ConfigError) as exc:
            await bus.ensure_stream()
        assert exc.value.variable == "WIS2L_STREAM_REPLICAS"
        with pytest.raises(
            nats.js.errors.NotFoundError, match="stream not found"
        ):  # nothing half-made
            await bus.jetstream.stream_info(wis2l_settings.stream_name)
    finally:
        await bus.close(1)
        await drop_stream(wis2l_settings)
    required = EventBus(attrs.evolve(wis2l_settings, stream_replicas=2))
    with pytest.raises(ConfigError, match="WIS2L_STREAM_REPLICAS=2 needs a NATS cluster"):
        await required.open(require=True)  # production: the typed error, not "unreachable"


async def test_open_creates_the_stream_and_ping_sees_it_go(bus: EventBus) -> None:
    info = await bus.jetstream.stream_info(bus.settings.stream_name)
    assert info.config.storage == StorageType.FILE
    assert info.config.num_replicas == 1  # WIS2L_STREAM_REPLICAS' default
    assert info.config.subjects == [f"{bus.namespace}.>"]
    await bus.ping()
    await bus.jetstream.delete_stream(bus.settings.stream_name)
    with pytest.raises(ServiceUnavailable) as exc:
        await bus.ping()
    assert exc.value.service == "nats"
    # publish heals it: NATS lost the stream, the bus makes it again
    await bus.publish(progress(uuid.uuid4(), 1))
    await bus.ping()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_open_with_nats_down_logs_and_keeps_trying(wis2l_settings: Settings) -> None:
    settings = attrs.evolve(
        wis2l_settings, nats_urls=(f"nats://127.0.0.1:{_free_port()}",), nats_connect_timeout=0.5
    )
    bus = EventBus(settings)
    await bus.open()  # development: no exception
    assert not bus.connected
    assert not bus.ready
    with pytest.raises(ServiceUnavailable, check=has(service="nats")):
        await bus.publish(progress(uuid.uuid4(), 1))
    with pytest.raises(ServiceUnavailable, check=has(service="nats")):
        await bus.ping()
    await bus.close(1)
    await bus.close(1)  # idempotent

    strict = EventBus(settings)
    with pytest.raises(ServiceUnavailable) as exc:
        await strict.open(require=True)
    assert exc.value.service == "nats"
    assert not strict.connected


# -- publishing --------------------------------------------------------------------------


async def test_publish_sends_the_wire_json_with_the_event_id_and_dedupes(bus: EventBus) -> None:
    event = progress(uuid.uuid4(), 42)
    await bus.publish(event)
    await bus.publish(event)  # same id: JetStream keeps one
    msgs = await read_all(bus, bus.subject(BuildProgress))
    assert len(msgs) == 1
    assert msgs[0].subject == f"{bus.namespace}.build.progress"
    assert msgs[0].headers is not None
    assert msgs[0].headers["Nats-Msg-Id"] == str(event.id)
    assert msgs[0].data == encode_event(event)


def _samples(p: uuid.UUID) -> list[DomainEvent]:
    x = uuid.uuid4()
    return [
        ComponentCreated(
            project_id=p, component_id=x, name="Hero", language=Language.RUST, version=1
        ),
        BuildCompleted(project_id=p, build_id=x, target="webgl", artifacts={"zip": "a.zip"}),
        DeploymentCompleted(
            project_id=p,
            deployment_id=x,
            environment=Environment.STAGING,
            version="1.2.3",
            url=None,
        ),
        TokenUpdated(project_id=p, token_id=x, name="c.p", category=TokenCategory.COLOR, version=2),
        TokensSynced(project_id=p, count=3, changed=1),
        progress(p, 7),
    ]


def validate(schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """A strict check of the schema subset the AsyncAPI document uses."""
    types = schema.get("type")
    names = types if isinstance(types, list) else [types] if types else []
    py: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "object": dict,
        "null": type(None),
        "boolean": bool,
        "number": (int, float),
    }
    assert not names or any(isinstance(value, py[n]) for n in names), f"{where}: {value!r}"
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema and value is not None:
        assert value in schema["enum"], where
    if schema.get("format") == "uuid" and isinstance(value, str):
        uuid.UUID(value)
    if schema.get("format") == "date-time" and isinstance(value, str):
        assert datetime.fromisoformat(value).tzinfo is not None, where
    if isinstance(value, dict) and "properties" in schema:
        assert set(schema["required"]) <= set(value), f"{where}: missing fields"
        assert set(value) <= set(schema["properties"]), f"{where}: undocumented fields"
        for key, sub in schema["properties"].items():
            if key in value:
                validate(sub, value[key], f"{where}.{key}")


async def test_published_json_matches_the_documented_schema(bus: EventBus) -> None:
    doc = asyncapi_document(bus.settings)
    schemas = doc["components"]["schemas"]
    for event in _samples(uuid.uuid4()):
        await bus.publish(event)
    msgs = await read_all(bus, f"{bus.namespace}.*.*")
    assert len(msgs) == 6
    for msg in msgs:
        body = json.loads(msg.data)  # plain json, as a Go or TypeScript consumer would
        cls = CATALOGUE[body["type"]]
        channel = doc["channels"][cls.__name__]
        assert channel["address"] == msg.subject
        validate(schemas[cls.__name__], body)
        assert msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == body["id"]


# -- subscribers -------------------------------------------------------------------------


async def test_handler_error_is_redelivered_then_handled(bus: EventBus) -> None:
    seen: list[tuple[int, int]] = []
    failures = {"left": 2}

    @bus.subscribe(BuildProgress, durable="retry", max_deliver=5, backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        seen.append((event.progress, len(seen)))
        if event.progress == 1 and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("flaky")

    assert handle.__name__ == "handle"  # the decorator returns the handler
    await bus.start_subscribers()
    p = uuid.uuid4()
    await bus.publish(progress(p, 1))
    await bus.publish(progress(p, 2))
    await eventually(lambda: [v for v, _ in seen].count(1) == 3 and 2 in [v for v, _ in seen])
    await asyncio.sleep(0.3)
    assert [v for v, _ in seen].count(1) == 3  # two failures, then handled: no more
    assert await read_all(bus, bus.dlq_subject(bus.subject(BuildProgress))) == []


async def test_poison_message_goes_to_the_dlq_and_the_next_one_is_handled(bus: EventBus) -> None:
    seen: list[int] = []

    async def handle(event: BuildProgress) -> None:
        seen.append(event.progress)

    bus.subscribe(BuildProgress, handle, durable="poison", concurrency=1, backoff=FAST)
    await bus.start_subscribers()
    subject = bus.subject(BuildProgress)
    await bus.jetstream.publish(subject, b"{not json", headers={"Nats-Msg-Id": "bad-1"})
    await bus.jetstream.publish(subject, b'{"type": "build.progress", "progress": 5}')
    await bus.publish(progress(uuid.uuid4(), 9))
    await eventually(lambda: seen == [9])
    dead = await read_all(bus, bus.dlq_subject(subject))
    assert len(dead) == 2
    assert dead[0].data == b"{not json"
    assert dead[0].subject == f"{bus.namespace}.dlq.{bus.namespace}.build.progress"
    headers = dead[0].headers or {}
    assert headers["Wis2l-Dlq-Reason"] == "decode"
    assert "not JSON" in headers["Wis2l-Dlq-Error"]
    assert headers["Wis2l-Dlq-Subject"] == subject
    assert headers["Wis2l-Dlq-Deliveries"] == "1"
    assert headers["Wis2l-Event-Id"] == "bad-1"
    assert "project_id" in (dead[1].headers or {})["Wis2l-Dlq-Error"]
    info = await bus.jetstream.consumer_info(bus.settings.stream_name, "poison-build-progress")
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_after_max_deliver_the_message_is_dead_lettered_and_others_flow(
    bus: EventBus,
) -> None:
    ok: list[int] = []
    tries: list[int] = []

    @bus.subscribe(BuildProgress, durable="maxd", max_deliver=3, concurrency=2, backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        if event.progress == 13:
            tries.append(13)
            raise ValueError("unlucky\nnumber")
        ok.append(event.progress)

    await bus.start_subscribers()
    p = uuid.uuid4()
    bad = progress(p, 13)
    await bus.publish(bad)
    for i in range(20):
        await bus.publish(progress(p, 50 + i))
    dlq = bus.dlq_subject(bus.subject(BuildProgress))
    await eventually(lambda: len(ok) == 20 and len(tries) == 3)
    await asyncio.sleep(0.2)
    assert len(tries) == 3
    dead = await read_all(bus, dlq)
    assert len(dead) == 1
    headers = dead[0].headers or {}
    assert headers["Wis2l-Dlq-Reason"] == "handler"
    assert headers["Wis2l-Dlq-Error"] == "ValueError: unlucky number"
    assert headers["Wis2l-Dlq-Deliveries"] == "3"
    assert headers["Wis2l-Dlq-Consumer"] == "maxd-build-progress"
    assert headers["Wis2l-Event-Id"] == str(bad.id)
    assert json.loads(dead[0].data)["id"] == str(bad.id)


async def test_concurrency_is_bounded_and_close_waits_for_running_handlers(
    bus: EventBus,
) -> None:
    running = 0
    peak = 0
    finished: list[int] = []
    started = asyncio.Event()

    @bus.subscribe(TokensSynced, durable="slow", concurrency=3)
    async def handle(event: TokensSynced) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.set()
        await asyncio.sleep(0.3)
        running -= 1
        finished.append(event.count)

    await bus.start_subscribers()
    p = uuid.uuid4()
    for i in range(9):
        await bus.publish(TokensSynced(project_id=p, count=i, changed=0))
    await eventually(lambda: len(finished) >= 3)
    assert peak == 3
    await asyncio.wait_for(started.wait(), 5)
    await eventually(lambda: running > 0)
    in_flight = running
    done_before = len(finished)
    await bus.close(5)
    assert len(finished) == done_before + in_flight  # handlers finished before close returned
    assert running == 0


async def test_subscribe_after_start_and_bad_options(bus: EventBus) -> None:
    await bus.start_subscribers()
    seen: list[str] = []

    async def handle(event: DeploymentCompleted) -> None:
        seen.append(event.version)

    bus.subscribe(DeploymentCompleted, handle, durable="late")
    with pytest.raises(ValidationError) as exc:
        bus.subscribe(DeploymentCompleted, handle, durable="late")
    assert exc.value.field == "durable"
    for kwargs, field in [
        ({"durable": "a.b"}, "durable"),
        ({"max_deliver": 0}, "max_deliver"),
        ({"concurrency": 0}, "concurrency"),
        ({"backoff": ()}, "backoff"),
    ]:
        with pytest.raises(ValidationError) as exc:
            bus.subscribe(DeploymentCompleted, handle, **kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field
    await bus.publish(_samples(uuid.uuid4())[2])
    await eventually(lambda: seen == ["1.2.3"])


# -- CLI ---------------------------------------------------------------------------------


async def test_tail_prints_decoded_events_one_per_line(
    bus: EventBus, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", bus.settings.nats_urls[0])
    monkeypatch.setenv("WIS2L_NAMESPACE", bus.namespace)
    monkeypatch.setenv("WIS2L_STREAM", bus.settings.stream_name)
    events = _samples(uuid.uuid4())[:2]
    for event in events:
        await bus.publish(event)
    await bus.jetstream.publish(bus.subject("build.progress"), b"junk")
    code = await asyncio.to_thread(main, ["events", "tail", "--all", "--count", "3"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines[:2]] == [json.loads(encode_event(e)) for e in events]
    assert json.loads(lines[2])["raw"] == "junk"

    only = await asyncio.to_thread(main, ["events", "tail", "build.*", "--all", "--count", "1"])
    assert only == 0
    assert json.loads(capsys.readouterr().out)["type"] == "build.completed"

    dlq = bus.dlq_subject(bus.subject("build.progress"))
    await bus.jetstream.publish(dlq, b"junk", headers={"Wis2l-Dlq-Reason": "decode"})
    dead = await asyncio.to_thread(main, ["events", "tail", "dlq.>", "--all", "--count", "1"])
    assert dead == 0
    line = json.loads(capsys.readouterr().out)
    assert line == {"subject": dlq, "headers": {"Wis2l-Dlq-Reason": "decode"}, "raw": "junk"}


async def test_tail_with_nats_down_fails_fast_with_one_line() -> None:
    """No retries for two minutes, no tracebacks: one line on stderr, exit 3."""
    env = {
        **os.environ,
        "NATS_URL": f"nats://s3cr3t-token@127.0.0.1:{_free_port()}",
        "WIS2L_NATS_CONNECT_TIMEOUT": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wis2l_core.cli",
        "events",
        "tail",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("wis2l: cannot reach NATS at nats://")
    assert "s3cr3t-token" not in lines[0]


@pytest.mark.timing
def test_tail_with_nats_down_gives_up_within_the_connect_timeout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WIS2L_NATS_CONNECT_TIMEOUT", "1")
    url = f"nats://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    assert main(["events", "tail", "--nats-url", url]) == 3
    assert time.monotonic() - start < 5  # the connect timeout and a margin, not minutes
    assert capsys.readouterr().err.count("\n") == 1


async def test_tail_on_a_fresh_server_creates_the_stream_and_waits(
    wis2l_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_URL", wis2l_settings.nats_urls[0])
    monkeypatch.setenv("WIS2L_NAMESPACE", wis2l_settings.namespace)
    monkeypatch.setenv("WIS2L_STREAM", wis2l_settings.stream_name)
    nc = await nats.connect(list(wis2l_settings.nats_urls))
    js = nc.jetstream()
    try:
        with pytest.raises(nats.js.errors.NotFoundError, match="stream not found"):
            await js.stream_info(wis2l_settings.stream_name)  # a fresh server: no stream
        tail = asyncio.create_task(asyncio.to_thread(main, ["events", "tail", "--count", "1"]))
        for _ in range(500):  # the tail made the stream, then subscribed
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await js.stream_info(wis2l_settings.stream_name)
                if info.state.consumer_count:
                    break
            await asyncio.sleep(0.02)
        event = progress(uuid.uuid4(), 5)
        await js.publish(
            f"{wis2l_settings.namespace}.build.progress",
            encode_event(event),
            headers={"Nats-Msg-Id": str(event.id)},
        )
        assert await asyncio.wait_for(tail, 20) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out) == json.loads(encode_event(event))
        assert captured.err == ""
    finally:
        await nc.close()
        await drop_stream(wis2l_settings)


# -- CloudEvents -------------------------------------------------------------------------


async def test_published_messages_are_binary_mode_cloudevents(bus: EventBus) -> None:
    event = progress(uuid.uuid4(), 42)
    await bus.publish(event)
    (msg,) = await read_all(bus, bus.subject(BuildProgress))
    body = json.loads(msg.data)
    assert msg.headers == {
        "ce-specversion": "1.0",
        "ce-type": "wis2l.build.progress",
        "ce-source": f"/wis2l-core/{bus.namespace}",
        "ce-id": str(event.id),
        "ce-time": body["occurred_at"],
        "ce-datacontenttype": "application/json",
        "content-type": "application/json",
        "Nats-Msg-Id": str(event.id),
    }
    assert datetime.fromisoformat(msg.headers["ce-time"]) == event.occurred_at
    assert body["type"] == "build.progress"  # kept for consumers that read the body only


async def test_the_outbox_relay_sends_the_same_headers(wis: Any) -> None:
    p = await make_project(wis)
    build = await wis.builds.create(project_id=p, target="webgl")
    await wis.builds.update(build.id, status="building")
    subject = wis.bus.subject(BuildProgress).replace("progress", "started")
    (msg,) = await _wait_for_messages(wis.bus, subject, 1)
    body = json.loads(msg.data)
    headers = msg.headers or {}
    assert headers["ce-type"] == "wis2l.build.started"
    assert headers["ce-id"] == headers["Nats-Msg-Id"] == body["id"]
    assert headers["ce-time"] == body["occurred_at"]
    assert headers["ce-source"] == f"/wis2l-core/{wis.bus.namespace}"
    assert headers["ce-specversion"] == "1.0"


async def _wait_for_messages(bus: EventBus, subject: str, n: int) -> list[Msg]:
    for _ in range(250):
        msgs = await read_all(bus, subject, wait=0.1)
        if len(msgs) >= n:
            return msgs
    raise AssertionError(f"fewer than {n} messages on {subject}")


def _foreign_body(event: BuildProgress) -> dict[str, Any]:
    """What another service sends: the documented fields, no ``type``."""
    return {
        "id": str(event.id),
        "occurred_at": event.occurred_at.isoformat(),
        "project_id": str(event.project_id),
        "build_id": str(event.build_id),
        "progress": event.progress,
    }


async def test_a_body_without_type_is_read_from_the_subject_or_ce_type(bus: EventBus) -> None:
    seen: list[BuildProgress] = []

    @bus.subscribe(BuildProgress, durable="foreign", backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        seen.append(event)

    await bus.start_subscribers()
    subject = bus.subject(BuildProgress)
    p = uuid.uuid4()
    plain, with_ce, minimal = progress(p, 1), progress(p, 2), progress(p, 3)
    # 1. the exact documented wire fields, no headers at all: the subject names the type
    await bus.jetstream.publish(subject, json.dumps(_foreign_body(plain)).encode())
    # 2. a CloudEvent whose ce-type names it, with a foreign ce-source
    await bus.jetstream.publish(
        subject,
        json.dumps(_foreign_body(with_ce)).encode(),
        headers={
            "ce-specversion": "1.0",
            "ce-type": "wis2l.build.progress",
            "ce-source": "/other-service",
            "ce-id": str(with_ce.id),
        },
    )
    # 3. id and time only in the CloudEvents headers (as an SDK sends them)
    body = _foreign_body(minimal)
    del body["id"], body["occurred_at"]
    await bus.jetstream.publish(
        subject,
        json.dumps(body).encode(),
        headers={
            "CE-SpecVersion": "1.0",  # header names are case-insensitive
            "ce-type": "com.example.build.progress",  # a vendor's name does not contradict
            "ce-source": "/other-service",
            "ce-id": str(minimal.id),
            "ce-time": minimal.occurred_at.isoformat().replace("+", "%2B"),
        },
    )
    await eventually(lambda: len(seen) == 3)
    assert sorted(seen, key=lambda e: e.progress) == [plain, with_ce, minimal]
    assert await read_all(bus, bus.dlq_subject(subject)) == []


async def test_a_type_that_contradicts_the_subject_is_dead_lettered(bus: EventBus) -> None:
    seen: list[int] = []

    @bus.subscribe(BuildProgress, durable="contra", concurrency=1, backoff=FAST)
    async def handle(event: BuildProgress) -> None:
        seen.append(event.progress)

    await bus.start_subscribers()
    subject = bus.subject(BuildProgress)
    p = uuid.uuid4()
    in_body = _foreign_body(progress(p, 1)) | {"type": "build.failed"}
    await bus.jetstream.publish(subject, json.dumps(in_body).encode())
    await bus.jetstream.publish(
        subject,
        json.dumps(_foreign_body(progress(p, 2))).encode(),
        headers={"ce-type": "wis2l.deployment.failed"},
    )
    await bus.publish(progress(p, 3))
    await eventually(lambda: seen == [3])
    dead = await read_all(bus, bus.dlq_subject(subject))
    assert [(d.headers or {})["Wis2l-Dlq-Reason"] for d in dead] == ["decode", "decode"]
    errors = [(d.headers or {})["Wis2l-Dlq-Error"] for d in dead]
    assert "'build.failed'" in errors[0]
    assert "'deployment.failed'" in errors[1]


# -- publish: validation and errors -------------------------------------------------------


async def test_publish_refuses_a_malformed_event_before_sending(bus: EventBus) -> None:
    with pytest.raises(ValidationError) as exc:  # refused as it is built
        BuildProgress(project_id="*", build_id=uuid.uuid4(), progress=1)  # type: ignore[arg-type]
    assert exc.value.field == "project_id"
    # What a JSON object field holds is checked as the body is encoded: still refused
    # before anything is sent.
    event = BuildCompleted(
        project_id=uuid.uuid4(), build_id=uuid.uuid4(), target="webgl", artifacts={"x": object()}
    )
    with pytest.raises(ValidationError) as exc:
        await bus.publish(event)
    assert exc.value.field == "event"
    with pytest.raises(ValidationError, check=field_is("event")):
        await bus.publish("build.progress")  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as exc:
        bus.subject("build.*")
    assert exc.value.field == "type"
    assert await read_all(bus, f"{bus.namespace}.>") == []


async def test_publish_lets_no_driver_exception_out(wis2l_settings: Settings) -> None:
    settings = attrs.evolve(wis2l_settings)
    # Settings refuse such a name now; force one in to reach nats-py's own check.
    object.__setattr__(settings, "stream_name", "A.B")
    bus = EventBus(settings)
    await bus.open()
    try:
        with pytest.raises(Wis2lError) as exc:
            await bus.publish(progress(uuid.uuid4(), 1))
        assert exc.value.__cause__ is not None  # the driver's error is kept
        assert not isinstance(exc.value, ValidationError)  # the event was fine
    finally:
        await bus.close(1)


async def test_an_event_larger_than_the_servers_limit_is_a_validation_error(
    bus: EventBus,
) -> None:
    huge = BuildCompleted(
        project_id=uuid.uuid4(), build_id=uuid.uuid4(), target="webgl", artifacts={"x": "y" * 2**21}
    )
    with pytest.raises(ValidationError) as exc:
        await bus.publish(huge)
    assert isinstance(exc.value.__cause__, nats.errors.MaxPayloadError)
    assert exc.value.field == "event"


async def test_logs_never_show_a_nats_token(
    wis2l_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wis2l_core")
    secret = "t0ps3cr3tt0k3n"
    settings = attrs.evolve(
        wis2l_settings,
        nats_urls=(f"nats://{secret}@127.0.0.1:{_free_port()}",),
        nats_connect_timeout=0.3,
    )
    bus = EventBus(settings)
    await bus.open()
    await bus.close(0)
    assert any("not ready yet" in r.getMessage() for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text
