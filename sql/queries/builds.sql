-- Builds (IGNIS): status pending -> building -> completed | failed (pending -> failed too).
-- The state machine is enforced by `update` itself, atomically: see its comment.

-- name: find_by_id
SELECT id, project_id, target, status, progress, artifacts, logs, started_at, finished_at,
       created_at, updated_at
FROM builds
WHERE id = %(id)s::uuid;

-- name: find_all
SELECT id, project_id, target, status, progress, artifacts, logs, started_at, finished_at,
       created_at, updated_at
FROM builds
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_status
-- A query of its own (not `status IS NULL OR ...`) so its generic plan uses builds_status_idx.
SELECT id, project_id, target, status, progress, artifacts, logs, started_at, finished_at,
       created_at, updated_at
FROM builds
WHERE status = %(status)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_by_project_id
SELECT id, project_id, target, status, progress, artifacts, logs, started_at, finished_at,
       created_at, updated_at
FROM builds
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
INSERT INTO builds (id, project_id, target)
VALUES (%(id)s::uuid, %(project_id)s::uuid, %(target)s::text)
RETURNING id, project_id, target, status, progress, artifacts, logs, started_at, finished_at,
          created_at, updated_at;

-- name: update
-- One statement, one round trip, no race: `current` locks the row (FOR UPDATE reads its
-- latest committed version) and the UPDATE runs only if that status is in allowed_from
-- and, when a progress is given, it equals the stored one or the status is in
-- progress_from. The result has one row when the build exists: previous_* always, the new
-- row's columns only when it was written (id IS NULL means the call was refused and
-- nothing was written). No row at all: no such build.
-- Timestamps use statement_timestamp() (never before the row's creation; see migration
-- 0002); logs keep their last %(max_logs)s characters (wis2l_log_tail, from a line start).
WITH current AS (
    SELECT id, status, progress
    FROM builds
    WHERE id = %(id)s::uuid
    FOR UPDATE
), changed AS (
    UPDATE builds AS b SET
        status = CASE WHEN %(set_status)s::bool THEN %(status)s::text ELSE b.status END,
        progress = CASE
            WHEN %(set_status)s::bool AND %(status)s::text = 'completed' THEN 100
            WHEN %(set_progress)s::bool THEN %(progress)s::int
            ELSE b.progress END,
        artifacts = CASE WHEN %(set_artifacts)s::bool THEN %(artifacts)s::jsonb
                         ELSE b.artifacts END,
        logs = CASE WHEN %(log)s::text = '' THEN b.logs
                    ELSE wis2l_log_tail(b.logs || %(log)s::text, %(max_logs)s::int) END,
        started_at = CASE
            WHEN %(set_status)s::bool AND %(status)s::text = 'building' AND c.status = 'pending'
            THEN greatest(statement_timestamp(), b.created_at) ELSE b.started_at END,
        finished_at = CASE
            WHEN %(set_status)s::bool AND %(status)s::text IN ('completed', 'failed')
            THEN greatest(statement_timestamp(), b.started_at, b.created_at)
            ELSE b.finished_at END
    FROM current AS c
    WHERE b.id = c.id AND c.status = ANY (%(allowed_from)s::text[])
      AND (NOT %(set_progress)s::bool OR c.progress = %(progress)s::int
           OR c.status = ANY (%(progress_from)s::text[]))
    RETURNING b.id, b.project_id, b.target, b.status, b.progress, b.artifacts, b.logs,
              b.started_at, b.finished_at, b.created_at, b.updated_at
)
SELECT c.status AS previous_status, c.progress AS previous_progress, u.*
FROM current AS c LEFT JOIN changed AS u ON true;

-- name: delete
-- Deployments of this build keep their rows: deployments.build_id is ON DELETE SET NULL.
DELETE FROM builds WHERE id = %(id)s::uuid RETURNING id;
