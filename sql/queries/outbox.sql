-- The outbox relay's queries (events rows with a subject and no published_at).
--
-- Events are split into a fixed number of partitions by project (Settings.
-- outbox_partitions; no project -> partition 0). The partition of a row is
--   CASE WHEN project_id IS NULL THEN 0
--        ELSE mod(uuid_hash_extended(project_id, 0) & 9223372036854775807, partitions) END
-- uuid_hash_extended is the hash PostgreSQL's own hash partitioning stores on disk, so it
-- is stable across versions. A relay publishes a partition only while its transaction
-- holds that partition's advisory lock, so one relay at a time publishes a partition.

-- name: lock_partitions
-- The first statement of every pass. It bounds the transaction (a relay stopped
-- mid-pass loses its session, so its locks and row locks, after lease_ms idle), then
-- takes the advisory locks of the candidate partitions that no other relay holds. Custom
-- plans for the claims: their arrays become constants, so "NOT (id = ANY(...))" is a hash
-- lookup, and the plan fits the backlog actually there.
SELECT set_config('idle_in_transaction_session_timeout', %(lease_ms)s::text, true) AS idle,
       set_config('statement_timeout', %(lease_ms)s::text, true) AS statement,
       set_config('plan_cache_mode', 'force_custom_plan', true) AS plans,
       coalesce((SELECT array_agg(p ORDER BY p)
                 FROM unnest(%(candidates)s::int[]) AS p
                 WHERE pg_try_advisory_xact_lock(%(lock_key)s::int, p)), '{}') AS held;

-- name: claim
-- The oldest unpublished rows of the partitions this transaction holds, except the batch
-- in flight (claimed, not yet marked, by seq; the batches before it are marked, so no
-- longer unpublished for this transaction). Not "seq > the last one claimed": a
-- transaction that committed after the pass's first claim may hold a *lower* seq than
-- rows claimed since, and its writer's later events must not go out before it. NOWAIT and
-- not SKIP LOCKED: nothing else should hold these row locks (a previous owner's
-- transaction has ended before the partition lock could be taken), and skipping a locked
-- row would publish its successors first; if something does hold one (a cascading
-- project delete), the pass fails and is retried. The id comes as text and occurred_at
-- is read here: the relay sends both as headers, so it parses neither; so is the
-- writer's trace context (traceparent and tracestate headers).
SELECT seq, id::text AS id, subject, payload, payload ->> 'occurred_at' AS occurred_at,
       created_at, trace_context
FROM events
WHERE published_at IS NULL AND subject IS NOT NULL
  AND seq <> ALL(%(in_flight)s::bigint[])
  AND (CASE WHEN project_id IS NULL THEN 0
            ELSE mod(uuid_hash_extended(project_id, 0) & 9223372036854775807,
                     %(partitions)s::bigint) END)::int = ANY(%(held)s::int[])
ORDER BY seq
LIMIT %(limit)s::int
FOR UPDATE NOWAIT;

-- name: mark_published
-- One statement per batch. By seq, through the partial index of unpublished rows (its
-- size is the backlog, not the table's), and `created_at >= oldest` lets PostgreSQL skip
-- the month partitions before the batch's oldest row. updated_at is set here, so the
-- touch trigger (which 0005 skips when a statement sets updated_at) does not run per row.
UPDATE events SET published_at = now(),
                  updated_at = greatest(statement_timestamp(), created_at)
WHERE seq = ANY(%(seqs)s::bigint[]) AND created_at >= %(oldest)s::timestamptz
  AND published_at IS NULL AND subject IS NOT NULL;

-- name: relays
-- The relays alive on this database: their LISTEN sessions (application_name
-- "wis2l-outbox <relay id>") that ran their heartbeat within the lease.
SELECT substr(application_name, 14) AS relay
FROM pg_stat_activity
WHERE datname = current_database()
  AND starts_with(application_name, 'wis2l-outbox ')
  AND state_change > clock_timestamp() - make_interval(secs => %(lease)s::float8);

-- name: stale_partitions
-- Partitions whose oldest unpublished event has waited longer than the lease (their home
-- relay is gone, stalled or behind): any relay may take them. Looks at the oldest
-- 10,000 unpublished rows only, where such events sit.
SELECT DISTINCT part
FROM (SELECT (CASE WHEN project_id IS NULL THEN 0
                   ELSE mod(uuid_hash_extended(project_id, 0) & 9223372036854775807,
                            %(partitions)s::bigint) END)::int AS part,
             created_at
      FROM events
      WHERE published_at IS NULL AND subject IS NOT NULL
      ORDER BY seq
      LIMIT 10000) AS oldest
WHERE created_at < clock_timestamp() - make_interval(secs => %(lease)s::float8);

-- name: backlog
SELECT count(*)::bigint AS size,
       extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest_age_s
FROM events
WHERE published_at IS NULL AND subject IS NOT NULL;

-- name: backlog_by_partition
-- The wis2l.outbox.backlog and wis2l.outbox.lag gauges: per partition, the unpublished
-- events and the age of the oldest, among the oldest %(cap)s unpublished rows only (read
-- through the partial index of unpublished rows, so the cost is bounded whatever the size
-- of events; a backlog beyond the cap is reported as at least the cap).
SELECT part, count(*)::bigint AS size,
       extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest_age_s
FROM (SELECT (CASE WHEN project_id IS NULL THEN 0
                   ELSE mod(uuid_hash_extended(project_id, 0) & 9223372036854775807,
                            %(partitions)s::bigint) END)::int AS part,
             created_at
      FROM events
      WHERE published_at IS NULL AND subject IS NOT NULL
      ORDER BY seq
      LIMIT %(cap)s::int) AS oldest
GROUP BY part;
