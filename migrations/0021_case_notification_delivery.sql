-- 码上反映's notifications leave the platform (issue 15): SMS and WeChat template
-- messages. case_notifications stays the record of what was said to whom; these
-- columns say whether it reached them, through which channels, and what went wrong,
-- so the clock job (cases/notifiers.py) retries what did not, a bounded number of
-- times. No phone or openid is kept here: `sent` holds a hash per address that got
-- the message (a retry skips it), `last_error` names addresses masked.

-- Rows written before this migration were only logged: they are not sent now.
ALTER TABLE case_notifications
    ADD COLUMN delivery text NOT NULL DEFAULT 'stale'
        CHECK (delivery IN ('pending', 'delivered', 'no_address', 'failed', 'stale')),
    -- the channels it went out through (sms, wechat)
    ADD COLUMN channels text[] NOT NULL DEFAULT '{}',
    -- channel:hash of each address that got it
    ADD COLUMN sent text[] NOT NULL DEFAULT '{}',
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN last_attempt_at timestamptz,
    -- pending: not before this (a claimed row's lease, or the backoff after a failure)
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error text CHECK (length(last_error) <= 500),
    ADD COLUMN delivered_at timestamptz,
    ADD CONSTRAINT case_notifications_delivered_check
        CHECK ((delivery = 'delivered') = (delivered_at IS NOT NULL)),
    ADD CONSTRAINT case_notifications_next_attempt_check
        CHECK (delivery = 'pending' OR next_attempt_at IS NULL);
ALTER TABLE case_notifications ALTER COLUMN delivery SET DEFAULT 'pending';

-- What the delivery claims next: the pending rows, by when they are due.
CREATE INDEX case_notifications_undelivered
    ON case_notifications ((coalesce(next_attempt_at, at)), id)
    WHERE delivery = 'pending';
