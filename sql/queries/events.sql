-- Events: the audit log, and the outbox the relay publishes from.

-- name: insert_outbox
-- Written by every repository write, in the write's own transaction, with the trace
-- context active then (NULL without a span; sql/migrations/0006).
INSERT INTO events (id, type, subsystem, project_id, subject, payload, trace_context)
VALUES (%(id)s::uuid, %(type)s::text, %(subsystem)s::text, %(project_id)s::uuid,
        %(subject)s::text, %(payload)s::jsonb, %(trace_context)s::text);

-- name: create
-- An audit-only record: subject NULL, so the outbox relay never publishes it.
INSERT INTO events (id, type, subsystem, project_id, payload)
VALUES (%(id)s::uuid, %(type)s::text, %(subsystem)s::text, %(project_id)s::uuid,
        %(payload)s::jsonb)
RETURNING id, type, subsystem, project_id, payload, published_at, created_at, updated_at;

-- name: find_by_id
SELECT id, type, subsystem, project_id, payload, published_at, created_at, updated_at
FROM events
WHERE id = %(id)s::uuid;

-- name: find_by_subsystem
SELECT id, type, subsystem, project_id, payload, published_at, created_at, updated_at
FROM events
WHERE subsystem = %(subsystem)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_by_project_id
SELECT id, type, subsystem, project_id, payload, published_at, created_at, updated_at
FROM events
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;
