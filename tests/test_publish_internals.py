"""The lean publisher (events/_publish.py): the nats-py internals it writes through exist,
its wire bytes are nats-py's, and without those internals it falls back to the public API.

A nats-py upgrade that renames ``Client._send_command`` or ``_flush_pending`` fails
``test_the_installed_nats_py_has_the_internals``; the bus then still works (the fallback
test), only slower.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from uuid import uuid4

import nats
import nats.errors
import nats.js.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from wis2l_core import Settings
from wis2l_core.errors import ValidationError
from wis2l_core.events import BuildCompleted, BuildProgress, EventBus
from wis2l_core.events._publish import HeaderEncoder, Publisher, check
from wis2l_core.events.bus import EncodedEvent

CONSTANT = frozenset({"ce-specversion", "content-type"})


@pytest.fixture
async def nc(wis2l_settings: Settings) -> AsyncIterator[NatsClient]:
    client = await nats.connect(list(wis2l_settings.nats_urls))
    yield client
    await client.close()


async def _received(nc: NatsClient, subject: str, send: Any, count: int = 1) -> list[Msg]:
    """Subscribe to ``subject`` (core NATS), run ``send()``, return what arrives."""
    sub = await nc.subscribe(subject)
    await nc.flush()
    await send()
    got = [await sub.next_msg(timeout=5) for _ in range(count)]
    await sub.unsubscribe()
    return got


async def test_the_installed_nats_py_has_the_internals(nc: NatsClient) -> None:
    assert check(nc) is None
    publisher = Publisher(nc, HeaderEncoder())
    await publisher.start()
    assert publisher.lean


def test_check_names_what_is_missing() -> None:
    class NoInternals:
        stats: ClassVar[dict[str, int]] = {"out_msgs": 0, "out_bytes": 0}

        def _send_command(self, cmd: bytes) -> None: ...  # not a coroutine function

        async def _flush_pending(self) -> None: ...

    problem = check(NoInternals())
    assert problem is not None
    assert "_send_command" in problem
    assert check(object()) is not None


async def test_lean_bytes_are_what_nats_py_sends(nc: NatsClient) -> None:
    """The same headers and body arrive, whether nats-py or the lean path encoded them."""
    publisher = Publisher(nc, HeaderEncoder(CONSTANT))
    await publisher.start()
    headers = {
        "ce-specversion": "1.0",
        "content-type": "application/json",
        "ce-id": "a b",
        "Nats-Msg-Id": " padded ",
        "x-multi": "line\r\nbreak",
    }
    subject = nc.new_inbox()

    async def lean() -> None:
        await publisher.send([(subject, b'{"n": 1}', headers)], 1)

    async def plain() -> None:
        await nc.publish(subject, b'{"n": 1}', headers=headers)

    (mine,) = await _received(nc, subject, lean)
    (theirs,) = await _received(nc, subject, plain)
    assert mine.data == theirs.data == b'{"n": 1}'
    assert mine.headers == theirs.headers
    assert mine.headers is not None
    assert mine.headers["x-multi"] == "line  break"


_names = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)
_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=30,
).map(str.strip)


@given(headers=st.dictionaries(_names, _values, min_size=1, max_size=6))
def test_encoded_headers_match_nats_py(headers: dict[str, str]) -> None:
    """Byte for byte what nats-py's own encoder writes (the cache changes nothing)."""
    expected = bytearray(b"NATS/1.0\r\n")
    for key, value in headers.items():
        expected += key.encode() + b": " + value.strip().encode() + b"\r\n"
    expected += b"\r\n"
    encoder = HeaderEncoder(frozenset(headers))
    assert encoder.encode(headers) == bytes(expected)
    assert encoder.encode(headers) == bytes(expected)  # from the cache


def test_a_bad_header_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bad NATS header name"):
        HeaderEncoder().encode({"bad name": "x"})


