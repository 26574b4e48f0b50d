-- 0004: the audit log partitioned by month, so retention drops whole partitions.
--
-- `events` becomes a table partitioned by RANGE (created_at), one partition per calendar
-- month (UTC), named events_pYYYYMM, plus events_default for a row no partition covers.
-- `wis2l db prune` removes old history by dropping partitions: no DELETE, no rewrite, no
-- VACUUM, in time independent of the table's size.
--
-- No row is copied. The existing table is renamed events_history and attached as the
-- first partition, covering everything before the first day of next month (UTC): its
-- rows, ids, seq values and published_at stay as they are, and prune drops it whole once
-- that day is older than the retention (an empty table is dropped instead). What this step costs on a
-- populated table, inside this file's one transaction and under an exclusive lock on
-- events: one unique index build on (id, created_at) and one scan that checks the
-- partition bound (docs/operations.md, "Retention and pruning", gives seconds per million
-- rows). To shorten the locked step, build the index beforehand without blocking writes:
--     CREATE UNIQUE INDEX CONCURRENTLY events_id_created_at_key ON events (id, created_at);
-- and this migration uses it instead of building one.
--
-- Kept from 0001/0002: every column, its type, default and CHECK; the seq identity (it
-- goes on from where it was); the foreign key to projects (ON DELETE SET NULL); the
-- indexes (subsystem, id), (project_id, id) and the relay's partial index on (seq)
-- WHERE published_at IS NULL AND subject IS NOT NULL (now one per partition); the
-- triggers events_notify (statement level, wakes the relay) and events_touch.
-- Changed: the primary key is (id, created_at), as a partitioned table's key must hold
-- the partition key; a lookup by id alone still uses it (id is its first column).

SET LOCAL maintenance_work_mem = '256MB';

-- The old table becomes events_history; its index names free up for the new parent.
ALTER TABLE events RENAME TO events_history;
ALTER INDEX events_subsystem_idx RENAME TO events_history_subsystem_idx;
ALTER INDEX events_project_idx RENAME TO events_history_project_idx;
ALTER INDEX events_unpublished_idx RENAME TO events_history_unpublished_idx;
DROP TRIGGER events_notify ON events_history;
DROP TRIGGER events_touch ON events_history;

-- The key a partition needs: (id, created_at), built here unless an operator built it.
CREATE UNIQUE INDEX IF NOT EXISTS events_id_created_at_key ON events_history (id, created_at);
ALTER TABLE events_history DROP CONSTRAINT events_pkey;
ALTER TABLE events_history ADD CONSTRAINT events_history_pkey
    PRIMARY KEY USING INDEX events_id_created_at_key;

