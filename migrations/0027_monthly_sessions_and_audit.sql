-- Issue 21: sessions and the audit log partitioned by month, like passages and sensor
-- readings (0007), so a year of them stays a set of month-sized tables the retention
-- job can archive one at a time.
--
-- Sessions are partitioned by RANGE of their id. A session id is "s-" and a ULID of
-- the event that opened it (occupancy.logic.session_id_for, or the scan's time), and
-- a ULID starts with its time: every id of a month lies between "s-" and the ULID
-- time of the month's first millisecond and that of the next month's. The id is the
-- partition key because every write merges by id (INSERT .. ON CONFLICT (id)): the
-- primary key stays (id) and a session never moves between partitions. Months are
-- compared as strings of [0-9A-Z] after "s-", the same in the C and UTF-8 collations.
--
-- "One open session per plate city-wide" (and one open unplated car per account)
-- cannot be a unique index of a partitioned table (it would have to contain the id):
-- it moves to sessions_open, one row per open session kept by row triggers in the
-- same transaction, with the unique indexes (and their names) sessions had.
--
-- Partitions are made on demand by ensure_month_partition, which runs as the owner
-- (SECURITY DEFINER): the platform's role (parking_app, 0012) owns nothing and could
-- not create a partition, so until now a month past 2027 would have stopped the
-- persister.

-- ------------------------------------------------------------ making month partitions

-- The lowest session id of a month: "s-" and the ULID time (10 Crockford base32
-- characters) of the month's first millisecond in UTC.
CREATE FUNCTION session_id_floor(month date) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    ms bigint := (extract(epoch FROM (date_trunc('month', month::timestamp) AT TIME ZONE 'UTC'))
                  * 1000)::bigint;
    out text := '';
BEGIN
    FOR i IN 1..10 LOOP
        out := substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (ms % 32)::int + 1, 1) || out;
        ms := ms / 32;
    END LOOP;
    RETURN 's-' || out;
END
$$;

