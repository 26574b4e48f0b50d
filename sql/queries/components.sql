-- Components: SPARK AI-generated code. Every update adds one to version, in SQL, so
-- concurrent updates each get their own version number.

-- name: find_by_id
SELECT id, project_id, name, language, code, prompt, model, experts, metadata, version,
       created_at, updated_at
FROM components
WHERE id = %(id)s::uuid;

-- name: find_all
SELECT id, project_id, name, language, code, prompt, model, experts, metadata, version,
       created_at, updated_at
FROM components
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_by_project_id
-- components_project_idx (project_id, id)
SELECT id, project_id, name, language, code, prompt, model, experts, metadata, version,
       created_at, updated_at
FROM components
WHERE project_id = %(project_id)s::uuid AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
INSERT INTO components (id, project_id, name, language, code, prompt, model, experts, metadata)
VALUES (%(id)s::uuid, %(project_id)s::uuid, %(name)s::text, %(language)s::text,
        %(code)s::text, %(prompt)s::text, %(model)s::text, %(experts)s::text[],
        %(metadata)s::jsonb)
RETURNING id, project_id, name, language, code, prompt, model, experts, metadata, version,
          created_at, updated_at;

-- name: update
-- Each field is changed only when its set_<field> flag is true (see users.sql).
UPDATE components SET
    name = CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE name END,
    language = CASE WHEN %(set_language)s::bool THEN %(language)s::text ELSE language END,
    code = CASE WHEN %(set_code)s::bool THEN %(code)s::text ELSE code END,
    prompt = CASE WHEN %(set_prompt)s::bool THEN %(prompt)s::text ELSE prompt END,
    model = CASE WHEN %(set_model)s::bool THEN %(model)s::text ELSE model END,
    experts = CASE WHEN %(set_experts)s::bool THEN %(experts)s::text[] ELSE experts END,
    metadata = CASE WHEN %(set_metadata)s::bool THEN %(metadata)s::jsonb ELSE metadata END,
    version = version + 1
WHERE id = %(id)s::uuid
RETURNING id, project_id, name, language, code, prompt, model, experts, metadata, version,
          created_at, updated_at;

-- name: delete
DELETE FROM components WHERE id = %(id)s::uuid RETURNING id, project_id, name;
