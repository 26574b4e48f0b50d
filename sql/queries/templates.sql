-- Templates: IGNITION project templates, a file tree (JSON object) for one engine.
-- Slug is unique (templates_slug_key).

-- name: find_by_id
SELECT id, slug, name, engine, description, files, created_at, updated_at
FROM templates
WHERE id = %(id)s::uuid;

-- name: find_by_slug
SELECT id, slug, name, engine, description, files, created_at, updated_at
FROM templates
WHERE slug = %(slug)s::text;

-- name: find_all
SELECT id, slug, name, engine, description, files, created_at, updated_at
FROM templates
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_engine
-- templates_engine_idx (engine, id)
SELECT id, slug, name, engine, description, files, created_at, updated_at
FROM templates
WHERE engine = %(engine)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
INSERT INTO templates (id, slug, name, engine, description, files)
VALUES (%(id)s::uuid, %(slug)s::text, %(name)s::text, %(engine)s::text,
        %(description)s::text, %(files)s::jsonb)
RETURNING id, slug, name, engine, description, files, created_at, updated_at;
