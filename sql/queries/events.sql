-- Events: the audit log, and the outbox the relay publishes from.

-- name: insert_outbox
-- Written by every repository write, in the write's own transaction.
INSERT INTO events (id, type, subsystem, project_id, subject, payload)
VALUES (%(id)s::uuid, %(type)s::text, %(subsystem)s::text, %(project_id)s::uuid,
        %(subject)s::text, %(payload)s::jsonb);
