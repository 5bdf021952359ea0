-- OneCard schema: a log-in's language on the server (issue 13, the console).
--
-- The console and the phone pages show Simplified Chinese or English. The choice belongs to the
-- log-in, not to a browser: set by PUT /auth/me/preferences (the caller's own only, audited),
-- carried by the log-in answer and GET /auth/me, so a clerk gets their language on any PC.
-- NULL: never chosen (the page falls back to the browser's last choice, then its language).
ALTER TABLE admin_users
    ADD COLUMN locale text CHECK (locale IN ('zh-CN', 'en'));
