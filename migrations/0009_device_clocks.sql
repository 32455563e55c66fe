-- Device clocks (contracts/mqtt.md v1.1, "Clocks"; issue 10 point 1): a wrong
-- device clock never sets a fee or frees a stay.

-- Every event keeps the time its device said (observed_at, the contract's
-- field) and the time the platform used (event_at: observed_at corrected for
-- the device's clock offset, or received_at for a v1 message observed in the
-- future); sent_at and the device's offset (median of sent_at - received_at)
-- when the device sent sent_at. Sessions hold the platform's times only (the
-- raw ones are the passages' of entry_device_id/entry_seq, exit_device_id/exit_seq).
ALTER TABLE device_events ADD COLUMN event_at timestamptz;
ALTER TABLE device_events ADD COLUMN sent_at timestamptz;
ALTER TABLE device_events ADD COLUMN clock_offset_ms bigint;
UPDATE device_events SET event_at = observed_at WHERE event_at IS NULL;

ALTER TABLE passages ADD COLUMN event_at timestamptz;
ALTER TABLE passages ADD COLUMN sent_at timestamptz;
ALTER TABLE passages ADD COLUMN clock_offset_ms bigint;
UPDATE passages SET event_at = observed_at WHERE event_at IS NULL;
ALTER TABLE passages ALTER COLUMN event_at SET NOT NULL;

ALTER TABLE space_events ADD COLUMN event_at timestamptz;
ALTER TABLE space_events ADD COLUMN sent_at timestamptz;
ALTER TABLE space_events ADD COLUMN clock_offset_ms bigint;
UPDATE space_events SET event_at = observed_at WHERE event_at IS NULL;
ALTER TABLE space_events ALTER COLUMN event_at SET NOT NULL;

-- The last clock reading of each device (device health): its offset when it
-- sends sent_at, whether its last event needed a correction.
CREATE TABLE device_clocks (
    device_id   text PRIMARY KEY,
    offset_ms   bigint,
    skewed      boolean NOT NULL,
    checked_at  timestamptz NOT NULL
);

-- One open device_clock_skew anomaly per device, until its clock is right again.
CREATE UNIQUE INDEX anomalies_one_open_clock_skew ON anomalies (device_id)
    WHERE kind = 'device_clock_skew' AND status = 'open';
-- The contactless hook asks whether a session's bill still waits for review.
CREATE INDEX anomalies_open_session_idx ON anomalies (session_id, kind)
    WHERE status = 'open' AND session_id IS NOT NULL;

-- A stay longer than review_stay_limit or priced above review_fee_ceiling_fen is
-- billed as usual but never deducted contactlessly nor shown on the lane as owed
-- until an operator confirms it (a fee_review anomaly).
ALTER TABLE lots ADD COLUMN review_stay_limit interval NOT NULL DEFAULT '7 days'
    CHECK (review_stay_limit > '0');
ALTER TABLE lots ADD COLUMN review_fee_ceiling_fen integer NOT NULL DEFAULT 20000
    CHECK (review_fee_ceiling_fen >= 0);
