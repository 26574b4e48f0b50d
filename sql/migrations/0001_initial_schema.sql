-- wis2l-core initial schema: the platform's eight tables.
-- Forward-only: never edit this file once applied anywhere; add 0002_*.sql instead.
-- Works on PostgreSQL 14+ (gen_random_uuid is core since 13).
-- Keys are UUIDv7 made by the library (time-ordered, so keyset pages follow creation);
-- the gen_random_uuid() default only serves rows written by hand.

CREATE FUNCTION wis2l_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- users: a nocturnaID.org identity (JWT `sub` = subject) and its role.
CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320 AND email LIKE '%_@_%'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    role        text NOT NULL DEFAULT 'developer'
                CHECK (role IN ('viewer', 'developer', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_subject_key ON users (subject);

-- templates: IGNITION project templates, a file tree per engine.
CREATE TABLE templates (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL CHECK (length(slug) <= 64 AND slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    engine      text NOT NULL CHECK (engine IN ('unity', 'godot', 'pico8', 'unreal',
                    'gamemaker', 'defold', 'love2d', 'bevy', 'web')),
    description text CHECK (length(description) <= 10000),
    files       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(files) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_slug_key ON templates (slug);
CREATE INDEX templates_engine_idx ON templates (engine, id);

-- projects: a game on one engine, owned by a user.
CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL CHECK (length(slug) <= 64 AND slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    engine      text NOT NULL CHECK (engine IN ('unity', 'godot', 'pico8', 'unreal',
                    'gamemaker', 'defold', 'love2d', 'bevy', 'web')),
    template_id uuid REFERENCES templates (id) ON DELETE SET NULL,
    description text CHECK (length(description) <= 10000),
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX projects_slug_key ON projects (slug);
CREATE INDEX projects_owner_idx ON projects (owner_id, id);
CREATE INDEX projects_engine_idx ON projects (engine, id);
CREATE INDEX projects_template_idx ON projects (template_id);

-- components: SPARK AI-generated code; version goes up on each update.
CREATE TABLE components (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    language    text NOT NULL CHECK (language IN ('csharp', 'glsl', 'hlsl', 'gdscript', 'lua',
                    'cpp', 'javascript', 'typescript', 'python', 'rust', 'other')),
    code        text NOT NULL,
    prompt      text,
    model       text CHECK (length(model) <= 200),
    experts     text[] NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX components_project_idx ON components (project_id, id);

-- design_tokens: SLATE tokens; version goes up only when the value changes.
CREATE TABLE design_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    category    text NOT NULL CHECK (category IN ('color', 'spacing', 'typography', 'shadow',
                    'radius', 'border', 'opacity', 'sizing', 'motion', 'z_index',
                    'breakpoint', 'other')),
    group_name  text CHECK (length(group_name) BETWEEN 1 AND 200),
    value       jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX design_tokens_project_name_key ON design_tokens (project_id, name);
CREATE INDEX design_tokens_project_idx ON design_tokens (project_id, id);
CREATE INDEX design_tokens_category_idx ON design_tokens (project_id, category, id);

-- builds: IGNIS builds; status pending -> building -> completed | failed.
CREATE TABLE builds (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    target      text NOT NULL CHECK (length(target) BETWEEN 1 AND 100),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'building', 'completed', 'failed')),
    progress    integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    artifacts   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(artifacts) = 'object'),
    logs        text NOT NULL DEFAULT '',
    started_at  timestamptz,
    finished_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX builds_project_idx ON builds (project_id, id);
CREATE INDEX builds_status_idx ON builds (status, id);

-- deployments: WAYPOINT deployments; status pending -> in_progress -> completed | failed.
CREATE TABLE deployments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    build_id    uuid REFERENCES builds (id) ON DELETE SET NULL,
    environment text NOT NULL CHECK (environment IN ('staging', 'production')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    version     text NOT NULL CHECK (length(version) BETWEEN 1 AND 100),
    url         text CHECK (length(url) <= 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_project_idx ON deployments (project_id, id);
CREATE INDEX deployments_build_idx ON deployments (build_id);

-- events: the audit log, which outlives what it describes, and the outbox of the event
-- bus: a row with published_at NULL is waiting for the relay to put it on JetStream.
CREATE TABLE events (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    type         text NOT NULL CHECK (length(type) BETWEEN 1 AND 200),
    subsystem    text NOT NULL CHECK (subsystem IN ('ignition', 'spark', 'slate', 'ignis',
                     'waypoint', 'identity')),
    project_id   uuid REFERENCES projects (id) ON DELETE SET NULL,
    subject      text CHECK (length(subject) <= 255),
    payload      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    published_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_subsystem_idx ON events (subsystem, id);
CREATE INDEX events_project_idx ON events (project_id, id);
CREATE INDEX events_unpublished_idx ON events (seq) WHERE published_at IS NULL AND subject IS NOT NULL;

-- Wake the outbox relay when events commit: one notification per statement, delivered
-- at commit (and not at all on rollback).
CREATE FUNCTION wis2l_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('wis2l_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION wis2l_events_notify();

CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER templates_touch BEFORE UPDATE ON templates
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER projects_touch BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER components_touch BEFORE UPDATE ON components
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER design_tokens_touch BEFORE UPDATE ON design_tokens
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER builds_touch BEFORE UPDATE ON builds
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER deployments_touch BEFORE UPDATE ON deployments
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
CREATE TRIGGER events_touch BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION wis2l_touch_updated_at();
