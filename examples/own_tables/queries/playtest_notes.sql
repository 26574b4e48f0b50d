-- The app's own queries: `-- name:` lines, psycopg placeholders, each with a ::type cast
-- (so `wis2l db check` can prepare them with WIS2L_QUERIES pointing at this folder).
-- `wis2l db generate --out examples/playtest_db --line-length 100` turns them
-- into typed functions (examples/playtest_db/playtest_notes.py); the name line's
-- `:one`, `:page` say what each returns.

-- name: add :one
-- Add a note on a project, optionally on one of its builds.
INSERT INTO playtest_notes (project_id, build_id, rating, body)
VALUES (%(project_id)s::uuid, %(build_id)s::uuid, %(rating)s::smallint, %(body)s::text)
RETURNING id, project_id, build_id, rating, body, created_at;

-- name: page_for_project :page
-- A project's notes, a keyset page at a time.
SELECT id, project_id, build_id, rating, body, created_at
FROM playtest_notes
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: rating_of_project :one
-- How many notes a project has, and their average rating (None without notes).
SELECT count(*) AS "notes!", round(avg(rating), 2)::float8 AS average
FROM playtest_notes
WHERE project_id = %(project_id)s::uuid;
