"""Typed events over NATS JetStream, written through a transactional outbox.

The public surface: the event catalogue (everything in :mod:`wis2l_core.catalogue`'s
``__all__``, re-exported as it is; the event classes also from :mod:`wis2l_core`), the
:class:`EventBus` (``wis.bus``) with what its methods take and return, the CloudEvents
wire helpers for code that publishes or reads events without a bus, and the AsyncAPI
document. The plumbing the runtime wires up (``OutboxRelay``, ``EncodedEvent``,
``register_seed_subscribers``, ``TokenInvalidator``) stays importable from its module.
"""

from wis2l_core import catalogue as _catalogue
from wis2l_core.catalogue import *  # noqa: F403
from wis2l_core.events.asyncapi import asyncapi_document
from wis2l_core.events.bus import EventBus, Handler, PendingAcks
from wis2l_core.events.cloudevents import cloudevent_headers, decode_message
from wis2l_core.events.outbox import OutboxBacklog

__all__ = [
    "EventBus",
    "Handler",
    "OutboxBacklog",
    "PendingAcks",
    "asyncapi_document",
    "cloudevent_headers",
    "decode_message",
]
__all__ += _catalogue.__all__  # derived from the catalogue, so the lists cannot drift
