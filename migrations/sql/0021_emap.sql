-- OneCard schema: the security desk's e-map (issue 13, the console's security desk).
--
-- A floor plan per access area: a PNG or JPEG image (its type sniffed from its bytes by the
-- admin API, at most 1 MiB), stored in the database like every other record so that a backup
-- holds it. A door is placed on its area's plan at (map_x, map_y): hundredths of a percent of
-- the image's width and height from its top left corner (0..10000), so the place does not
-- depend on the size the plan is shown at; NULL: not placed.
CREATE TABLE access_area_plans (
    area_id       integer PRIMARY KEY REFERENCES access_areas (id) ON DELETE CASCADE,
    tenant_id     integer NOT NULL,
    content_type  text    NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg')),
    image         bytea   NOT NULL CHECK (length(image) BETWEEN 1 AND 1048576),
    sha256        text    NOT NULL,
    uploaded_by   integer REFERENCES admin_users (id),
    uploaded_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE doors
    ADD COLUMN map_x integer CHECK (map_x BETWEEN 0 AND 10000),
    ADD COLUMN map_y integer CHECK (map_y BETWEEN 0 AND 10000),
    ADD CONSTRAINT doors_map_both CHECK ((map_x IS NULL) = (map_y IS NULL));
