"""An AsyncAPI 3.0 document of the event catalogue, generated from the classes.

The JSON Schema of each event comes from its attrs fields and their types, and the field
descriptions from the classes' ``Attributes:`` docstring sections (see
:func:`~wis2l_core.catalogue.field_docs`), so the document cannot drift from the
code. ``wis2l events schema`` prints it.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from typing import Any
from uuid import UUID

import attrs

from wis2l_core.catalogue import CATALOGUE, DomainEvent, field_docs
from wis2l_core.config import Settings
from wis2l_core.events.cloudevents import CE_TYPE_PREFIX, CONTENT_TYPE, SPECVERSION
from wis2l_core.events.subscriber import DLQ_HEADERS
from wis2l_core.subjects import dlq_subject, event_subject, stream_subjects

__all__ = ["asyncapi_document", "event_schema", "to_yaml"]

_DLQ_HEADER_DOCS = {
    "Wis2l-Dlq-Reason": "Why: `decode` (the body is not a valid event), `handler` (the "
    "handler failed `max_deliver` times) or `max_deliver` (delivered that many times "
    "without an ack, e.g. the process died each time).",
    "Wis2l-Dlq-Error": "The last error, `<ExceptionType>: <message>` on one line.",
    "Wis2l-Dlq-Subject": "The subject the message was published on.",
    "Wis2l-Dlq-Consumer": "The JetStream consumer that gave up on it.",
    "Wis2l-Dlq-Deliveries": "How many times it was delivered.",
    "Wis2l-Dlq-Stream-Seq": "Its sequence number in the stream.",
    "Wis2l-Event-Id": "The original `Nats-Msg-Id`, i.e. the event id.",
}


_CE_HEADERS: dict[str, dict[str, Any]] = {
    "ce-specversion": {"const": SPECVERSION, "description": "The CloudEvents version."},
    "ce-type": {
        "description": f"`{CE_TYPE_PREFIX}<entity>.<action>`, e.g. "
        f"`{CE_TYPE_PREFIX}build.progress`: the event's `type` with a fixed prefix (the "
        "same whatever the namespace)."
    },
    "ce-source": {
        "format": "uri-reference",
        "description": "`/wis2l-core/<namespace>`: who published it.",
    },
    "ce-id": {"format": "uuid", "description": "The event id (as `Nats-Msg-Id`)."},
    "ce-time": {
        "format": "date-time",
        "description": "When it happened (`occurred_at`), RFC 3339.",
    },
    "ce-datacontenttype": {"const": CONTENT_TYPE, "description": "The body is JSON."},
    "content-type": {"const": CONTENT_TYPE, "description": "The body is JSON."},
}


_TRACE_HEADERS: dict[str, dict[str, Any]] = {
    "traceparent": {
        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C Trace Context: the span the event was written in (a "
        "repository write, kept with the outbox row) or published from (`bus.publish`); "
        "present when the producer recorded a trace. A consumer's span continues it.",
    },
    "tracestate": {"description": "W3C Trace Context `tracestate`, when there is one."},
    "ce-traceparent": {
        "description": "The CloudEvents distributed-tracing extension: the same value "
        "as `traceparent`."
    },
    "ce-tracestate": {"description": "The same value as `tracestate`, when there is one."},
}


def _markdown(text: str) -> str:
    return text.replace("``", "`")


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = (
            _type_schema(args[0]) if len(args) == 1 else {"anyOf": [_type_schema(a) for a in args]}
        )
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if tp is UUID:
        return {"type": "string", "format": "uuid"}
    if tp is datetime:
        return {"type": "string", "format": "date-time"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:  # the database's integer columns
        return {"type": "integer", "format": "int32"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if tp is dict or origin in (dict, Mapping, typing.Mapping):
        return {"type": "object"}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON Schema for {tp!r}")


def event_schema(cls: type[DomainEvent]) -> dict[str, Any]:
    """The JSON Schema of ``cls``'s wire form (every field is always present).

    Extra properties are allowed: an event may gain fields in a later version.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    names = {f.name for f in attrs.fields(cls)}
    props: dict[str, Any] = {}
    for name, doc in docs.items():
        schema = {"type": "string", "const": cls.type} if name == "type" else {}
        if name in names:
            schema = _type_schema(hints[name])
        props[name] = {**schema, "description": _markdown(doc)}
    return {
        "type": "object",
        "title": cls.__name__,
        "description": _markdown(_summary(cls)),
        "required": list(props),
        "properties": props,
        "additionalProperties": True,
    }


