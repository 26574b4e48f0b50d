"""A lean JetStream publisher: pre-encoded headers, ``HPUB`` written in batches.

nats-py's ``JetStreamContext.publish_async`` costs more per message than the relay's own
database work: it validates and encodes every header of every message, waits on a
semaphore, draws a token and kicks its flusher once per message. :class:`Publisher` sends
the same messages (the same wire bytes, the same JetStream acks) for a fraction of that:

- :class:`HeaderEncoder` turns a header dict into the ``NATS/1.0`` block, keeping the
  encoded line of each pair that repeats (``ce-specversion``, ``ce-type``, ...), so only
  the per-message values (``ce-id``, ``ce-time``, ``Nats-Msg-Id``, trace context) are
  encoded. Headers stay a plain dict until then, so anyone may add to it.
- One reply subscription per connection (``_INBOX.<nuid>.*``, made through the public
  API); each message's reply subject names its slot in a :class:`PendingAcks`.
- Each message is one ``HPUB`` command queued with the client's ``_send_command``; the
  client's flusher is kicked once per chunk instead of once per message.

The last step uses nats-py internals. :func:`check` verifies at connect time that they
exist as this module expects (tests/test_publish_internals.py pins them); when they do
not, the publisher uses the public ``Client.publish`` with the same reply subjects, which
is slower but equivalent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import nats.errors
import nats.js.api
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from wis2l_core.events.streams import API_TIMEOUT

__all__ = ["HeaderEncoder", "PendingAcks", "Publisher", "check"]

log = logging.getLogger("wis2l_core.events")

_CRLF = b"\r\n"
_HEAD = b"NATS/1.0\r\n"
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name NATS accepts (the same pattern nats-py checks)."""
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_NO_RESPONDERS = "503"
Message = tuple[str, bytes, Mapping[str, str]]
"""What :meth:`Publisher.send` takes: subject, payload, headers."""
_CACHE_LIMIT = 4096
"""Encoded lines :class:`HeaderEncoder` keeps (constant pairs; a few per event type)."""


class HeaderEncoder:
    """Encodes NATS headers (a dict) into the ``NATS/1.0`` block ``HPUB`` carries.

    The bytes are those nats-py writes for the same dict: names checked against NATS's
    token characters (a bad one raises ``ValueError``), values stripped and CR/LF turned
    into spaces, empty names skipped.

    Args:
        constant: header names whose values repeat across messages (a few values each);
            their encoded lines are kept and reused.
    """

    def __init__(self, constant: frozenset[str] = frozenset()) -> None:
        self._constant = constant
        self._lines: dict[tuple[str, str], bytes] = {}
        self._names: dict[str, bytes] = {}

    def encode(self, headers: Mapping[str, str]) -> bytes:
        """The header block of ``headers``, ending with the empty line.

        Raises:
            ValueError: a header name NATS does not accept.
        """
        parts = [_HEAD]
        add = parts.append
        lines, names, constant = self._lines, self._names, self._constant
        for key, value in headers.items():
            if key in constant:
                line = lines.get((key, value))
                if line is None:
                    name = self._name(key)
                    line = name + self._value(value) + _CRLF if name else b""
                    if len(lines) < _CACHE_LIMIT:
                        lines[(key, value)] = line
                add(line)
                continue
            known = names.get(key)
            name = self._name(key) if known is None else known
            if name:
                add(name)
                add(self._value(value))
                add(_CRLF)
        add(_CRLF)
        return b"".join(parts)

    def _name(self, key: str) -> bytes:
        """``b"<name>: "`` for a header name (``b""`` for an empty one, which is skipped)."""
        name = self._names.get(key)
        if name is None:
            stripped = key.strip()
            if stripped and not _KEY.fullmatch(stripped):
                raise ValueError(f"bad NATS header name: {key!r}")
            name = stripped.encode() + b": " if stripped else b""
            if len(self._names) < _CACHE_LIMIT:
                self._names[key] = name
        return name

    @staticmethod
    def _value(value: str) -> bytes:
        value = value.strip()
        if "\r" in value or "\n" in value:
            value = value.translate(_NEWLINES)
        return value.encode()


