-- Projects: a game on one engine, owned by a user. Slug is globally unique
-- (projects_slug_key). Lists are keyset pages over the UUIDv7 id (creation order).

-- name: find_by_id
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE id = %(id)s::uuid;

-- name: find_by_slug
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE slug = %(slug)s::text;

-- name: find_all
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_owner
-- projects_owner_idx (owner_id, id)
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE owner_id = %(owner_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_engine
-- projects_engine_idx (engine, id)
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE engine = %(engine)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_owner_and_engine
-- projects_owner_idx (owner_id, id), engine filtered on the way.
SELECT id, owner_id, name, slug, engine, template_id, description, metadata,
       created_at, updated_at
FROM projects
WHERE owner_id = %(owner_id)s::uuid AND engine = %(engine)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
INSERT INTO projects (id, owner_id, name, slug, engine, template_id, description, metadata)
VALUES (%(id)s::uuid, %(owner_id)s::uuid, %(name)s::text, %(slug)s::text, %(engine)s::text,
        %(template_id)s::uuid, %(description)s::text, %(metadata)s::jsonb)
RETURNING id, owner_id, name, slug, engine, template_id, description, metadata,
          created_at, updated_at;

-- name: update
-- Each field is changed only when its set_<field> flag is true (see users.sql).
UPDATE projects SET
    name = CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE name END,
    slug = CASE WHEN %(set_slug)s::bool THEN %(slug)s::text ELSE slug END,
    engine = CASE WHEN %(set_engine)s::bool THEN %(engine)s::text ELSE engine END,
    template_id = CASE WHEN %(set_template_id)s::bool
                       THEN %(template_id)s::uuid ELSE template_id END,
    description = CASE WHEN %(set_description)s::bool
                       THEN %(description)s::text ELSE description END,
    metadata = CASE WHEN %(set_metadata)s::bool THEN %(metadata)s::jsonb ELSE metadata END
WHERE id = %(id)s::uuid
RETURNING id, owner_id, name, slug, engine, template_id, description, metadata,
          created_at, updated_at;

-- name: delete
-- Cascades to the project's components, tokens, builds and deployments; its events stay
-- (events.project_id is set to NULL).
DELETE FROM projects WHERE id = %(id)s::uuid RETURNING id;