def _summary(cls: type) -> str:
    return (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


def _version() -> str:
    try:
        return metadata.version("wis2l-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "0.0.0"


def asyncapi_document(settings: Settings | str = "wis2l") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every catalogued event and the dead-letter subjects.

    Args:
        settings: the settings (for their ``namespace``) or the namespace itself.

    Returns:
        The document as plain JSON-ready data.
    """
    ns = settings if isinstance(settings, str) else settings.namespace
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "EventHeaders": {
            "type": "object",
            "description": "A CloudEvents 1.0 event in the NATS binding's binary content "
            "mode: the context attributes are `ce-` headers and the body is the event's "
            "JSON. Consumers also accept a body without `type` (the subject names it) and "
            "take a missing `id`/`occurred_at` from `ce-id`/`ce-time`.",
            "required": ["Nats-Msg-Id", *_CE_HEADERS],
            "properties": {
                "Nats-Msg-Id": {
                    "type": "string",
                    "format": "uuid",
                    "description": "The event id: JetStream drops a second copy within the "
                    "stream's duplicate window; consumers can de-duplicate on it.",
                },
                **{h: {"type": "string", **spec} for h, spec in _CE_HEADERS.items()},
                **{h: {"type": "string", **spec} for h, spec in _TRACE_HEADERS.items()},
            },
        }
    }
    for cls in CATALOGUE.values():
        name = cls.__name__
        summary = _markdown(_summary(cls))
        channels[name] = {
            "address": f"{ns}.{cls.type}",
            "title": name,
            "description": summary,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send{name}"] = {
            "action": "send",
            "summary": f"wis2l-core publishes `{cls.type}`.",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
        }
        messages[name] = {
            "name": name,
            "title": name,
            "summary": summary,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/EventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        schemas[name] = event_schema(cls)
    channels["DeadLetter"] = {
        "address": dlq_subject(ns, "{subject}"),
        "title": "Dead letters",
        "description": "Messages a subscriber gave up on, copied unchanged from `subject` "
        f"(e.g. `{dlq_subject(ns, event_subject(ns, 'build.progress'))}`).",
        "parameters": {"subject": {"description": "The original subject."}},
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
    }
    operations["sendDeadLetter"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/DeadLetter"},
        "messages": [{"$ref": "#/channels/DeadLetter/messages/DeadLetter"}],
    }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "Dead letter",
        "summary": "The original body (not necessarily valid JSON when the reason is "
        "`decode`), with the reason and error in headers.",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {},
    }
    schemas["DeadLetterHeaders"] = {
        "type": "object",
        "required": [h for h in DLQ_HEADERS if h != "Wis2l-Event-Id"],
        "properties": {
            **{h: {"type": "string", "description": _DLQ_HEADER_DOCS[h]} for h in DLQ_HEADERS},
            **{
                h: {"type": "string", "description": "Kept from the original message."}
                for h in _TRACE_HEADERS
            },
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "wis2l-core events",
            "version": _version(),
            "description": "Domain events of the WIS2L platform, published to the NATS "
            f"JetStream stream whose subjects are `{stream_subjects(ns)}`. Bodies are JSON "
            "objects; UUIDs and times are strings; every field listed is always present; "
            "unknown fields must be ignored.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def to_yaml(data: Any) -> str:
    """Render JSON-ready data (e.g. :func:`asyncapi_document`) as block-style YAML.

    A thin wrapper over PyYAML's ``safe_dump`` that keeps the keys in order.

    Args:
        data: dicts, lists, strings, numbers, booleans and ``None``.

    Returns:
        The YAML text (UTF-8 characters kept as they are).
    """
    import yaml

    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return text
