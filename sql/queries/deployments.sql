-- Deployments (WAYPOINT): status pending -> in_progress -> completed | failed
-- (pending -> failed too). `update` enforces the state machine atomically, as builds do.

-- name: find_by_id
SELECT id, project_id, build_id, environment, status, version, url, created_at, updated_at
FROM deployments
WHERE id = %(id)s::uuid;

-- name: find_all
SELECT id, project_id, build_id, environment, status, version, url, created_at, updated_at
FROM deployments
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_by_project_id
SELECT id, project_id, build_id, environment, status, version, url, created_at, updated_at
FROM deployments
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
-- A build, when given, must be one of the same project: no row comes back otherwise.
INSERT INTO deployments (id, project_id, build_id, environment, version)
SELECT %(id)s::uuid, %(project_id)s::uuid, %(build_id)s::uuid, %(environment)s::text,
       %(version)s::text
WHERE %(build_id)s::uuid IS NULL
   OR EXISTS (SELECT 1 FROM builds
              WHERE id = %(build_id)s::uuid AND project_id = %(project_id)s::uuid)
RETURNING id, project_id, build_id, environment, status, version, url, created_at, updated_at;

-- name: update
-- `current` locks the row; the UPDATE runs only if its status is in allowed_from.
-- One row when the deployment exists (id IS NULL: refused, nothing written); none if not.
WITH current AS (
    SELECT id, status
    FROM deployments
    WHERE id = %(id)s::uuid
    FOR UPDATE
), changed AS (
    UPDATE deployments AS d SET
        status = CASE WHEN %(set_status)s::bool THEN %(status)s::text ELSE d.status END,
        url = CASE WHEN %(set_url)s::bool THEN %(url)s::text ELSE d.url END
    FROM current AS c
    WHERE d.id = c.id AND c.status = ANY (%(allowed_from)s::text[])
    RETURNING d.id, d.project_id, d.build_id, d.environment, d.status, d.version, d.url,
              d.created_at, d.updated_at
)
SELECT c.status AS previous_status, u.*
FROM current AS c LEFT JOIN changed AS u ON true;

-- name: delete
DELETE FROM deployments WHERE id = %(id)s::uuid RETURNING id;
