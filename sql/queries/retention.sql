-- The audit log's partitions (events, by month on created_at): wis2l_core.db.retention.
-- The functions are sql/migrations/0004's.

-- name: ensure_partitions
-- Month partitions from this month to months_ahead after it, where none covers them yet.
SELECT part AS name FROM wis2l_events_ensure_partitions(%(months_ahead)s::int) AS part;

-- name: partitions
-- Every partition, oldest first, with its size; rows_estimate is the planner's
-- (pg_class.reltuples: -1 until the first ANALYZE). pending is asked only of the
-- partitions that end at or before the cutoff (one index probe each).
SELECT p.name, p.lower_bound, p.upper_bound,
       greatest(c.reltuples, -1)::bigint AS rows_estimate,
       pg_total_relation_size(p.relid) AS bytes,
       CASE WHEN p.upper_bound <= %(cutoff)s::timestamptz
            THEN wis2l_events_has_pending(p.relid) END AS pending
FROM wis2l_events_partitions() p
JOIN pg_class c ON c.oid = p.relid;

-- name: has_pending
SELECT wis2l_events_has_pending(%(part)s::regclass) AS pending;
