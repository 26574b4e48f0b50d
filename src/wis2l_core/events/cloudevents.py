"""The wire format: CloudEvents 1.0 over NATS in binary content mode (I/O-free).

Every message wis2l-core publishes is a CloudEvent as the CloudEvents NATS protocol
binding maps it in *binary* mode: the body is the event's JSON (its fields, plus ``type``
for consumers written before the headers existed) and the context attributes travel as
headers::

    ce-specversion: 1.0
    ce-type: wis2l.build.progress          (CE_TYPE_PREFIX + the event's ``type``)
    ce-source: /wis2l-core/<namespace>
    ce-id: <event id>                      (also Nats-Msg-Id, for JetStream's de-duplication)
    ce-time: <occurred_at, RFC 3339>
    ce-datacontenttype: application/json
    content-type: application/json
    Nats-Msg-Id: <event id>
    traceparent: <W3C trace context>       (when the event was written inside a span;
    ce-traceparent: <the same>              also tracestate/ce-tracestate when it has one)

``ce-type`` carries a reverse-DNS-style prefix, as the CloudEvents spec recommends, that
does not change with ``WIS2L_NAMESPACE``: the namespace routes (it is part of the subject
and of ``ce-source``), the type says what happened.

Reading is lenient, so other producers need not know our conventions: the subject names
the event type, so a body without ``type`` is accepted; ``id`` and ``occurred_at`` missing
from the body are taken from ``ce-id`` and ``ce-time``. A body ``type`` or a ``ce-type``
that names a *different* catalogued event than the subject is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypeVar, overload
from urllib.parse import quote, unquote

import orjson

from wis2l_core.catalogue import CATALOGUE, DomainEvent, decode_event
from wis2l_core.errors import ValidationError
from wis2l_core.telemetry._messaging import trace_headers

__all__ = [
    "CE_TYPE_PREFIX",
    "CONTENT_TYPE",
    "SPECVERSION",
    "ce_source",
    "ce_type",
    "cloudevent_headers",
    "decode_message",
    "type_from_ce",
]

E = TypeVar("E", bound=DomainEvent)

SPECVERSION = "1.0"
"""The CloudEvents version of ``ce-specversion``."""
CE_TYPE_PREFIX = "wis2l."
"""Prefix of ``ce-type``: ``wis2l.build.progress`` for the ``build.progress`` event."""
CONTENT_TYPE = "application/json"
"""The media type of every body (``content-type`` and ``ce-datacontenttype``)."""

# RFC 3986 unreserved characters and the sub-delims that need no escaping in a header;
# space, '"' and '%' are always encoded, as the binding requires.
_SAFE = "!#$&'()*+,/:;<=>?@[]^`{|}~-._"


_PLAIN = re.compile(r"[A-Za-z0-9!#$&'()*+,/:;<=>?@\[\]^`{|}~._-]*")
"""Values made only of characters that need no escaping (ids, RFC 3339 times): kept as is."""


def _encode(value: str) -> str:
    return value if _PLAIN.fullmatch(value) else quote(value, safe=_SAFE)


def _decode(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':  # an RFC 7230 quoted string
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"header value is not UTF-8: {value!r}", field="headers") from exc


def ce_type(event_type: str) -> str:
    """The ``ce-type`` of an event type: ``"build.progress"`` -> ``"wis2l.build.progress"``."""
    return CE_TYPE_PREFIX + event_type


def type_from_ce(value: str) -> str | None:
    """The catalogue type a ``ce-type`` names (``wis2l.build.progress`` or plain
    ``build.progress``), or ``None`` when it names none of ours."""
    for candidate in (value.removeprefix(CE_TYPE_PREFIX), value):
        if candidate in CATALOGUE:
            return candidate
    return None


def ce_source(namespace: str) -> str:
    """The ``ce-source`` of events published under ``namespace``: ``/wis2l-core/<ns>``."""
    return "/wis2l-core/" + namespace


@lru_cache(maxsize=256)
def _constant_headers(event_type: str, namespace: str) -> dict[str, str]:
    """The headers every event of ``event_type`` under ``namespace`` shares."""
    return {
        "ce-specversion": SPECVERSION,
        "ce-type": _encode(ce_type(event_type)),
        "ce-source": _encode(ce_source(namespace)),
        "ce-datacontenttype": CONTENT_TYPE,
        "content-type": CONTENT_TYPE,
    }


def cloudevent_headers(
    event_type: str,
    event_id: str,
    *,
    namespace: str,
    time: str | None = None,
    trace: str | None = None,
) -> dict[str, str]:
    """The NATS headers that make a message a binary-mode CloudEvent.

    Args:
        event_type: the catalogue type, e.g. ``"build.progress"``.
        event_id: the event id (``ce-id`` and ``Nats-Msg-Id``).
        namespace: the subject namespace (part of ``ce-source``).
        time: ``occurred_at`` in RFC 3339 form (``ce-time``), when known.
        trace: the trace context the event was written in, as the outbox keeps it
            (``<traceparent>[,<tracestate>]``): sent as W3C ``traceparent``/``tracestate``
            and as the distributed-tracing extension's ``ce-traceparent``/``ce-tracestate``.

    Returns:
        Header name -> value, percent-encoded as the binding requires (a new dict).
    """
    headers = _constant_headers(event_type, namespace).copy()
    headers["ce-id"] = _encode(event_id)
    headers["Nats-Msg-Id"] = event_id
    if time:
        headers["ce-time"] = _encode(time)
    if trace:
        trace_headers(trace, headers)
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # NATS header names are case-insensitive (ADR-4); nats-py gives them as sent.
    for key, value in headers.items():
        if key.lower() == name:
            return _decode(value)
    return None


@overload
def decode_message(
    data: bytes,
    headers: Mapping[str, str] | None,
    *,
    subject_type: str | None = None,
    cls: type[E],
) -> E: ...
@overload
def decode_message(
    data: bytes,
    headers: Mapping[str, str] | None,
    *,
    subject_type: str | None = None,
    cls: None = None,
) -> DomainEvent: ...
def decode_message(
    data: bytes,
    headers: Mapping[str, str] | None,
    *,
    subject_type: str | None = None,
    cls: type[DomainEvent] | None = None,
) -> DomainEvent:
    """Build an event from a NATS message: its body and (CloudEvents) headers.

    The type is, in order of authority: ``cls``, the subject (``subject_type``, the
    subject without its namespace), the ``ce-type`` header, the body's ``type``. Every one
    of them that is present must agree.

    Args:
        data: the message body (JSON).
        headers: the message headers, if any.
        subject_type: the subject without its namespace, e.g. ``"build.progress"``;
            ignored when it is not a catalogued type.
        cls: the class expected (a subscriber's).

    Returns:
        The event.

    Raises:
        ValidationError: not a JSON object, no type named anywhere, two sources naming
            different types (``field="type"``), or a field missing or malformed.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"event is not JSON: {exc}", field="payload") from exc
    if not isinstance(obj, dict):
        raise ValidationError("event is not a JSON object", field="payload")
    hdrs = headers or {}
    if cls is None:
        cls = _agreed_class(obj, hdrs, subject_type)
    else:
        _agreed_class(obj, hdrs, cls.type, cls)
    obj["type"] = cls.type
    if "id" not in obj and (ce_id := _header(hdrs, "ce-id")) is not None:
        obj["id"] = ce_id
    if "occurred_at" not in obj and (ce_time := _header(hdrs, "ce-time")) is not None:
        obj["occurred_at"] = ce_time
    return decode_event(obj, cls)