async def test_acks_and_refusals_come_back_per_message(bus: EventBus) -> None:
    publisher = bus._live_publisher()
    good = bus.subject(BuildProgress)
    nowhere = f"{bus.namespace}-none.build.progress"  # no stream takes it
    too_big = b"x" * (bus._nc.max_payload + 1)  # type: ignore[union-attr]
    acks = await publisher.send(
        [(good, b"{}", {"Nats-Msg-Id": "m1"}), (nowhere, b"{}", {}), (good, b"{}", {})], 3
    )
    ok, no_stream, third = await acks.wait(5)
    assert ok is None
    assert third is None
    assert isinstance(no_stream, nats.js.errors.NoStreamResponseError)
    acks = await publisher.send([(good, b"{}", {}), (good, too_big, {}), (good, b"{}", {})], 3)
    first, big, after = await acks.wait(5)
    assert first is None
    assert isinstance(big, nats.errors.MaxPayloadError)
    assert after is big  # the batch stops at the first message it cannot write
    assert not publisher._waiting


async def test_unanswered_messages_time_out_and_are_forgotten(nc: NatsClient) -> None:
    """A message nobody answers (a core subject, no stream) times out, and its slot goes."""
    publisher = Publisher(nc, HeaderEncoder())
    await publisher.start()
    listener = await nc.subscribe("wis2l-test-silent.>")  # takes it, never replies
    acks = await publisher.send([("wis2l-test-silent.x", b"{}", {})], 1)
    assert isinstance((await acks.wait(0.2))[0], TimeoutError)
    assert not publisher._waiting
    await listener.unsubscribe()


async def test_the_bus_falls_back_to_the_public_api(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the internals the bus publishes through ``Client.publish``: same messages."""
    monkeypatch.setattr("wis2l_core.events._publish.check", lambda nc: "gone")
    publisher = Publisher(bus._nc, bus._encoder)  # type: ignore[arg-type]
    await publisher.start()
    assert not publisher.lean
    monkeypatch.setattr(bus, "_publisher", publisher)
    calls = 0
    plain = bus._nc.publish  # type: ignore[union-attr]

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await plain(*args, **kwargs)

    monkeypatch.setattr(bus._nc, "publish", counted)
    pid = uuid4()
    event = BuildProgress(project_id=pid, build_id=pid, progress=5)
    await bus.publish(event)
    acks = await bus.send_encoded([EncodedEvent("build.progress", b"{}", "e-1")])
    assert await acks.wait(5) == [None]
    assert calls == 2
    info = await bus.jetstream.stream_info(bus.settings.stream_name)
    assert info.state.messages == 2


async def test_a_too_large_event_is_a_validation_error(bus: EventBus) -> None:
    pid = uuid4()
    limit = bus._nc.max_payload  # type: ignore[union-attr]
    event = BuildCompleted(
        project_id=pid, build_id=pid, target="web", artifacts={"blob": "x" * limit}
    )
    with pytest.raises(ValidationError, match="larger than NATS accepts"):
        await bus.publish(event)


async def test_a_batch_reaches_the_stream_in_order(bus: EventBus) -> None:
    messages = [EncodedEvent("build.progress", b'{"n": %d}' % i, f"id-{i}") for i in range(600)]
    acks = await bus.send_encoded(messages)
    assert await acks.wait(10) == [None] * 600
    sub = await bus.jetstream.subscribe(bus.subject(BuildProgress), ordered_consumer=True)
    got = [await sub.next_msg(timeout=5) for _ in range(600)]
    assert [m.data for m in got] == [m.payload for m in messages]
    assert got[0].headers is not None
    assert got[0].headers["Nats-Msg-Id"] == "id-0"
    assert got[0].headers["ce-type"] == "wis2l.build.progress"
    await sub.unsubscribe()
    await asyncio.sleep(0)


async def test_a_cancelled_send_forgets_its_slots(nc: NatsClient) -> None:
    publisher = Publisher(nc, HeaderEncoder(), chunk=10)
    await publisher.start()
    listener = await nc.subscribe("wis2l-test-silent.>")  # takes them, never replies
    batch = [("wis2l-test-silent.y", b"{}", {})] * 100
    task = asyncio.create_task(publisher.send(batch, 100))
    await asyncio.sleep(0)  # the send runs to its first yield, after 10 messages
    assert publisher._waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not publisher._waiting
    await listener.unsubscribe()


async def test_a_subject_that_would_break_the_protocol_is_refused(nc: NatsClient) -> None:
    publisher = Publisher(nc, HeaderEncoder())
    await publisher.start()
    acks = await publisher.send([("a b", b"{}", {}), ("ok.subject", b"{}", {})], 2)
    bad, rest = await acks.wait(1)
    assert isinstance(bad, nats.errors.BadSubjectError)
    assert rest is bad
    assert nc.is_connected  # nothing malformed reached the server
