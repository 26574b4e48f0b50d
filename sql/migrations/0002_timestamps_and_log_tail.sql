-- wis2l-core 0002: timestamps that never predate created_at, updates that change nothing
-- keep updated_at, the per-row cap of build logs, and the index of users.find_all(role=).
-- Forward-only: never edit this file once applied anywhere; add 0003_*.sql instead.

-- now() is the time the *transaction* began. A transaction that began before another one
-- inserted a row, and then updates that row, would stamp an updated_at (or a build's
-- started_at) earlier than the row's created_at. statement_timestamp() is the time the
-- statement began: a statement can only touch a row committed before it began, so its
-- stamp is never earlier than the row's creation. It is stable within a statement, so a
-- new row's created_at and updated_at stay equal.
ALTER TABLE users
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE templates
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE projects
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE components
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE design_tokens
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE builds
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE deployments
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();
ALTER TABLE events
    ALTER COLUMN created_at SET DEFAULT statement_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT statement_timestamp();

-- One rule for every table: an UPDATE that changes no column (no keyword given, or every
-- value equal to the stored one) keeps updated_at; a real change stamps the statement's
-- time, never earlier than created_at (a clock stepped back, a hand-set created_at).
-- Every column type in the schema has an equality operator, which IS DISTINCT FROM needs.
CREATE OR REPLACE FUNCTION wis2l_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := greatest(statement_timestamp(), NEW.created_at);
    RETURN NEW;
END;
$$;

-- The last max_len characters of a build's log. When text is dropped, the kept part
-- starts at a line boundary (the partial first line goes too), unless that would leave
-- nothing of a single very long line.
CREATE FUNCTION wis2l_log_tail(logs text, max_len integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    tail text;
    cut integer;
BEGIN
    IF length(logs) <= max_len THEN
        RETURN logs;
    END IF;
    tail := right(logs, max_len);
    IF substr(logs, length(logs) - max_len, 1) = E'\n' THEN
        RETURN tail;
    END IF;
    cut := strpos(tail, E'\n');
    IF cut = 0 OR cut = length(tail) THEN
        RETURN tail;
    END IF;
    RETURN substr(tail, cut + 1);
END;
$$;

-- users.find_all(role=...): keyset pages of one role.
CREATE INDEX users_role_idx ON users (role, id);