def _agreed_class(
    obj: Mapping[str, Any],
    headers: Mapping[str, str],
    subject_type: str | None,
    cls: type[DomainEvent] | None = None,
) -> type[DomainEvent]:
    """The class every source of the type agrees on (the first present decides)."""
    named: list[tuple[str, Any]] = []
    if cls is not None:
        named.append(("the subscription", cls.type))
    elif subject_type in CATALOGUE:
        named.append(("the subject", subject_type))
    header_value = _header(headers, "ce-type")
    if header_value is not None:
        ours = type_from_ce(header_value)
        if ours is None and cls is not None and header_value in (cls.type, ce_type(cls.type)):
            ours = cls.type  # an event class of the app's own, outside the catalogue
        # A foreign ce-type (another vendor's name) does not contradict the subject.
        if ours is not None or not named:
            named.append(("ce-type", ours if ours is not None else header_value))
    if "type" in obj:
        named.append(("the body", obj["type"]))
    if not named:
        raise ValidationError("the message names no event type", field="type")
    source, want = named[0]
    for other, value in named[1:]:
        if value != want:
            raise ValidationError(
                f"{source} says {want!r} but {other} says {value!r}", field="type"
            )
    if cls is not None:
        return cls
    if not isinstance(want, str) or want not in CATALOGUE:
        raise ValidationError(f"unknown event type {want!r}", field="type")
    return CATALOGUE[want]
