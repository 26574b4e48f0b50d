"""Typed events over NATS JetStream, written through a transactional outbox."""

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
    TokensSynced,
    TokenUpdated,
    decode_event,
    encode_event,
    event_class,
)
from wis2l_core.events.asyncapi import asyncapi_document
from wis2l_core.events.bus import EncodedEvent, EventBus, Handler
from wis2l_core.events.handlers import TokenInvalidator, register_seed_subscribers
from wis2l_core.events.outbox import OutboxBacklog, OutboxRelay

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
    "EncodedEvent",
    "EventBus",
    "Handler",
    "OutboxBacklog",
    "OutboxRelay",
    "TokenInvalidator",
    "TokenUpdated",
    "TokensSynced",
    "asyncapi_document",
    "decode_event",
    "encode_event",
    "event_class",
    "register_seed_subscribers",
]
