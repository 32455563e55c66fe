-- Tariffs v2 (issue 16): calendars of day types as data. The State Council's yearly
-- notice of public holidays and adjusted working days (调休), one edition per row:
-- a corrected notice is a new version, never an edit. Quotes name the version used.
-- For a date, the newest edition whose years include it decides. Append-only.
CREATE TABLE calendars (
    version     text PRIMARY KEY CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    years       integer[] NOT NULL CHECK (cardinality(years) >= 1),
    -- the calendar as `parking.tariffs.calendar.Calendar` encodes it
    document    jsonb NOT NULL,
    created_by  text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL,
    -- the import's order (the newest edition of a year wins)
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE TRIGGER calendars_append_only
    BEFORE UPDATE OR DELETE ON calendars
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
REVOKE UPDATE, DELETE ON calendars FROM parking_app;
