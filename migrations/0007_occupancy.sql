-- Device events and what they did: the system of record behind the Redis
-- occupancy core (contracts/mqtt.md; the persister writes every table here).

-- Every (device_id, seq) the platform has stored, exactly once. The dedup table
-- is not partitioned: a unique key on a partitioned table must contain the
-- partition key, and the same event redelivered a month later would then slip
-- past it. Dead-lettered events whose device and seq could be trusted are here
-- too (kind 'dead_letter'), so the device's watermark can cover them and its
-- outbox stops re-sending a payload that will never decode.
CREATE TABLE device_events (
    device_id   text NOT NULL,
    seq         bigint NOT NULL CHECK (seq BETWEEN 1 AND 9007199254740992),
    kind        text NOT NULL CHECK (kind IN ('passage', 'space_state', 'dead_letter')),
    observed_at timestamptz,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, seq)
);

-- Contiguous high-water mark per device: every seq in 1..seq is in device_events.
-- This is what the retained `devices/{id}/watermark` message tells the device.
CREATE TABLE device_watermarks (
    device_id  text PRIMARY KEY,
    seq        bigint NOT NULL CHECK (seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Gate passages, partitioned by month of received_at: the platform's clock
-- decides the partition, because a device clock that is years off would route
-- a row to a partition that does not exist. Uniqueness of (device_id, seq) is
-- enforced by device_events in the same transaction.
CREATE TABLE passages (
    device_id     text NOT NULL,
    seq           bigint NOT NULL,
    received_at   timestamptz NOT NULL,
    observed_at   timestamptz NOT NULL,
    lot_id        text NOT NULL,
    lane_id       text NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    plate         text,
    plate_raw     text,
    plate_color   text,
    confidence    real,
    image_ref     text,
    -- what the lane did: opened, full, held, closed, no_entry
    outcome       text NOT NULL,
    hold_reason   text,
    session_id    text,
    PRIMARY KEY (device_id, seq, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX passages_lot_idx ON passages (lot_id, received_at);
CREATE INDEX passages_plate_idx ON passages (plate, received_at) WHERE plate IS NOT NULL;

-- Sensor readings, partitioned like passages.
CREATE TABLE space_events (
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    received_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    lot_id      text NOT NULL,
    space_id    text NOT NULL,
    occupied    boolean NOT NULL,
    battery_pct smallint,
    PRIMARY KEY (device_id, seq, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX space_events_space_idx ON space_events (lot_id, space_id, received_at);

-- Monthly partitions are created on demand (the persister calls this for every
-- month it writes); 2026 and 2027 exist from the start. A DEFAULT partition is
-- deliberately absent: once it holds rows of a month, that month's partition
-- can no longer be created.
CREATE FUNCTION ensure_event_partitions(month date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    suffix text := to_char(first, 'YYYY_MM');
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['passages', 'space_events'] LOOP
        IF to_regclass(parent || '_' || suffix) IS NULL THEN
            -- Two persisters may race here; the lock makes the check-then-create atomic.
            PERFORM pg_advisory_xact_lock(hashtext(parent || '_' || suffix));
            IF to_regclass(parent || '_' || suffix) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    parent || '_' || suffix, parent,
                    -- month boundaries in UTC, whatever the session's TimeZone
                    to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00',
                    to_char(first + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00'
                );
            END IF;
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE m date;
BEGIN
    FOR m IN SELECT generate_series('2026-01-01'::date, '2027-12-01'::date, interval '1 month') LOOP
        PERFORM ensure_event_partitions(m);
    END LOOP;
END
$$;

-- Parking sessions: one per entry that opened the barrier (and one per exit
-- with no entry). Not partitioned: "one open session per plate city-wide" is
-- a unique index that cannot include a month.
CREATE TABLE sessions (
    id             text PRIMARY KEY,
    lot_id         text NOT NULL,
    plate          text,
    plate_raw      text,
    status         text NOT NULL CHECK (status IN ('open', 'closed', 'superseded', 'voided')),
    entry_at       timestamptz,
    exit_at        timestamptz,
    entry_device_id text,
    entry_seq      bigint,
    exit_device_id text,
    exit_seq       bigint,
    vehicle_class  smallint CHECK (vehicle_class BETWEEN 1 AND 5),
    fee_fen        bigint CHECK (fee_fen >= 0),
    tariff_id      text,
    tariff_version integer,
    pricing_reason text,
    quote          jsonb,
    superseded_by  text,
    -- anomaly kinds seen on this session (exit_without_entry, low_confidence, ...)
    flags          text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_entry_or_exit CHECK (entry_at IS NOT NULL OR exit_at IS NOT NULL),
    CONSTRAINT sessions_closed_has_fee CHECK (status <> 'closed' OR fee_fen IS NOT NULL)
);
-- Which status wins when two facts about a session disagree (they arrive in
-- any order): an operator's void beats everything, a priced close beats a
-- supersede the persister inferred, and any end beats open.
CREATE FUNCTION session_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_position(ARRAY['open', 'superseded', 'closed', 'voided'], status)
$$;

CREATE UNIQUE INDEX sessions_one_open_per_plate ON sessions (plate) WHERE status = 'open';
CREATE INDEX sessions_plate_idx ON sessions (plate, entry_at);
CREATE INDEX sessions_lot_open_idx ON sessions (lot_id) WHERE status = 'open';

-- Current state of each space; the newest seq of its sensor wins.
CREATE TABLE space_states (
    lot_id      text NOT NULL,
    space_id    text NOT NULL,
    occupied    boolean NOT NULL,
    device_id   text NOT NULL,
    seq         bigint NOT NULL,
    observed_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (lot_id, space_id)
);

-- Payloads that could not be decoded or broke the contract, kept verbatim.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    -- where it came from: "<stream>/<entry id>"; makes re-persisting a no-op
    source      text NOT NULL UNIQUE,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    device_id   text,
    seq         bigint,
    reason      text NOT NULL CHECK (reason <> ''),
    payload     bytea NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);

-- Real-world anomalies for an operator to review; never deleted, only resolved.
CREATE TABLE anomalies (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    lot_id      text,
    device_id   text,
    plate       text,
    session_id  text,
    image_ref   text,
    details     jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_at  timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text,
    CONSTRAINT anomalies_resolved_has_time CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE INDEX anomalies_open_idx ON anomalies (kind, created_at) WHERE status = 'open';
CREATE INDEX anomalies_device_open_idx ON anomalies (device_id) WHERE status = 'open';
