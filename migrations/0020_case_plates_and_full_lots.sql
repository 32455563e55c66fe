-- 码上反映, continued (issue 15): an illegal-parking report may name the plate, and
-- what staff found is recorded per plate (轻微首违不罚: the first minor violation in
-- 12 months is a reminder to the plate's holder, not a penalty); the clock job
-- remembers since when each lot has been full (a lot full for over an hour opens a
-- case).

-- the plate a report names (normalised, parking.plates.parse_plate(...).text)
ALTER TABLE case_reports ADD COLUMN plate text CHECK (length(plate) BETWEEN 2 AND 16);
-- the plate the case is about (its first report's)
ALTER TABLE cases ADD COLUMN plate text CHECK (length(plate) BETWEEN 2 AND 16);
CREATE INDEX case_reports_plate ON case_reports (plate, at) WHERE plate IS NOT NULL;

-- What staff found when they resolved a case about a plate, and what followed:
-- a reminder (the first minor violation within 12 months), a referral for a
-- penalty (a repeat, or a serious one), or nothing (not found). Append-only.
CREATE TABLE plate_violations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plate       text NOT NULL CHECK (length(plate) BETWEEN 2 AND 16),
    case_id     text NOT NULL UNIQUE REFERENCES cases (id),
    lot_id      text NOT NULL,
    at          timestamptz NOT NULL,
    found       text NOT NULL CHECK (found IN ('minor', 'serious', 'not_found')),
    outcome     text NOT NULL CHECK (outcome IN ('reminder', 'referred', 'none')),
    -- the earlier violation that made this one a repeat
    repeat_of   bigint REFERENCES plate_violations (id),
    -- the account holding the plate when the reminder went out (none: nobody bound it)
    holder_account_id text,
    by_actor    text NOT NULL,
    CHECK ((found = 'not_found') = (outcome = 'none')),
    CHECK (outcome <> 'referred' OR found = 'serious' OR repeat_of IS NOT NULL)
);
CREATE INDEX plate_violations_plate ON plate_violations (plate, at);
CREATE TRIGGER plate_violations_append_only
    BEFORE UPDATE OR DELETE ON plate_violations
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
REVOKE UPDATE, DELETE ON plate_violations FROM parking_app;

-- Since when the clock job has seen each lot full (a row while it stays full).
CREATE TABLE case_full_lots (
    lot_id      text PRIMARY KEY,
    full_since  timestamptz NOT NULL
);
