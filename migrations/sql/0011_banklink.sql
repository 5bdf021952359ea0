-- OneCard schema, version 11: the bank link's STAN and RRN (docs/bank-link.md, "STAN and RRN").
-- RRN: 12 digits from a sequence that never cycles, so unique forever (a trillion top-ups).
-- STAN: 1..999999 per UTC day (the day of field 7), one counter row per day; past 999999 the
-- CHECK refuses the day's next request rather than reuse a STAN. Both survive restarts.
-- bank_next_stan_rrn() draws both in one statement (switch/_banklink.py allocate_stan_rrn).
CREATE SEQUENCE bank_rrn_seq MINVALUE 1 MAXVALUE 999999999999 NO CYCLE;

CREATE TABLE bank_stan_days (
    day date PRIMARY KEY,
    last_stan integer NOT NULL CHECK (last_stan BETWEEN 1 AND 999999)
);

CREATE FUNCTION bank_next_stan_rrn(OUT day date, OUT stan integer, OUT rrn text)
LANGUAGE sql AS $$
    WITH s AS (
        INSERT INTO bank_stan_days (day, last_stan)
        VALUES ((clock_timestamp() AT TIME ZONE 'UTC')::date, 1)
        ON CONFLICT ON CONSTRAINT bank_stan_days_pkey
            DO UPDATE SET last_stan = bank_stan_days.last_stan + 1
        RETURNING bank_stan_days.day, bank_stan_days.last_stan
    )
    SELECT s.day, s.last_stan, lpad(nextval('bank_rrn_seq')::text, 12, '0') FROM s
$$;
