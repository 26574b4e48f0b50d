-- Components: SPARK AI-generated code. Every update that changes something adds one to
-- version, in SQL, so concurrent updates each get their own version number.

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
-- Each field is changed only when its set_<field> flag is true (see users.sql). `wanted`
-- locks the row (FOR UPDATE reads its latest committed version) and works out the new
-- values; the UPDATE runs, and version goes up, only when one of them differs from the
-- stored one. One row when the component exists: `changed` tells whether it was written
-- (else it is the stored row, unchanged); no row: no such component.
WITH wanted AS (
    SELECT c.id, c.project_id, c.name, c.language, c.code, c.prompt, c.model, c.experts,
           c.metadata, c.version, c.created_at, c.updated_at,
           CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE c.name END AS new_name,
           CASE WHEN %(set_language)s::bool THEN %(language)s::text
                ELSE c.language END AS new_language,
           CASE WHEN %(set_code)s::bool THEN %(code)s::text ELSE c.code END AS new_code,
           CASE WHEN %(set_prompt)s::bool THEN %(prompt)s::text ELSE c.prompt END AS new_prompt,
           CASE WHEN %(set_model)s::bool THEN %(model)s::text ELSE c.model END AS new_model,
           CASE WHEN %(set_experts)s::bool THEN %(experts)s::text[]
                ELSE c.experts END AS new_experts,
           CASE WHEN %(set_metadata)s::bool THEN %(metadata)s::jsonb
                ELSE c.metadata END AS new_metadata
    FROM components AS c
    WHERE c.id = %(id)s::uuid
    FOR UPDATE
), changed AS (
    UPDATE components AS t SET
        name = w.new_name,
        language = w.new_language,
        code = w.new_code,
        prompt = w.new_prompt,
        model = w.new_model,
        experts = w.new_experts,
        metadata = w.new_metadata,
        version = t.version + 1
    FROM wanted AS w
    WHERE t.id = w.id
      AND (t.name, t.language, t.code, t.prompt, t.model, t.experts, t.metadata)
          IS DISTINCT FROM (w.new_name, w.new_language, w.new_code, w.new_prompt,
                            w.new_model, w.new_experts, w.new_metadata)
    RETURNING t.id, t.project_id, t.name, t.language, t.code, t.prompt, t.model, t.experts,
              t.metadata, t.version, t.created_at, t.updated_at
)
SELECT *, true AS changed FROM changed
UNION ALL
SELECT id, project_id, name, language, code, prompt, model, experts, metadata, version,
       created_at, updated_at, false
FROM wanted
WHERE NOT EXISTS (SELECT FROM changed);

-- name: delete
DELETE FROM components WHERE id = %(id)s::uuid RETURNING id, project_id, name;
