-- A placeholder for migration 0019, which another branch adds (the runner wants 1..n without
-- gaps). Drop this file when merging: the other branch's 0019 takes its place.
SELECT 1;
