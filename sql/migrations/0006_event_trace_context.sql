-- 0006: an event row keeps the trace context it was written in (one trace through the
-- outbox).
--
-- `events.trace_context` holds the W3C context of the span that was active when a
-- repository wrote the event, serialized compactly as `<traceparent>[,<tracestate>]`
-- (traceparent has no comma; tracestate, when there is one, follows the first comma). The
-- relay sends it as the message's `traceparent`/`tracestate` (and CloudEvents'
-- `ce-traceparent`) headers, so a subscriber's span continues the writer's trace. NULL
-- when no span was active or no OpenTelemetry SDK is set: such rows cost no byte more.
--
-- A nullable column with no default, added on the partitioned parent: PostgreSQL adds it
-- to every month partition (events_history and events_default included) as a catalogue
-- change only; no row is rewritten, and each partition is locked briefly.

ALTER TABLE events ADD COLUMN trace_context text
    CONSTRAINT events_trace_context_check CHECK (length(trace_context) <= 600);
