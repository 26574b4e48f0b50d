-- wis2l-core 0003: wis2l_migrations records which source each migration came from, so an
-- app's own migration folders (WIS2L_MIGRATIONS) are tracked beside the library's, each
-- with its own numbering. Rows recorded before this migration are the library's.
-- Forward-only: never edit this file once applied anywhere; add 0004_*.sql instead.

ALTER TABLE wis2l_migrations
    ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'wis2l-core';
ALTER TABLE wis2l_migrations DROP CONSTRAINT IF EXISTS wis2l_migrations_pkey;
ALTER TABLE wis2l_migrations ADD CONSTRAINT wis2l_migrations_pkey PRIMARY KEY (source, name);
