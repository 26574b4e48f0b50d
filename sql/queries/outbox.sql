-- The outbox relay's queries (events rows with a subject and no published_at).

-- name: claim
-- The oldest unpublished events, locked for this transaction. The scalar subquery runs
-- once, before the scan (a one-time filter): only the relay holding the advisory lock
-- claims anything, so one relay at a time publishes, in seq order.
SELECT id, seq, subject, payload
FROM events
WHERE published_at IS NULL AND subject IS NOT NULL
  AND (SELECT pg_try_advisory_xact_lock(%(lock_key)s::bigint))
ORDER BY seq
LIMIT %(limit)s::int
FOR UPDATE SKIP LOCKED;

-- name: claim_more
-- The next batch in the same transaction (which holds the lock): the oldest unpublished
-- rows it has not claimed yet. Not "seq > the last one claimed": a transaction that
-- committed after the first claim may hold a *lower* seq than rows claimed since, and
-- its writer's later events must not go out before it.
SELECT id, seq, subject, payload
FROM events
WHERE published_at IS NULL AND subject IS NOT NULL AND id <> ALL(%(claimed)s::uuid[])
ORDER BY seq
LIMIT %(limit)s::int
FOR UPDATE SKIP LOCKED;

-- name: mark_published
UPDATE events SET published_at = now()
WHERE id = ANY(%(ids)s::uuid[]) AND published_at IS NULL;

-- name: backlog
SELECT count(*)::bigint AS size,
       extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest_age_s
FROM events
WHERE published_at IS NULL AND subject IS NOT NULL;
