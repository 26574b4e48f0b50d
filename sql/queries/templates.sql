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

-- name: update
-- Each field is changed only when its set_<field> flag is true (see users.sql). Values
-- equal to the stored ones keep updated_at (the touch trigger, migration 0002).
UPDATE templates SET
    slug = CASE WHEN %(set_slug)s::bool THEN %(slug)s::text ELSE slug END,
    name = CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE name END,
    engine = CASE WHEN %(set_engine)s::bool THEN %(engine)s::text ELSE engine END,
    description = CASE WHEN %(set_description)s::bool
                       THEN %(description)s::text ELSE description END,
    files = CASE WHEN %(set_files)s::bool THEN %(files)s::jsonb ELSE files END
WHERE id = %(id)s::uuid
RETURNING id, slug, name, engine, description, files, created_at, updated_at;

-- name: delete
-- Projects started from the template keep their rows: projects.template_id is
-- ON DELETE SET NULL.
DELETE FROM templates WHERE id = %(id)s::uuid RETURNING id;
