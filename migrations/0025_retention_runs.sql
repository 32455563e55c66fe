-- Retention (issue 19): what the retention job removed or pseudonymised, each run, per
-- kind of data, so the city can show that personal data lives no longer than it must.
-- Append-only.
CREATE TABLE retention_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('passages', 'sensor_readings', 'dead_letters',
                    'plates')),
    -- the moment before which the kind's data was due
    cutoff      timestamptz NOT NULL,
    removed     bigint NOT NULL CHECK (removed >= 0),
    -- what exactly (partitions dropped, rows pseudonymised per table)
    detail      jsonb NOT NULL
);
CREATE TRIGGER retention_runs_append_only
    BEFORE UPDATE OR DELETE ON retention_runs
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
REVOKE UPDATE, DELETE ON retention_runs FROM parking_app;
