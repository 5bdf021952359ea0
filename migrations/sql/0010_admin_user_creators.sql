-- OneCard schema, version 9: who created each admin log-in. Separation of duties depends on
-- it: a log-in made (directly, or through log-ins it made) by the drafter of a document or by
-- another participant of its approval round does not approve it (admin_api/_routes_documents.py).
-- NULL: made by `onecard admin-init`, the demo, or before this migration.
ALTER TABLE admin_users ADD COLUMN created_by integer REFERENCES admin_users (id);
