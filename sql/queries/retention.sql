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
       greatest(c.reltuples, -1)::bigint AS rows_estimate, false AS exact,
       pg_total_relation_size(p.relid) AS bytes,
       CASE WHEN p.upper_bound <= %(cutoff)s::timestamptz
            THEN wis2l_events_has_pending(p.relid) END AS pending
FROM wis2l_events_partitions() p
JOIN pg_class c ON c.oid = p.relid;

-- name: default_months
-- The months of the rows in events_default that no partition covers, as the partitions
-- ensure_partitions would make of them (moving the rows there), with the same columns as
-- `partitions`: what a dry run, which creates nothing, would see after that step. Rows
-- are counted (one scan of events_default, as the real step makes); bytes is the month's
-- share of events_default's size.
SELECT 'events_p' || to_char(m.month, 'YYYYMM') AS name,
       m.month AT TIME ZONE 'UTC' AS lower_bound,
       (m.month + interval '1 month') AT TIME ZONE 'UTC' AS upper_bound,
       m.rows AS rows_estimate, true AS exact,
       (pg_total_relation_size('events_default') * m.rows / sum(m.rows) OVER ())::bigint
           AS bytes,
       CASE WHEN (m.month + interval '1 month') AT TIME ZONE 'UTC' <= %(cutoff)s::timestamptz
            THEN m.pending END AS pending
FROM (SELECT date_trunc('month', created_at AT TIME ZONE 'UTC') AS month,
             count(*) AS rows,
             bool_or(published_at IS NULL AND subject IS NOT NULL) AS pending
      FROM events_default GROUP BY 1) m
WHERE NOT EXISTS (
    SELECT FROM wis2l_events_partitions() p
    WHERE p.upper_bound IS NOT NULL AND p.upper_bound > m.month AT TIME ZONE 'UTC'
      AND (p.lower_bound IS NULL
           OR p.lower_bound < (m.month + interval '1 month') AT TIME ZONE 'UTC'))
ORDER BY m.month;

-- name: has_pending
SELECT wis2l_events_has_pending(%(part)s::regclass) AS pending;
