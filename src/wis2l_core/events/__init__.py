"""Typed events over NATS JetStream, written through a transactional outbox.

The public surface: the event catalogue (also importable from :mod:`wis2l_core`), the
:class:`EventBus` (``wis.bus``) with what its methods take and return, the CloudEvents
wire helpers for code that publishes or reads events without a bus, and the AsyncAPI
document. The plumbing the runtime wires up (``OutboxRelay``, ``EncodedEvent``,
``register_seed_subscribers``, ``TokenInvalidator``) stays importable from its module.
"""

from wis2l_core.catalogue import (
    CATALOGUE,
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildStarted,
    ComponentCreated,
    ComponentDeleted,
    ComponentUpdated,
    DeploymentCompleted,
    DeploymentFailed,
    DeploymentStarted,
    DomainEvent,
    TokenDeleted,
    TokensSynced,
    TokenUpdated,
    decode_event,
    encode_event,
    event_class,
)
from wis2l_core.events.asyncapi import asyncapi_document
from wis2l_core.events.bus import EventBus, Handler, PendingAcks
from wis2l_core.events.cloudevents import cloudevent_headers, decode_message
from wis2l_core.events.outbox import OutboxBacklog

__all__ = [
    "CATALOGUE",
    "BuildCompleted",
    "BuildFailed",
    "BuildProgress",
    "BuildStarted",
    "ComponentCreated",
    "ComponentDeleted",
    "ComponentUpdated",
    "DeploymentCompleted",
    "DeploymentFailed",
    "DeploymentStarted",
    "DomainEvent",
    "EventBus",
    "Handler",
    "OutboxBacklog",
    "PendingAcks",
    "TokenDeleted",
    "TokenUpdated",
    "TokensSynced",
    "asyncapi_document",
    "cloudevent_headers",
    "decode_event",
    "decode_message",
    "encode_event",
    "event_class",
]
