-- 0005: the outbox's triggers wake only the relay concerned, and do less per row.
--
-- events_notify was one NOTIFY wis2l_outbox with an empty payload per INSERT statement,
-- so every relay woke for every write and ran a pass (with 4 relay processes that made
-- each event wait behind 3 needless passes). Now it fires per row of the outbox (a
-- subject set; an audit-only row wakes nobody), and the payload is the row's partition
-- key: 0 for an event without a project, else
--     uuid_hash_extended(project_id, 0) & 9223372036854775807
-- which the relay reduces modulo WIS2L_OUTBOX_PARTITIONS (sql/queries/outbox.sql) and
-- acts on only for the partitions it publishes. NOTIFY folds equal payloads within a
-- transaction, so a transaction sends one notification per project it wrote events for.
-- A relay that reads an empty or foreign payload (an older trigger) wakes as before.
--
-- events_touch is skipped by an UPDATE that sets updated_at itself: the relay's marking
-- sets published_at and updated_at together (to what the trigger would give), so
-- marking a batch no longer runs a PL/pgSQL function per row.
--
-- Only trigger definitions change: no row is rewritten; each statement takes a brief
-- lock on events.

CREATE OR REPLACE FUNCTION wis2l_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wis2l_outbox',
        CASE WHEN NEW.project_id IS NULL THEN '0'
             ELSE (uuid_hash_extended(NEW.project_id, 0) & 9223372036854775807)::text END);
    RETURN NULL;
END;
$$;

DROP TRIGGER events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.subject IS NOT NULL) EXECUTE FUNCTION wis2l_events_notify();

DROP TRIGGER events_touch ON events;
CREATE TRIGGER events_touch BEFORE UPDATE ON events
    FOR EACH ROW WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at)
    EXECUTE FUNCTION wis2l_touch_updated_at();