def check(nc: Any) -> str | None:
    """Whether ``nc`` has the nats-py internals the lean path writes through.

    Returns:
        ``None`` when it does, else what is missing (the publisher then uses the public
        ``publish``).
    """
    send = getattr(nc, "_send_command", None)
    flush = getattr(nc, "_flush_pending", None)
    if not (inspect.iscoroutinefunction(send) and inspect.iscoroutinefunction(flush)):
        return "Client._send_command/_flush_pending are not coroutine functions"
    try:
        params = list(inspect.signature(send).parameters)
    except (TypeError, ValueError):
        return "Client._send_command has no readable signature"
    if params[:1] != ["cmd"]:
        return f"Client._send_command takes {params}, not (cmd, ...)"
    stats = getattr(nc, "stats", None)
    if not isinstance(stats, dict) or not {"out_msgs", "out_bytes"} <= stats.keys():
        return "Client.stats has no out_msgs/out_bytes counters"
    if not isinstance(getattr(nc, "_pending_data_size", None), int):
        return "Client._pending_data_size is missing"
    return None


OnAck = Callable[[int, "BaseException | None"], None]
"""Called with a message's index and its outcome when its ack comes (or is given up)."""


class PendingAcks:
    """The JetStream acks of one batch sent by :meth:`Publisher.send`.

    Await :meth:`wait` for the outcome of each message.
    """

    def __init__(self, publisher: Publisher, on_ack: OnAck | None = None) -> None:
        self._publisher = publisher
        self._on_ack = on_ack
        self._tokens: list[bytes] = []
        self._results: list[BaseException | None] = []
        self._outstanding = 0
        self._failed: BaseException | None = None  # what stopped the send
        self._done: asyncio.Future[None] | None = None

    def _add(self, token: bytes) -> bytes:
        self._publisher._waiting[token] = (self, len(self._tokens))
        self._tokens.append(token)
        self._results.append(None)
        self._outstanding += 1
        return token

    def _remove_last(self) -> None:
        if self._publisher._waiting.pop(self._tokens.pop(), None) is not None:
            self._outstanding -= 1
        self._results.pop()

    @property
    def written(self) -> int:
        """How many messages were written (the rest were not sent)."""
        return len(self._tokens)

    @property
    def failed(self) -> BaseException | None:
        """What stopped the send, if anything did."""
        return self._failed

    def _resolve(self, index: int, error: BaseException | None) -> None:
        self._results[index] = error
        if self._on_ack is not None:
            self._on_ack(index, error)
        self._outstanding -= 1
        if self._outstanding == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def wait(self, timeout: float = API_TIMEOUT) -> list[BaseException | None]:
        """Wait up to ``timeout`` seconds for every ack.

        Returns:
            One entry per message, in order: ``None`` if acknowledged, else the error (a
            ``TimeoutError`` when no ack came in time, what the send raised for the
            messages it did not send).
        """
        if self._outstanding:
            self._done = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._done, timeout)
            except TimeoutError:
                pass
            finally:
                if self._outstanding:
                    self._give_up()
        results = self._results
        if self._failed is not None:
            results = [self._failed if r is _UNSENT else r for r in results]
        return results

    def _give_up(self) -> None:
        waiting = self._publisher._waiting
        for i, token in enumerate(self._tokens):
            if waiting.pop(token, None) is not None:
                self._results[i] = late = TimeoutError("no JetStream ack in time")
                if self._on_ack is not None:
                    self._on_ack(i, late)
        self._outstanding = 0


class _Unsent(Exception):
    """Placeholder result of a message the send never wrote."""


_UNSENT = _Unsent()


