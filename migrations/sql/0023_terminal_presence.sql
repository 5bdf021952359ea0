-- OneCard schema: whether each terminal is signed on to the switch (issue 13; docs/operations.md
-- "Terminals online").
--
-- The switch is the only writer. It writes a terminal's row in its group commit (the journal
-- writer's batch, after the batch's answers went out: never a write of its own per sign-on,
-- never on the purchase path) when a session of the terminal is confirmed (online) and when
-- the terminal's current session ends (offline; a session replaced by a newer one of the same
-- terminal is not its current session, so the terminal stays online). Before it accepts
-- terminals, and when it stops cleanly, it marks every row offline: a switch killed with
-- terminals connected left rows saying online, and nobody else could know they are not.
--
--   online        signed on now (as far as the last commit of the running switch says)
--   since         when `online` last changed (a replacing session keeps it)
--   signed_on_at  the last sign-on (NULL: none since the row was made)
--   peer          ip:port of the last session (shown only to log-ins that manage terminals)
--   sessions      sign-ons counted since the row was made
CREATE TABLE terminal_presence (
    terminal_id   integer     PRIMARY KEY REFERENCES terminals (id),
    tenant_id     integer     NOT NULL,
    online        boolean     NOT NULL DEFAULT false,
    since         timestamptz NOT NULL DEFAULT now(),
    signed_on_at  timestamptz,
    peer          text        NOT NULL DEFAULT '' CHECK (length(peer) <= 100),
    sessions      bigint      NOT NULL DEFAULT 0 CHECK (sessions >= 0)
);
-- The start-up and shutdown sweep touches only the rows still online.
CREATE INDEX terminal_presence_online ON terminal_presence (terminal_id) WHERE online;
