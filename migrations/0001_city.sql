-- The city: districts, lots, lanes, spaces, devices, tariffs and their versions.

CREATE TABLE districts (
    code      text PRIMARY KEY CHECK (code ~ '^[A-Z]{2,4}$'),
    name      text NOT NULL UNIQUE,
    kind      text NOT NULL CHECK (kind IN ('district', 'zone', 'county', 'city')),
    latitude  numeric(9, 6) NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude numeric(9, 6) NOT NULL CHECK (longitude BETWEEN -180 AND 180)
);

CREATE TABLE lots (
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name                text NOT NULL,
    district_code       text NOT NULL REFERENCES districts (code),
    kind                text NOT NULL CHECK (kind IN ('gated', 'on_street')),
    capacity            integer NOT NULL CHECK (capacity > 0),
    latitude            numeric(9, 6) NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude           numeric(9, 6) NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    -- What the entry lane does when the lot is full: hold the car, or open
    -- anyway (some operators let cars in to queue for spaces).
    full_policy         text NOT NULL DEFAULT 'hold' CHECK (full_policy IN ('hold', 'open')),
    -- Arrears older than this hold a car at this lot's entry lanes.
    arrears_hold_after  interval NOT NULL DEFAULT '7 days' CHECK (arrears_hold_after >= '0'),
    -- After paying in the lot, the driver leaves free within this window.
    exit_window_minutes integer NOT NULL DEFAULT 15 CHECK (exit_window_minutes >= 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lots_district_idx ON lots (district_code);

CREATE TABLE lanes (
    lot_id    text NOT NULL REFERENCES lots (id),
    lane_id   text NOT NULL CHECK (lane_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    PRIMARY KEY (lot_id, lane_id)
);

CREATE TABLE spaces (
    lot_id   text NOT NULL REFERENCES lots (id),
    space_id text NOT NULL CHECK (space_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    kind     text NOT NULL DEFAULT 'standard'
             CHECK (kind IN ('standard', 'accessible', 'charging', 'large')),
    PRIMARY KEY (lot_id, space_id)
);

CREATE TABLE devices (
    device_id     text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    lot_id        text NOT NULL REFERENCES lots (id),
    lane_id       text,
    space_id      text,
    kind          text NOT NULL CHECK (kind IN ('gate', 'sensor', 'sign')),
    -- Mosquitto's PBKDF2-SHA512 format; the plain secret is shown once, never stored.
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    FOREIGN KEY (lot_id, lane_id) REFERENCES lanes (lot_id, lane_id),
    FOREIGN KEY (lot_id, space_id) REFERENCES spaces (lot_id, space_id),
    CONSTRAINT devices_placement_check CHECK (
        (kind = 'gate' AND lane_id IS NOT NULL AND space_id IS NULL)
        OR (kind = 'sensor' AND space_id IS NOT NULL AND lane_id IS NULL)
        OR (kind = 'sign' AND space_id IS NULL)
    )
);
CREATE INDEX devices_lot_idx ON devices (lot_id);
-- One live gate per lane and one live sensor per space.
CREATE UNIQUE INDEX devices_one_gate_per_lane
    ON devices (lot_id, lane_id) WHERE kind = 'gate' AND revoked_at IS NULL;
CREATE UNIQUE INDEX devices_one_sensor_per_space
    ON devices (lot_id, space_id) WHERE kind = 'sensor' AND revoked_at IS NULL;

CREATE TABLE tariffs (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A tariff document (contracts/tariffs.md) in force from effective_from; a
-- session is priced by the version in force at its entry, so versions are
-- never edited: a change is a new version.
CREATE TABLE tariff_versions (
    tariff_id      text NOT NULL REFERENCES tariffs (id),
    version        integer NOT NULL CHECK (version >= 1),
    effective_from timestamptz NOT NULL,
    document       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    PRIMARY KEY (tariff_id, version),
    CONSTRAINT tariff_versions_effective_unique UNIQUE (tariff_id, effective_from)
);

-- Which tariff prices each vehicle class (Ganzhou's 一类..五类) at a lot.
CREATE TABLE lot_tariffs (
    lot_id        text NOT NULL REFERENCES lots (id),
    vehicle_class smallint NOT NULL CHECK (vehicle_class BETWEEN 1 AND 5),
    tariff_id     text NOT NULL REFERENCES tariffs (id),
    PRIMARY KEY (lot_id, vehicle_class)
);
CREATE INDEX lot_tariffs_tariff_idx ON lot_tariffs (tariff_id);
