"""Typed events over NATS JetStream, written through a transactional outbox."""