CREATE TABLE events (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    type         text NOT NULL CONSTRAINT events_type_check
                     CHECK (length(type) >= 1 AND length(type) <= 200),
    subsystem    text NOT NULL CONSTRAINT events_subsystem_check
                     CHECK (subsystem = ANY (ARRAY['ignition', 'spark', 'slate', 'ignis',
                                                   'waypoint', 'identity'])),
    project_id   uuid CONSTRAINT events_project_id_fkey
                     REFERENCES projects (id) ON DELETE SET NULL,
    subject      text CONSTRAINT events_subject_check CHECK (length(subject) <= 255),
    payload      jsonb NOT NULL DEFAULT '{}' CONSTRAINT events_payload_check
                     CHECK (jsonb_typeof(payload) = 'object'),
    published_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT statement_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT statement_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX events_subsystem_idx ON events (subsystem, id);
CREATE INDEX events_project_idx ON events (project_id, id);
CREATE INDEX events_unpublished_idx ON events (seq)
    WHERE published_at IS NULL AND subject IS NOT NULL;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION wis2l_events_notify();
CREATE TRIGGER events_touch BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();

-- A partition has no identity of its own: seq moves to the parent and goes on after the
-- last value handed out (so the relay's seq order spans the old and new rows).
DO $$
DECLARE
    next_seq bigint := nextval(pg_get_serial_sequence('events_history', 'seq'));
    bound    timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC')
                             + interval '1 month') AT TIME ZONE 'UTC';
BEGIN
    ALTER TABLE events_history ALTER COLUMN seq DROP IDENTITY;
    EXECUTE format('ALTER TABLE events ALTER COLUMN seq RESTART WITH %s', next_seq);
    IF EXISTS (SELECT FROM events_history) THEN
        EXECUTE format('ALTER TABLE events ATTACH PARTITION events_history'
                       ' FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    ELSE  -- a new database: month partitions from the start
        DROP TABLE events_history;
    END IF;
END;
$$;

CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The partitions of events with their bounds (lower NULL: from the beginning; both NULL:
-- the default partition), oldest first, read from the catalogue.
CREATE FUNCTION wis2l_events_partitions()
RETURNS TABLE (relid regclass, name text, lower_bound timestamptz, upper_bound timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass, c.relname::text,
           (regexp_match(b.expr, 'FROM \(''([^'']*)''\)'))[1]::timestamptz,
           (regexp_match(b.expr, 'TO \(''([^'']*)''\)'))[1]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS expr) b
    WHERE i.inhparent = 'events'::regclass
    ORDER BY 4 NULLS LAST, 3 NULLS FIRST
$$;

-- Whether a partition (attached or just detached) holds events the relay has not
-- published yet: one probe of its partial index on (seq).
CREATE FUNCTION wis2l_events_has_pending(part regclass) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    found boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT FROM %s'
                   ' WHERE published_at IS NULL AND subject IS NOT NULL)', part)
        INTO found;
    RETURN found;
END;
$$;

-- Create the month partitions (UTC) from the current month to `months_ahead` months after
-- it, and for every month that has rows in events_default (rows that found no partition:
-- written with an older created_at, or while no partition was ready), where no partition
-- covers the month yet; return their names. Such rows move to their month's partition,
-- so the default partition stays empty and prune can drop them by month. Called here and
-- by the library (wis2l_core.db.retention).
CREATE FUNCTION wis2l_events_ensure_partitions(months_ahead int) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    this_month  timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    month       timestamp;
    month_start timestamptz;
    month_end   timestamptz;
    part        text;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be 0..120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR month IN
        SELECT this_month + make_interval(months => i) FROM generate_series(0, months_ahead) i
        UNION
        SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') FROM events_default
        ORDER BY 1
    LOOP
        month_start := month AT TIME ZONE 'UTC';
        month_end := (month + interval '1 month') AT TIME ZONE 'UTC';
        CONTINUE WHEN EXISTS (
            SELECT FROM wis2l_events_partitions() p
            WHERE p.upper_bound IS NOT NULL AND p.upper_bound > month_start
              AND (p.lower_bound IS NULL OR p.lower_bound < month_end));
        part := 'events_p' || to_char(month, 'YYYYMM');
        IF EXISTS (SELECT FROM events_default
                   WHERE created_at >= month_start AND created_at < month_end) THEN
            -- Take the default partition out, create the month, move its rows over, put
            -- it back: one transaction, all or nothing.
            ALTER TABLE events DETACH PARTITION events_default;
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           part, month_start, month_end);
            EXECUTE format(
                'WITH moved AS (DELETE FROM events_default'
                ' WHERE created_at >= %L AND created_at < %L RETURNING *)'
                ' INSERT INTO %I OVERRIDING SYSTEM VALUE SELECT * FROM moved',
                month_start, month_end, part);
            ALTER TABLE events ATTACH PARTITION events_default DEFAULT;
        ELSE
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           part, month_start, month_end);
        END IF;
        RETURN NEXT part;
    END LOOP;
END;
$$;

SELECT count(*) FROM wis2l_events_ensure_partitions(3);