class Publisher:
    """Publishes to JetStream on one nats-py connection and collects the acks.

    No I/O in the constructor; :meth:`start` subscribes to the reply subjects (once per
    connection; nats-py re-subscribes after a reconnect).

    Args:
        nc: a connected nats-py client.
        encoder: the header encoder (shared, so its cache is).
        chunk: messages queued before the client's flusher is kicked and the loop yields.
    """

    def __init__(self, nc: NatsClient, encoder: HeaderEncoder, *, chunk: int = 250) -> None:
        self._nc = nc
        self._encoder = encoder
        self._chunk = chunk
        self._waiting: dict[bytes, tuple[PendingAcks, int]] = {}
        self._prefix = b""
        self._next = 0
        self._subjects: set[str] = set()  # checked already
        self.lean = False
        """True when messages are written as ``HPUB`` commands (see :func:`check`)."""

    async def start(self) -> None:
        """Subscribe to the reply subjects and pick the write path. Idempotent."""
        if self._prefix:
            return
        problem = check(self._nc)
        self.lean = problem is None
        if problem is not None:
            log.info("nats-py internals changed (%s): publishing through the public API", problem)
        prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(prefix + "*", cb=self._on_reply)
        self._prefix = prefix.encode()

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject.encode()[len(self._prefix) :]
        entry = self._waiting.pop(token, None)
        if entry is None:  # already given up on
            return
        pending, index = entry
        pending._resolve(index, _ack_error(msg))

    async def send(
        self, messages: Iterable[Message], total: int, *, on_ack: OnAck | None = None
    ) -> PendingAcks:
        """Write ``total`` ``messages`` (subject, payload, headers) in order; do not wait
        for their acks.

        A message that cannot be written (too large, a bad header or subject, the
        connection down) stops the batch: it and the rest get that error as their result.
        """
        assert self._prefix, "Publisher.start() first"
        pending = PendingAcks(self, on_ack)
        try:
            await self._write(messages, pending)
        except (nats.errors.Error, OSError, TimeoutError, ValueError) as exc:
            pending._failed = exc
        except BaseException:  # cancelled: nobody will wait for these acks
            pending._give_up()
            raise
        pending._results.extend([_UNSENT] * (total - len(pending._tokens)))
        return pending

    async def _write(self, messages: Iterable[Message], pending: PendingAcks) -> None:
        nc, prefix = self._nc, self._prefix
        max_payload, stats = nc.max_payload, nc.stats
        lean, encode, chunk = self.lean, self._encoder.encode, self._chunk
        subjects = self._subjects
        writing: bytes | None = None
        try:
            for n, (subject, payload, headers) in enumerate(messages):
                if not nc.is_connected:  # rows wait for the reconnect, unsent
                    raise nats.errors.ConnectionClosedError
                if len(payload) > max_payload:
                    raise nats.errors.MaxPayloadError
                token = b"%d" % self._next
                self._next += 1
                if lean:
                    if subject not in subjects:  # HPUB takes it as is: no space, no CR/LF
                        _check_subject(subject)
                        if len(subjects) < _CACHE_LIMIT:
                            subjects.add(subject)
                    hdr = encode(headers)
                    size = len(hdr)
                    line = b"HPUB %b %b%b %d %d\r\n" % (
                        subject.encode(),
                        prefix,
                        token,
                        size,
                        size + len(payload),
                    )
                    # Registered before the write: a forced flush inside it may yield.
                    writing = pending._add(token)
                    await nc._send_command(b"".join((line, hdr, payload, _CRLF)))
                    writing = None
                    stats["out_msgs"] += 1
                    stats["out_bytes"] += len(payload)
                    if n % chunk == chunk - 1:
                        await nc._flush_pending()
                        await asyncio.sleep(0)  # let the flusher write, other tasks run
                else:
                    writing = pending._add(token)
                    reply = (prefix + token).decode()
                    await nc.publish(subject, payload, reply=reply, headers=dict(headers))
                    writing = None
        except BaseException:
            if writing is not None:  # the message being written counts as not sent
                pending._remove_last()
            raise
        finally:
            if lean and pending._tokens:
                await nc._flush_pending()


def _check_subject(subject: str) -> None:
    if not subject or any(c in subject for c in " \t\r\n"):
        raise nats.errors.BadSubjectError


def _ack_error(msg: Msg) -> BaseException | None:
    """``None`` for a JetStream ack, else the error the reply carries."""
    headers = msg.headers
    if headers and headers.get(nats.js.api.Header.STATUS) == _NO_RESPONDERS:
        return nats.js.errors.NoStreamResponseError()
    data = msg.data
    if b'"error"' not in data:
        return None
    try:
        refused: BaseException = nats.js.errors.APIError.from_error(orjson.loads(data)["error"])
    except Exception as exc:  # not the JSON JetStream sends: report it as the error
        return nats.js.errors.APIError(description=f"bad JetStream ack: {exc}")
    return refused