-- The month (first day, UTC) a session id belongs to; NULL for an id that is not
-- "s-" and a ULID.
CREATE FUNCTION session_id_month(id text) RETURNS date
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    ms bigint := 0;
BEGIN
    IF id !~ '^s-[0-9A-HJKMNP-TV-Z]{26}$' THEN
        RETURN NULL;
    END IF;
    FOR i IN 3..12 LOOP
        ms := ms * 32 + strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, i, 1)) - 1;
    END LOOP;
    RETURN date_trunc('month', to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC')::date;
END
$$;

-- Make <parent>_YYYY_MM if it is missing. passages, space_events and audit_log are
-- partitioned by a time (the month's bounds in UTC), sessions by id.
CREATE FUNCTION ensure_month_partition(parent text, month date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name text := parent || '_' || to_char(first, 'YYYY_MM');
    low text;
    high text;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    -- Two writers may race here; the lock makes the check-then-create atomic.
    PERFORM pg_advisory_xact_lock(hashtext(name));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    IF parent = 'sessions' THEN
        low := session_id_floor(first);
        high := session_id_floor((first + interval '1 month')::date);
    ELSIF parent IN ('passages', 'space_events', 'audit_log') THEN
        -- month boundaries in UTC, whatever the session's TimeZone
        low := to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00';
        high := to_char(first + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
    ELSE
        RAISE EXCEPTION '% has no monthly partitions', parent;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   name, parent, low, high);
    IF parent = 'audit_log' THEN
        -- append-only through the partition's own name too
        EXECUTE format('REVOKE UPDATE, DELETE ON %I FROM parking_app', name);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ensure_month_partition(text, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_month_partition(text, date) TO parking_app;

CREATE OR REPLACE FUNCTION ensure_event_partitions(month date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ensure_month_partition('passages', month);
    PERFORM ensure_month_partition('space_events', month);
END
$$;

-- The months of these session ids, made if missing (the persister and the scans call
-- it before they write sessions; one cheap statement when they all exist).
CREATE FUNCTION ensure_session_partitions(ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m date;
BEGIN
    FOR m IN
        SELECT DISTINCT session_id_month(p || '0000000000000000000')
          FROM (SELECT DISTINCT left(i, 9) AS p FROM unnest(ids) AS i
                 WHERE i ~ '^s-[0-9A-HJKMNP-TV-Z]{26}$') AS prefixes
    LOOP
        PERFORM ensure_month_partition('sessions', m);
    END LOOP;
END
$$;

-- ------------------------------------------------------------------------ sessions

ALTER TABLE sessions RENAME TO sessions_unpartitioned;
CREATE TABLE sessions (
    id             text NOT NULL,
    lot_id         text NOT NULL,
    plate          text,
    plate_raw      text,
    status         text NOT NULL,
    entry_at       timestamptz,
    exit_at        timestamptz,
    entry_device_id text,
    entry_seq      bigint,
    exit_device_id text,
    exit_seq       bigint,
    vehicle_class  smallint,
    fee_fen        bigint,
    tariff_id      text,
    tariff_version integer,
    pricing_reason text,
    quote          jsonb,
    superseded_by  text,
    flags          text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    account_id     text,
    CONSTRAINT sessions_status_check
        CHECK (status IN ('open', 'closed', 'superseded', 'voided')),
    CONSTRAINT sessions_vehicle_class_check CHECK (vehicle_class BETWEEN 1 AND 5),
    CONSTRAINT sessions_fee_fen_check CHECK (fee_fen >= 0),
    CONSTRAINT sessions_entry_or_exit CHECK (entry_at IS NOT NULL OR exit_at IS NOT NULL),
    CONSTRAINT sessions_closed_has_fee CHECK (status <> 'closed' OR fee_fen IS NOT NULL)
) PARTITION BY RANGE (id);

DO $$
DECLARE m date;
BEGIN
    -- only the months that hold rows: the rest are made by the first row that needs
    -- them (a query over sessions plans every partition, so none is made ahead)
    FOR m IN
        SELECT DISTINCT session_id_month(id) FROM sessions_unpartitioned
         WHERE session_id_month(id) IS NOT NULL
    LOOP
        PERFORM ensure_month_partition('sessions', m);
    END LOOP;
END
$$;

-- Ids that name no month ("s-" and a ULID: every id the platform makes does) have a
-- partition of their own, never archived: rows made by hand or imported. A well-formed
-- id may not land there (its month's partition is made first), or that month's
-- partition could no longer be created.
CREATE TABLE sessions_unsorted PARTITION OF sessions DEFAULT;
ALTER TABLE sessions_unsorted ADD CONSTRAINT sessions_unsorted_names_no_month
    CHECK (session_id_month(id) IS NULL);

-- Every row moves (one transaction: the upgrade stops the writers, docs/operations.md).
INSERT INTO sessions SELECT
    id, lot_id, plate, plate_raw, status, entry_at, exit_at, entry_device_id, entry_seq,
    exit_device_id, exit_seq, vehicle_class, fee_fen, tariff_id, tariff_version,
    pricing_reason, quote, superseded_by, flags, created_at, updated_at, account_id
FROM sessions_unpartitioned;
DROP TABLE sessions_unpartitioned;

ALTER TABLE sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
ALTER TABLE sessions ADD CONSTRAINT sessions_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES accounts (id);
CREATE INDEX sessions_plate_idx ON sessions (plate, entry_at);
CREATE INDEX sessions_lot_open_idx ON sessions (lot_id) WHERE status = 'open';
CREATE INDEX sessions_account_idx ON sessions (account_id, entry_at) WHERE account_id IS NOT NULL;
CREATE INDEX sessions_entry_at_idx ON sessions (entry_at);
CREATE INDEX sessions_exit_at_idx ON sessions (exit_at) WHERE status = 'closed';

CREATE TRIGGER sessions_rollups_insert AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_sessions();
CREATE TRIGGER sessions_rollups_update AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_mark_sessions();

-- The open sessions, one row each, kept by the triggers below in the writer's
-- transaction. Its unique indexes are the rules sessions had as partial indexes.
CREATE TABLE sessions_open (
    id         text PRIMARY KEY,
    lot_id     text NOT NULL,
    plate      text,
    account_id text
);
CREATE UNIQUE INDEX sessions_one_open_per_plate ON sessions_open (plate);
CREATE UNIQUE INDEX sessions_one_open_unplated_per_account ON sessions_open (account_id)
    WHERE plate IS NULL AND account_id IS NOT NULL;
INSERT INTO sessions_open (id, lot_id, plate, account_id)
SELECT id, lot_id, plate, account_id FROM sessions WHERE status = 'open';

CREATE FUNCTION sessions_track_open() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sessions_open (id, lot_id, plate, account_id)
        VALUES (NEW.id, NEW.lot_id, NEW.plate, NEW.account_id);
    ELSIF TG_OP = 'DELETE' OR NEW.status <> 'open' THEN
        DELETE FROM sessions_open WHERE id = OLD.id;
    ELSIF OLD.status <> 'open' THEN
        INSERT INTO sessions_open (id, lot_id, plate, account_id)
        VALUES (NEW.id, NEW.lot_id, NEW.plate, NEW.account_id);
    ELSE
        UPDATE sessions_open SET lot_id = NEW.lot_id, plate = NEW.plate,
                                 account_id = NEW.account_id
         WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_open_insert AFTER INSERT ON sessions
    FOR EACH ROW WHEN (NEW.status = 'open') EXECUTE FUNCTION sessions_track_open();
CREATE TRIGGER sessions_open_update AFTER UPDATE ON sessions
    FOR EACH ROW WHEN ((OLD.status = 'open' OR NEW.status = 'open')
                       AND (OLD.status, OLD.lot_id, OLD.plate, OLD.account_id)
                           IS DISTINCT FROM (NEW.status, NEW.lot_id, NEW.plate, NEW.account_id))
    EXECUTE FUNCTION sessions_track_open();
CREATE TRIGGER sessions_open_delete AFTER DELETE ON sessions
    FOR EACH ROW WHEN (OLD.status = 'open') EXECUTE FUNCTION sessions_track_open();

-- ----------------------------------------------------------------------- audit log

-- The audit log is append-only from now on (it was only by convention): the platform's
-- role may INSERT and SELECT, a row trigger refuses UPDATE and DELETE to anyone.
CREATE OR REPLACE FUNCTION append_only_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME LIKE 'audit_log%' THEN
        RAISE EXCEPTION '% on % refused: the audit log is append-only', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'record what changed as a new audit entry';
    END IF;
    RAISE EXCEPTION '% on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'correct the ledger with a reversing transaction';
END;
$$;

ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_pkey RENAME TO audit_log_unpartitioned_pkey;
ALTER INDEX audit_log_target_idx RENAME TO audit_log_unpartitioned_target_idx;
ALTER SEQUENCE audit_log_id_seq RENAME TO audit_log_unpartitioned_id_seq;
CREATE SEQUENCE audit_log_id_seq;
CREATE TABLE audit_log (
    id      bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    role    text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_target_idx ON audit_log (target, at);
REVOKE UPDATE, DELETE ON audit_log FROM parking_app;

DO $$
DECLARE m date;
BEGIN
    FOR m IN
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date
          FROM audit_log_unpartitioned
    LOOP
        PERFORM ensure_month_partition('audit_log', m);
    END LOOP;
END
$$;
INSERT INTO audit_log (id, at, actor, role, action, target, details)
SELECT id, at, actor, role, action, target, details FROM audit_log_unpartitioned;
SELECT setval('audit_log_id_seq', coalesce((SELECT max(id) FROM audit_log_unpartitioned), 0) + 1,
              false);
DROP TABLE audit_log_unpartitioned;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();

-- One audit row, its month's partition made if missing (parking.audit.record).
CREATE FUNCTION audit_append(p_at timestamptz, p_actor text, p_role text, p_action text,
                             p_target text, p_details jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ensure_month_partition('audit_log', (p_at AT TIME ZONE 'UTC')::date);
    INSERT INTO audit_log (at, actor, role, action, target, details)
    VALUES (p_at, p_actor, p_role, p_action, p_target, p_details);
END
$$;
