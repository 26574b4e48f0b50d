-- Design tokens (SLATE). A token is unique per project by name
-- (design_tokens_project_name_key); version goes up only when its value changes.
--
-- upsert and sync tell "created or value changed" apart from "value unchanged" without a
-- race: the ON CONFLICT ... DO UPDATE only fires WHERE the locked, latest value differs,
-- so a returned `up` row is exactly a creation or a value change. Rows whose value was
-- unchanged are still locked by the ON CONFLICT; `meta` then applies a category/group
-- change without a version bump, and `cur` reads the row (FOR UPDATE follows it to its
-- latest version). A row inserted by another transaction after this statement's snapshot
-- is invisible to `meta`/`cur`; such a row is simply missing from the result, and the
-- caller runs the statement again for it (its value was equal, so nothing is lost).

-- name: find_by_id
SELECT id, project_id, name, category, group_name, value, version, created_at, updated_at
FROM design_tokens
WHERE id = %(id)s::uuid;

-- name: find_all
-- design_tokens_project_name_key (project_id, name) finds the project's tokens.
SELECT id, project_id, name, category, group_name, value, version, created_at, updated_at
FROM design_tokens
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_by_category
-- design_tokens_category_idx (project_id, category, id)
SELECT id, project_id, name, category, group_name, value, version, created_at, updated_at
FROM design_tokens
WHERE project_id = %(project_id)s::uuid AND category = %(category)s::text
  AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: upsert
WITH up AS (
    INSERT INTO design_tokens AS t (id, project_id, name, category, group_name, value)
    VALUES (%(id)s::uuid, %(project_id)s::uuid, %(name)s::text, %(category)s::text,
            %(group)s::text, %(value)s::jsonb)
    ON CONFLICT (project_id, name) DO UPDATE SET
        category = EXCLUDED.category,
        group_name = EXCLUDED.group_name,
        value = EXCLUDED.value,
        version = t.version + 1
    WHERE t.value IS DISTINCT FROM EXCLUDED.value
    RETURNING t.id, t.project_id, t.name, t.category, t.group_name, t.value, t.version,
              t.created_at, t.updated_at
), meta AS (
    UPDATE design_tokens AS t
    SET category = %(category)s::text, group_name = %(group)s::text
    WHERE t.project_id = %(project_id)s::uuid AND t.name = %(name)s::text
      AND NOT EXISTS (SELECT FROM up)
      AND (t.category, t.group_name) IS DISTINCT FROM (%(category)s::text, %(group)s::text)
    RETURNING t.id, t.project_id, t.name, t.category, t.group_name, t.value, t.version,
              t.created_at, t.updated_at
), cur AS (
    SELECT t.id, t.project_id, t.name, t.category, t.group_name, t.value, t.version,
           t.created_at, t.updated_at
    FROM design_tokens AS t
    WHERE t.project_id = %(project_id)s::uuid AND t.name = %(name)s::text
      AND NOT EXISTS (SELECT FROM up) AND NOT EXISTS (SELECT FROM meta)
    FOR UPDATE
)
SELECT *, true AS changed FROM up
UNION ALL SELECT *, false FROM meta
UNION ALL SELECT *, false FROM cur;

-- name: sync
-- upsert for many tokens in one statement. %(tokens)s is a JSON array of
-- {"id", "name", "category", "group", "value"}; rows are written in name order so that
-- concurrent syncs lock in one order (no deadlock). One result row: per-column arrays of
-- the stored tokens and the number created or changed.
WITH input AS (
    SELECT (e ->> 'id')::uuid AS id, e ->> 'name' AS name, e ->> 'category' AS category,
           e ->> 'group' AS group_name, e -> 'value' AS value
    FROM jsonb_array_elements(%(tokens)s::jsonb) AS x (e)
), up AS (
    INSERT INTO design_tokens AS t (id, project_id, name, category, group_name, value)
    SELECT i.id, %(project_id)s::uuid, i.name, i.category, i.group_name, i.value
    FROM input AS i
    ORDER BY i.name
    ON CONFLICT (project_id, name) DO UPDATE SET
        category = EXCLUDED.category,
        group_name = EXCLUDED.group_name,
        value = EXCLUDED.value,
        version = t.version + 1
    WHERE t.value IS DISTINCT FROM EXCLUDED.value
    RETURNING t.id, t.name, t.category, t.group_name, t.value, t.version,
              t.created_at, t.updated_at
), meta AS (
    UPDATE design_tokens AS t
    SET category = i.category, group_name = i.group_name
    FROM input AS i
    WHERE t.project_id = %(project_id)s::uuid AND t.name = i.name
      AND i.name NOT IN (SELECT name FROM up)
      AND (t.category, t.group_name) IS DISTINCT FROM (i.category, i.group_name)
    RETURNING t.id, t.name, t.category, t.group_name, t.value, t.version,
              t.created_at, t.updated_at
), cur AS (
    SELECT t.id, t.name, t.category, t.group_name, t.value, t.version,
           t.created_at, t.updated_at
    FROM design_tokens AS t
    JOIN input AS i ON t.name = i.name
    WHERE t.project_id = %(project_id)s::uuid
      AND i.name NOT IN (SELECT name FROM up) AND i.name NOT IN (SELECT name FROM meta)
    FOR UPDATE OF t
), stored AS (
    SELECT *, true AS changed FROM up
    UNION ALL SELECT *, false FROM meta
    UNION ALL SELECT *, false FROM cur
)
SELECT %(project_id)s::uuid AS project_id,
       count(*) FILTER (WHERE changed)::int AS changed,
       coalesce(array_agg(id), '{}') AS ids,
       coalesce(array_agg(name), '{}') AS names,
       coalesce(array_agg(category), '{}') AS categories,
       coalesce(array_agg(group_name), '{}') AS groups,
       coalesce(array_agg(value), '{}') AS "values",
       coalesce(array_agg(version), '{}') AS versions,
       coalesce(array_agg(created_at), '{}') AS created,
       coalesce(array_agg(updated_at), '{}') AS updated,
       coalesce(array_agg(changed), '{}') AS changes
FROM stored;

-- name: delete
-- design_tokens_project_name_key (project_id, name)
DELETE FROM design_tokens
WHERE project_id = %(project_id)s::uuid AND name = %(name)s::text
RETURNING id, project_id, name, category;
