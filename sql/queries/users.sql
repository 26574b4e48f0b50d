-- Users: nocturnaID.org identities. Email is unique case-insensitively (users_email_key).

-- name: find_by_id
SELECT id, email, name, subject, role, created_at, updated_at
FROM users
WHERE id = %(id)s::uuid;

-- name: find_by_email
SELECT id, email, name, subject, role, created_at, updated_at
FROM users
WHERE lower(email) = lower(%(email)s::text);

-- name: find_by_subject
SELECT id, email, name, subject, role, created_at, updated_at
FROM users
WHERE subject = %(subject)s::text;

-- name: find_all
SELECT id, email, name, subject, role, created_at, updated_at
FROM users
WHERE id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: find_all_by_role
-- users_role_idx (role, id)
SELECT id, email, name, subject, role, created_at, updated_at
FROM users
WHERE role = %(role)s::text AND id > %(after)s::uuid
ORDER BY id
LIMIT %(limit)s::int;

-- name: create
INSERT INTO users (id, email, name, subject, role)
VALUES (%(id)s::uuid, %(email)s::text, %(name)s::text, %(subject)s::text, %(role)s::text)
RETURNING id, email, name, subject, role, created_at, updated_at;

-- name: update
-- Each field is changed only when its set_<field> flag is true, so one statement serves
-- every combination of keyword arguments. An update that changes no value keeps
-- updated_at (the touch trigger, migration 0002).
UPDATE users SET
    email = CASE WHEN %(set_email)s::bool THEN %(email)s::text ELSE email END,
    name = CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE name END,
    subject = CASE WHEN %(set_subject)s::bool THEN %(subject)s::text ELSE subject END,
    role = CASE WHEN %(set_role)s::bool THEN %(role)s::text ELSE role END
WHERE id = %(id)s::uuid
RETURNING id, email, name, subject, role, created_at, updated_at;

-- name: delete
DELETE FROM users WHERE id = %(id)s::uuid RETURNING id;
