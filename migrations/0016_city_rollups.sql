-- The city's figures per hour and per business day (issue 13), kept in a table
-- and refreshed incrementally: a write to sessions, bills or disputes marks the
-- UTC hours it touches in rollup_changes; the rollup job (`parking city rollup`,
-- supervised by `make run`) takes the marks and recomputes those hours, and the
-- business days (Asia/Shanghai) they fall in, from the source rows. Nothing is
-- ever rescanned in full: an hour reads its own rows through the indexes below.

-- Hours to recompute. Append-only for writers (no unique key: a busy hour is
-- marked by many transactions at once and none waits for another); the job
-- takes the marks it can see with DELETE ... RETURNING, so a mark committed
-- while it works is seen on its next run.
CREATE TABLE rollup_changes (
    hour timestamptz NOT NULL
);

-- One row per (scope, step, bucket). scope: 'city', 'district:<code>',
-- 'company:<id>' or 'lot:<id>'; step 'hour' (bucket: the UTC hour) or 'day'
-- (bucket: the business day's 00:00 Asia/Shanghai). Money in fen.
CREATE TABLE city_rollups (
    scope           text NOT NULL CHECK (scope ~ '^(city|district:[A-Z]{2,4}|company:[A-Za-z0-9_-]{1,64}|lot:[A-Za-z0-9_-]{1,64})$'),
    step            text NOT NULL CHECK (step IN ('hour', 'day')),
    bucket          timestamptz NOT NULL,
    capacity        integer NOT NULL DEFAULT 0 CHECK (capacity >= 0),
    -- sessions that entered (open or closed, not superseded or voided)
    entries         integer NOT NULL DEFAULT 0 CHECK (entries >= 0),
    -- sessions closed by an exit in the bucket
    exits           integer NOT NULL DEFAULT 0 CHECK (exits >= 0),
    -- of those, the ones with an entry time, and their summed and median stay
    stays           integer NOT NULL DEFAULT 0 CHECK (stays >= 0),
    stay_seconds    double precision NOT NULL DEFAULT 0,
    stay_median_s   double precision,
    -- exits whose session was paid ahead in the lot (a paid prepay bill)
    prepaid_exits   integer NOT NULL DEFAULT 0 CHECK (prepaid_exits >= 0),
    -- bills opened (应收) and bills paid (实收), by when it happened
    billed_fen      bigint NOT NULL DEFAULT 0,
    bills           integer NOT NULL DEFAULT 0,
    collected_fen   bigint NOT NULL DEFAULT 0,
    paid_bills      integer NOT NULL DEFAULT 0,
    contactless_bills integer NOT NULL DEFAULT 0,
    -- arrears (欠费): a stay bill still unpaid ARREARS_AFTER after the car left,
    -- counted when that time passes; recovered (追缴): such a bill paid later
    arrears_fen     bigint NOT NULL DEFAULT 0,
    arrears_bills   integer NOT NULL DEFAULT 0,
    recovered_fen   bigint NOT NULL DEFAULT 0,
    recovered_bills integer NOT NULL DEFAULT 0,
    disputes        integer NOT NULL DEFAULT 0 CHECK (disputes >= 0),
    -- sampled from the live core by the job while the hour is current
    occupied_peak   integer,
    occupied_last   integer,
    devices         integer,
    devices_online  integer,
    -- lane decision latency histogram (city scope only): counts per bucket
    lane_buckets    bigint[],
    refreshed_at    timestamptz NOT NULL,
    PRIMARY KEY (scope, step, bucket)
);

CREATE FUNCTION rollups_mark_sessions() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT h FROM (
        SELECT date_trunc('hour', entry_at, 'UTC') AS h FROM new_rows WHERE entry_at IS NOT NULL
        UNION SELECT date_trunc('hour', exit_at, 'UTC') FROM new_rows WHERE exit_at IS NOT NULL
    ) AS touched;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_changes (hour)
        SELECT DISTINCT h FROM (
            SELECT date_trunc('hour', entry_at, 'UTC') AS h FROM old_rows WHERE entry_at IS NOT NULL
            UNION SELECT date_trunc('hour', exit_at, 'UTC') FROM old_rows WHERE exit_at IS NOT NULL
        ) AS touched;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_rollups_insert AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_sessions();
CREATE TRIGGER sessions_rollups_update AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_sessions();

-- A bill touches the hour it was opened, the hour it was paid, and the hours in
-- which it may turn into arrears (ARREARS_AFTER is under an hour after closed_at).
CREATE FUNCTION rollups_mark_bills() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT h FROM (
        SELECT date_trunc('hour', created_at, 'UTC') AS h FROM new_rows
        UNION SELECT date_trunc('hour', paid_at, 'UTC') FROM new_rows WHERE paid_at IS NOT NULL
        UNION SELECT date_trunc('hour', closed_at, 'UTC') FROM new_rows
        UNION SELECT date_trunc('hour', closed_at, 'UTC') + interval '1 hour' FROM new_rows
    ) AS touched;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO rollup_changes (hour)
        SELECT DISTINCT date_trunc('hour', paid_at, 'UTC') FROM old_rows WHERE paid_at IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER bills_rollups_insert AFTER INSERT ON bills
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_bills();
CREATE TRIGGER bills_rollups_update AFTER UPDATE ON bills
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_bills();

CREATE FUNCTION rollups_mark_disputes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO rollup_changes (hour)
    SELECT DISTINCT date_trunc('hour', opened_at, 'UTC') FROM new_rows;
    RETURN NULL;
END;
$$;

CREATE TRIGGER disputes_rollups_insert AFTER INSERT ON disputes
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_disputes();

-- An hour reads its own rows.
CREATE INDEX sessions_entry_at_idx ON sessions (entry_at);
CREATE INDEX sessions_exit_at_idx ON sessions (exit_at) WHERE status = 'closed';
CREATE INDEX bills_created_at_idx ON bills (created_at);
CREATE INDEX bills_paid_at_idx ON bills (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX bills_arrears_idx ON bills (closed_at) WHERE kind <> 'prepay';
CREATE INDEX disputes_opened_at_idx ON disputes (opened_at);
CREATE INDEX contactless_deductions_bill_idx ON contactless_deductions (bill_id)
    WHERE status = 'succeeded';

-- What exists already is rolled up on the job's first run.
INSERT INTO rollup_changes (hour)
SELECT DISTINCT date_trunc('hour', entry_at, 'UTC') FROM sessions WHERE entry_at IS NOT NULL
UNION SELECT date_trunc('hour', exit_at, 'UTC') FROM sessions WHERE exit_at IS NOT NULL
UNION SELECT date_trunc('hour', created_at, 'UTC') FROM bills
UNION SELECT date_trunc('hour', paid_at, 'UTC') FROM bills WHERE paid_at IS NOT NULL
UNION SELECT date_trunc('hour', closed_at, 'UTC') + interval '1 hour' FROM bills;

GRANT SELECT, INSERT, UPDATE, DELETE ON rollup_changes, city_rollups TO parking_app;
