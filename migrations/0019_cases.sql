-- 码上反映 and 三事分流 (issue 15): a problem seen at a car park becomes a case with a
-- level (small / middle / big), a holder (the lot's staff, the district's team, or
-- for a big case every department with its own task) and two clocks (accept,
-- resolve). Every move is an event (append-only); the triage rules are versioned.

-- The triage table and the clocks, as operators read and change them: a new row
-- per change, the highest version in force. Append-only.
CREATE TABLE case_rule_sets (
    version     integer PRIMARY KEY CHECK (version >= 1),
    rules       jsonb NOT NULL,
    created_by  text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 64),
    remark      text NOT NULL CHECK (length(remark) BETWEEN 1 AND 500),
    created_at  timestamptz NOT NULL
);

CREATE TABLE cases (
    id              text PRIMARY KEY CHECK (id ~ '^cs-[0-9A-HJKMNP-TV-Z]{26}$'),
    source          text NOT NULL CHECK (source IN ('report', 'device_silent', 'gate_failing',
                        'lot_full', 'payment_anomaly', 'dispute', 'device_clock')),
    -- what the platform watched (a device id, an anomaly id...): one open case each
    source_ref      text CHECK (length(source_ref) BETWEEN 1 AND 128),
    category        text NOT NULL CHECK (category IN ('space_blocked', 'illegal_parking',
                        'gate_fault', 'sensor_fault', 'wrong_charge', 'payment_problem',
                        'facility_damage', 'safety_hazard', 'other')),
    level           text NOT NULL CHECK (level IN ('small', 'middle', 'big')),
    state           text NOT NULL CHECK (state IN ('received', 'dispatched', 'accepted',
                        'in_progress', 'resolved', 'closed', 'reopened')),
    lot_id          text NOT NULL,
    district_code   text NOT NULL,
    lane_id         text,
    space_id        text,
    text            text NOT NULL CHECK (length(text) BETWEEN 1 AND 1000),
    -- whose work it is: role:scope (lot_staff:GZ-DEMO-01, district_team:ZG, ...)
    holder          text NOT NULL,
    rule_version    integer NOT NULL,
    -- reports merged into this case (the first included)
    reports         integer NOT NULL DEFAULT 1 CHECK (reports >= 1),
    reporter_account_id text,
    received_at     timestamptz NOT NULL,
    accept_due_at   timestamptz NOT NULL,
    resolve_due_at  timestamptz NOT NULL,
    accepted_at     timestamptz,
    resolved_at     timestamptz,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL,
    CHECK ((source = 'report') = (reporter_account_id IS NOT NULL))
);
CREATE UNIQUE INDEX cases_one_open_per_source ON cases (source, source_ref)
    WHERE source_ref IS NOT NULL AND state NOT IN ('resolved', 'closed');
CREATE INDEX cases_holder_open ON cases (holder, received_at)
    WHERE state NOT IN ('resolved', 'closed');
CREATE INDEX cases_place ON cases (lot_id, category, received_at);
CREATE INDEX cases_reporter ON cases (reporter_account_id, received_at)
    WHERE reporter_account_id IS NOT NULL;
CREATE INDEX cases_received ON cases (received_at);
-- the clock job reads the open cases whose clocks may have run out
CREATE INDEX cases_open_clocks ON cases (least(accept_due_at, resolve_due_at))
    WHERE state NOT IN ('resolved', 'closed');
CREATE INDEX cases_resolved ON cases (resolved_at) WHERE state = 'resolved';

-- Every report, merged or not (the reporter, the words, when).
CREATE TABLE case_reports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     text NOT NULL REFERENCES cases (id),
    account_id  text NOT NULL,
    text        text NOT NULL CHECK (length(text) BETWEEN 1 AND 1000),
    at          timestamptz NOT NULL
);
CREATE INDEX case_reports_case ON case_reports (case_id);
CREATE INDEX case_reports_account ON case_reports (account_id, at);

-- A big case's tasks: each department called reports in (accepts), then is done.
CREATE TABLE case_tasks (
    case_id     text NOT NULL REFERENCES cases (id),
    holder      text NOT NULL,
    state       text NOT NULL CHECK (state IN ('dispatched', 'accepted', 'done')),
    accepted_at timestamptz,
    done_at     timestamptz,
    note        text CHECK (length(note) BETWEEN 1 AND 500),
    PRIMARY KEY (case_id, holder)
);
CREATE INDEX case_tasks_holder ON case_tasks (holder) WHERE state <> 'done';

-- Photos with a report or a resolution: the files live outside the database under
-- the stack's photos/, named by the SHA-256 of their cleaned bytes (cases/photos.py).
CREATE TABLE case_photos (
    case_id     text NOT NULL REFERENCES cases (id),
    ref         text NOT NULL CHECK (ref ~ '^[0-9a-f]{2}/[0-9a-f]{64}[.](jpg|png|webp)$'),
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    bytes       integer NOT NULL CHECK (bytes > 0),
    kind        text NOT NULL CHECK (kind IN ('report', 'resolution')),
    added_by    text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (case_id, ref)
);

-- Every move with its actor, time and note. Append-only.
CREATE TABLE case_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     text NOT NULL REFERENCES cases (id),
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    level       text NOT NULL,
    holder      text NOT NULL,
    note        text
);
CREATE INDEX case_events_case ON case_events (case_id, id);

-- What the notifier port sent (the local notifier: this table and the log).
CREATE TABLE case_notifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     text NOT NULL REFERENCES cases (id),
    at          timestamptz NOT NULL,
    recipient   text NOT NULL,
    kind        text NOT NULL,
    message     text NOT NULL
);
CREATE INDEX case_notifications_case ON case_notifications (case_id);

CREATE TRIGGER case_rule_sets_append_only
    BEFORE UPDATE OR DELETE ON case_rule_sets
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER case_events_append_only
    BEFORE UPDATE OR DELETE ON case_events
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
REVOKE UPDATE, DELETE ON case_rule_sets, case_events FROM parking_app;
