-- Real cameras (issue 18): the ANPR gate cameras Chinese car parks already have
-- push their recognitions over HTTP in their maker's format (gateways/cameras).
-- A camera is a gate in the device registry with its vendor and serial number;
-- it has no seq of its own, so the adapter assigns one per device here, durably,
-- and remembers each vendor record it turned into an event, so a vendor's retry
-- (same record id and time) is the same (device_id, seq) and applied once.

ALTER TABLE devices
    ADD COLUMN vendor text,
    ADD COLUMN serial text,
    -- Hikvision: the camera's ISAPI base URL, where the platform opens the barrier
    -- (the push's reply opens nothing there); its credentials are a secret file's
    ADD COLUMN control_url text,
    ADD CONSTRAINT devices_vendor_check CHECK (vendor IN ('vzenith', 'hikvision')),
    -- a serial as the camera prints it: visible ASCII and inner spaces
    -- (Hikvision's deviceUUID is "<model> <serial>")
    ADD CONSTRAINT devices_serial_check CHECK (serial ~ '^[!-~]([ -~]{0,126}[!-~])?$'),
    -- (PostgreSQL's regular expressions count at most 255 repetitions: the length apart)
    ADD CONSTRAINT devices_control_url_check
        CHECK (control_url ~ '^https?://\S+$' AND length(control_url) <= 500),
    ADD CONSTRAINT devices_camera_check CHECK (
        (vendor IS NULL) = (serial IS NULL)
        AND (vendor IS NULL OR kind = 'gate')
        AND (control_url IS NULL OR vendor = 'hikvision')
    );

-- One live device per camera: a serial registered twice would let one camera's
-- pushes land on two lanes.
CREATE UNIQUE INDEX devices_one_live_camera ON devices (vendor, serial)
    WHERE revoked_at IS NULL AND vendor IS NOT NULL;

-- The last seq given to each camera's events (never reused: a revoked camera's
-- device id is never given again).
CREATE TABLE camera_seqs (
    device_id text PRIMARY KEY REFERENCES devices (device_id),
    last_seq  bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

-- Every vendor record that became an event: the key the vendor's retries repeat
-- (Vzenith: plateid and the camera's time; Hikvision: the event's UUID), the seq
-- it got, the contract passage it became (applied again after a crash until the
-- device's watermark covers it) and the vendor's record without its pictures.
CREATE TABLE camera_pushes (
    device_id     text NOT NULL REFERENCES devices (device_id),
    push_key      text NOT NULL CHECK (push_key ~ '^[!-~]{1,200}$'),
    seq           bigint NOT NULL CHECK (seq >= 1),
    received_at   timestamptz NOT NULL,
    passage       bytea NOT NULL CHECK (length(passage) <= 8192),
    vendor_record bytea NOT NULL,
    images        text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, push_key),
    CONSTRAINT camera_pushes_seq_key UNIQUE (device_id, seq)
);
-- The crash sweep reads the recent ones; retention drops the old ones.
CREATE INDEX camera_pushes_received ON camera_pushes (received_at);

-- Per lot, the networks its cameras may push from; a lot without rows accepts
-- any address (the per-device secret is the identity).
CREATE TABLE lot_camera_sources (
    lot_id  text NOT NULL REFERENCES lots (id),
    network cidr NOT NULL,
    PRIMARY KEY (lot_id, network)
);
