"""``wis2l events schema | tail``: the event catalogue, and the live event stream.

``schema`` prints the AsyncAPI 3.0 document of the catalogue (JSON, or YAML with
``--yaml``). ``tail [SUBJECT]`` follows the stream with an ephemeral ordered consumer and
prints one event per line, as JSON, until Ctrl-C (or ``--count`` events). It creates the
stream when it is missing (a fresh server) and waits for events; with NATS unreachable it
prints one line and exits 3 within the connect timeout (``WIS2L_NATS_CONNECT_TIMEOUT``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import attrs
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from wis2l_core.catalogue import encode_event
from wis2l_core.config import Settings, redact_url
from wis2l_core.errors import ConfigError, ServiceUnavailable, Wis2lError
from wis2l_core.events._errors import PUBLISH_ERRORS
from wis2l_core.events.asyncapi import asyncapi_document, to_yaml
from wis2l_core.events.bus import EventBus
from wis2l_core.events.cloudevents import decode_message
from wis2l_core.subjects import dlq_prefix, event_type_of, tail_subject

__all__ = ["add_parser"]

OK, UNAVAILABLE, INTERRUPTED = 0, 3, 130
_FOLLOW_ERRORS: tuple[type[Exception], ...] = (Wis2lError, *PUBLISH_ERRORS)
"""What following the stream may raise besides NATS being unreachable."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``wis2l events`` and its sub-commands."""
    events = subparsers.add_parser(
        "events",
        help="the event catalogue (AsyncAPI) and a live tail of the stream",
        description="Event commands. NATS_URL, WIS2L_NAMESPACE and WIS2L_STREAM apply.",
    )
    sub = events.add_subparsers(title="commands", metavar="COMMAND", required=True)

    schema = sub.add_parser(
        "schema",
        help="print the AsyncAPI 3.0 document of the event catalogue",
        description="Print the AsyncAPI 3.0 document generated from the event classes.",
    )
    schema.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    schema.add_argument("--namespace", help="subject prefix (default: WIS2L_NAMESPACE or wis2l)")
    schema.set_defaults(func=_schema)

    tail = sub.add_parser(
        "tail",
        help="print events live, one JSON object per line",
        description="Follow the stream with an ephemeral ordered consumer and print each "
        "event decoded, one JSON object per line, until Ctrl-C. The stream is created if "
        "it does not exist yet. Messages that do not decode (and dead letters) print as "
        '{"subject": ..., "error": ..., "raw": ...}. Exits 3 if NATS cannot be reached '
        "within WIS2L_NATS_CONNECT_TIMEOUT seconds.",
    )
    tail.add_argument(
        "subject",
        nargs="?",
        help="event subject or pattern without the namespace, e.g. build.progress or "
        "'build.*' (default: every event, no dead letters)",
    )
    tail.add_argument("--all", action="store_true", help="start at the stream's first message")
    tail.add_argument("--count", type=int, help="stop after this many messages")
    tail.add_argument("--namespace", help="subject prefix (default: WIS2L_NAMESPACE)")
    tail.add_argument("--stream", help="stream name (default: WIS2L_STREAM)")
    tail.add_argument("--nats-url", help="NATS server (default: NATS_URL)")
    tail.set_defaults(func=_tail)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, Any] = {}
    if getattr(args, "namespace", None):
        changes["namespace"] = args.namespace
    if getattr(args, "stream", None):
        changes["stream_name"] = args.stream
    if getattr(args, "nats_url", None):
        changes["nats_urls"] = (args.nats_url,)
    try:
        return attrs.evolve(settings, **changes)
    except ConfigError:
        raise
    except ValueError as exc:  # pragma: no cover - evolve wraps converter errors
        raise ConfigError(str(exc)) from exc


def _schema(args: argparse.Namespace) -> int:
    doc = asyncapi_document(_settings(args))
    sys.stdout.write(to_yaml(doc) if args.yaml else json.dumps(doc, indent=2) + "\n")
    return OK


def _tail(args: argparse.Namespace) -> int:
    settings = _settings(args)
    subject = tail_subject(settings.namespace, args.subject)
    urls = ", ".join(redact_url(u) for u in settings.nats_urls)
    try:
        asyncio.run(_follow(settings, subject, deliver_all=args.all, count=args.count))
    except KeyboardInterrupt:
        return INTERRUPTED
    except ServiceUnavailable:
        print(
            f"wis2l: cannot reach NATS at {urls} within {settings.nats_connect_timeout:g}s "
            "(is it running? `wis2l dev` starts one; NATS_URL names it)",
            file=sys.stderr,
        )
        return UNAVAILABLE
    except _FOLLOW_ERRORS as exc:
        print(f"wis2l: cannot follow {subject} on {urls}: {_one_line(exc)}", file=sys.stderr)
        return UNAVAILABLE
    return OK


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _follow(
    settings: Settings, subject: str, *, deliver_all: bool, count: int | None
) -> None:
    """Print events of ``subject`` as they come (the stream is created if missing)."""
    bus = EventBus(settings)
    # Fails within the connect timeout; creates the stream on a fresh server, so a tail
    # started before the app waits for its first event instead of failing.
    await bus.open(require=True)
    try:
        sub = await bus.jetstream.subscribe(
            subject,
            stream=settings.stream_name,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if deliver_all else DeliverPolicy.NEW,
        )
        seen = 0
        dlq = dlq_prefix(settings.namespace)
        while count is None or seen < count:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            sys.stdout.write(_line(msg, namespace=settings.namespace, dlq=dlq) + "\n")
            sys.stdout.flush()
            seen += 1
        await sub.unsubscribe()
    finally:
        await bus.close(0)


def _line(msg: Msg, *, namespace: str, dlq: str) -> str:
    raw = msg.data.decode("utf-8", errors="replace")
    if msg.subject.startswith(dlq):
        headers = {k: v for k, v in (msg.headers or {}).items() if k.startswith("Wis2l-")}
        return json.dumps({"subject": msg.subject, "headers": headers, "raw": raw})
    subject_type = event_type_of(namespace, msg.subject)
    try:
        event = decode_message(msg.data, msg.headers, subject_type=subject_type)
    except ValueError as exc:
        return json.dumps({"subject": msg.subject, "error": str(exc), "raw": raw})
    return encode_event(event).decode()
