-- Placeholder in branch doorsa only, so that 0019 applies here (migrations have no gaps).
-- The lead drops this file at merge: another branch owns 0017.
SELECT 1;
