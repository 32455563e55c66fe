-- Pricing rules around tariffs: vehicle class overrides, exemptions, blacklist,
-- lot groups and monthly passes, and the operators' audit log.

-- A plate's vehicle class when its plate colour does not tell (a 9-seat van on
-- blue plates is 二类); set by operators or from a driver's registered vehicle.
CREATE TABLE vehicle_class_overrides (
    plate         text PRIMARY KEY,
    vehicle_class smallint NOT NULL CHECK (vehicle_class BETWEEN 1 AND 5),
    reason        text NOT NULL,
    set_by        text NOT NULL,
    set_at        timestamptz NOT NULL DEFAULT now()
);

-- Whitelisted plates park free (reason shown in the quote).
CREATE TABLE plate_exemptions (
    plate      text PRIMARY KEY,
    reason     text NOT NULL CHECK (reason <> ''),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Plate kinds that park free in this city (e.g. police, armed_police); a city
-- configures its own list.
CREATE TABLE exempt_plate_kinds (
    kind       text PRIMARY KEY,
    reason     text NOT NULL CHECK (reason <> ''),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Blacklisted plates are held at every entry lane.
CREATE TABLE plate_blacklist (
    plate      text PRIMARY KEY,
    reason     text NOT NULL CHECK (reason <> ''),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lot_groups (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lot_group_members (
    group_id text NOT NULL REFERENCES lot_groups (id),
    lot_id   text NOT NULL REFERENCES lots (id),
    PRIMARY KEY (group_id, lot_id)
);
CREATE INDEX lot_group_members_lot_idx ON lot_group_members (lot_id);

-- A monthly pass lets a plate park free in every lot of a group during
-- [valid_from, valid_until).
CREATE TABLE monthly_passes (
    id          text PRIMARY KEY,
    plate       text NOT NULL,
    group_id    text NOT NULL REFERENCES lot_groups (id),
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT monthly_passes_period_check CHECK (valid_until > valid_from)
);
CREATE INDEX monthly_passes_plate_idx ON monthly_passes (plate) WHERE revoked_at IS NULL;

-- Every change an operator or finance user makes, who made it and why.
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    role    text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_target_idx ON audit_log (target, at);
