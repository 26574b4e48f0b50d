-- own_tables 0001: playtest notes
-- Created by `wis2l db new playtest_notes`. Applied by `wis2l db migrate` (or `await
-- wis.migrate()`) in its own transaction, after the library's migrations and recorded in
-- wis2l_migrations under source 'own_tables'.
-- Forward-only: never edit this file once applied anywhere; add a new one instead.

-- The app's own table, next to the library's: notes players leave on a project's build.
CREATE TABLE playtest_notes (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    build_id    uuid REFERENCES builds (id) ON DELETE SET NULL,
    rating      smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp()
);
-- Keyset pages of one project's notes: WHERE project_id = ... AND id > ... ORDER BY id.
CREATE INDEX playtest_notes_project_id ON playtest_notes (project_id, id);
