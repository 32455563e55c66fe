-- Issue 21: the retention job also moves months of passages and sensor readings older
-- than the database keeps (`hot_months`) into archive files, and records each run as
-- kind 'archive'.
ALTER TABLE retention_runs DROP CONSTRAINT retention_runs_kind_check;
ALTER TABLE retention_runs ADD CONSTRAINT retention_runs_kind_check
    CHECK (kind IN ('passages', 'sensor_readings', 'dead_letters', 'plates', 'archive'));
