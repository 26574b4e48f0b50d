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
-- updated_at (the touch trigger, migration 0002). The locked sub-select reads the role
-- before the change (old_role), for the user.role_changed event.
UPDATE users AS u SET
    email = CASE WHEN %(set_email)s::bool THEN %(email)s::text ELSE u.email END,
    name = CASE WHEN %(set_name)s::bool THEN %(name)s::text ELSE u.name END,
    subject = CASE WHEN %(set_subject)s::bool THEN %(subject)s::text ELSE u.subject END,
    role = CASE WHEN %(set_role)s::bool THEN %(role)s::text ELSE u.role END
FROM (SELECT id, role FROM users WHERE id = %(id)s::uuid FOR UPDATE) AS old
WHERE u.id = old.id
RETURNING u.id, u.email, u.name, u.subject, u.role, u.created_at, u.updated_at,
    old.role AS old_role;

-- name: sign_in
-- Find or create by subject in one statement: two first sign-ins at once make one user
-- (the loser of the insert race takes the DO UPDATE branch). email, name and role are
-- kept in step with the token when given (NULL keeps the stored value). created is true
-- when this statement inserted the row (it carries the id we proposed); old_role is the
-- role before the statement (NULL when the row was not visible to it). new_email is the
-- e-mail a new user gets: the token's, or a placeholder when it has no usable one.
INSERT INTO users AS u (id, email, name, subject, role)
VALUES (%(id)s::uuid, %(new_email)s::text, %(name)s::text, %(subject)s::text,
        COALESCE(%(role)s::text, 'developer'))
ON CONFLICT (subject) DO UPDATE SET
    email = COALESCE(%(email)s::text, u.email),
    name = COALESCE(%(name)s::text, u.name),
    role = COALESCE(%(role)s::text, u.role)
RETURNING id, email, name, subject, role, created_at, updated_at,
    id = %(id)s::uuid AS created,
    (SELECT o.role FROM users AS o WHERE o.subject = %(subject)s::text) AS old_role;

-- name: sign_in_existing
-- The same for an existing user only (the "refuse" first-sign-in policy): no row when
-- the subject is unknown.
UPDATE users AS u SET
    email = COALESCE(%(email)s::text, u.email),
    name = COALESCE(%(name)s::text, u.name),
    role = COALESCE(%(role)s::text, u.role)
FROM (SELECT id, role FROM users WHERE subject = %(subject)s::text FOR UPDATE) AS old
WHERE u.id = old.id
RETURNING u.id, u.email, u.name, u.subject, u.role, u.created_at, u.updated_at,
    false AS created, old.role AS old_role;

-- name: delete
DELETE FROM users WHERE id = %(id)s::uuid RETURNING id;
