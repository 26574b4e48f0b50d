"""NATS subject names, the one place they are spelled (I/O-free, below the catalogue).

Every event travels on ``<namespace>.<type>`` (``wis2l.build.progress``), the stream holds
``<namespace>.>``, and a message a subscriber gave up on is copied to
``<namespace>.dlq.<subject>``. The catalogue, the bus, the subscribers, the AsyncAPI
document and the CLI all build their subjects here.
"""

from __future__ import annotations

import re

from wis2l_core.errors import ValidationError

__all__ = [
    "checked_subject",
    "dlq_prefix",
    "dlq_subject",
    "event_subject",
    "event_type_of",
    "stream_subjects",
    "tail_subject",
]

_TYPE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def event_subject(namespace: str, event_type: str) -> str:
    """The subject of an event type: ``<namespace>.<type>``."""
    return f"{namespace}.{event_type}"


def checked_subject(namespace: str, event_type: object) -> str:
    """:func:`event_subject`, after checking ``event_type`` is one literal subject token run.

    Raises:
        ValidationError: the type is not dot-separated letters, digits, ``-`` and ``_``.
    """
    if not isinstance(event_type, str) or not _TYPE.match(event_type):
        raise ValidationError(f"not an event type: {event_type!r}", field="type")
    return event_subject(namespace, event_type)


def event_type_of(namespace: str, subject: str) -> str:
    """The event type a subject names (the subject without its namespace)."""
    return subject.removeprefix(f"{namespace}.")


def stream_subjects(namespace: str) -> str:
    """The subjects the stream holds (and a live view follows): ``<namespace>.>``."""
    return f"{namespace}.>"


def dlq_prefix(namespace: str) -> str:
    """What every dead-letter subject starts with: ``<namespace>.dlq.``."""
    return f"{namespace}.dlq."


def dlq_subject(namespace: str, subject: str) -> str:
    """Where messages of ``subject`` go when they cannot be handled."""
    return f"{dlq_prefix(namespace)}{subject}"


def tail_subject(namespace: str, pattern: str | None) -> str:
    """The subject ``wis2l events tail`` follows: every event by default, else ``pattern``
    (``build.progress``, ``build.*``) within the namespace."""
    if not pattern:
        return event_subject(namespace, "*.*")
    return pattern if pattern.startswith(f"{namespace}.") else event_subject(namespace, pattern)
