-- The payment flow (parking.payments): attempts and the bills they cover,
-- request idempotency keys, the provider notification inbox, anomalies,
-- contactless (无感支付) mandates and deductions, refund requests and disputes.
--
-- Money moves in the ledger (0003), never here: these tables say what was
-- asked of a provider, what it answered and what a person decided. Every
-- status change of a bill still goes through parking.bills (bill_events and
-- a ledger transaction in the same database transaction).

-- Stripe-style idempotency keys of the HTTP API (POST /v1/bills/pay).
-- scope is the caller (the principal's subject), so two drivers may use the
-- same key. The first request with a key stores its response (success or a
-- 4xx problem) and every retry with the same body gets it back; a retry with
-- another body is refused (422) and one arriving while the first is still in
-- flight gets 409. A request that failed with a 5xx (provider or database
-- down) deletes its key, so the retry runs again: the payment use case is
-- itself idempotent on (scope, key), see payment_attempts. locked_at is a
-- lease: a key left in flight by a crashed process can be taken over after it.
-- Keys may be pruned after 24 hours (by created_at), as Stripe does.
CREATE TABLE idempotency_keys (
    scope           text NOT NULL CHECK (length(scope) BETWEEN 1 AND 200),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    endpoint        text NOT NULL CHECK (length(endpoint) BETWEEN 1 AND 200),
    -- sha256 (hex) of the endpoint and the canonical request body
    request_hash    text NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
    state           text NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status integer CHECK (response_status BETWEEN 200 AND 499),
    response_body   bytea,
    created_at      timestamptz NOT NULL,
    locked_at       timestamptz NOT NULL,
    completed_at    timestamptz,
    PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_response_check CHECK (
        (state = 'done') = (response_status IS NOT NULL)
        AND (response_status IS NULL) = (response_body IS NULL)
        AND (response_status IS NULL) = (completed_at IS NULL)
    )
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- One provider order: a QR-code order the driver pays (native), or a
-- contactless deduction (contactless). out_trade_no is our order number at
-- the provider, fixed when the row is created and never reused, so a call
-- that timed out is retried with the same number and the provider (which
-- de-duplicates on it) keeps one order. The row is committed before the
-- provider is called; code_url/ordered_at record its answer afterwards.
--
-- status: pending until the provider's outcome is known; paid (the money was
-- taken: transaction_id is the provider's payment id); failed (a deduction
-- failed, the provider refused the order, or the notification's amount was
-- wrong: see failure); expired (never paid before expires_at, closed at the
-- provider by the sweeper); closed (the provider closed it). A failed or
-- expired attempt can still become paid: money the provider took is applied
-- (or refunded) whatever we thought of the order.
--
-- (idempotency_scope, idempotency_key) is the pay request that made it: a
-- retry of that request finds this attempt instead of making another order.
-- recheck marks a failed contactless attempt whose deduction request timed
-- out: the sweeper asks the provider once more whether it was taken.
CREATE TABLE payment_attempts (
    id                text PRIMARY KEY CHECK (id ~ '^pa-[0-9A-HJKMNP-TV-Z]{26}$'),
    provider          text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$'),
    kind              text NOT NULL CHECK (kind IN ('native', 'contactless')),
    -- WeChat: 6-32 of [0-9A-Za-z_-|*]; Alipay: up to 64. The stricter rule.
    out_trade_no      text NOT NULL CHECK (out_trade_no ~ '^[0-9A-Za-z_-]{6,32}$'),
    amount_fen        bigint NOT NULL CHECK (amount_fen > 0),
    status            text NOT NULL DEFAULT 'pending' CHECK (
                          status IN ('pending', 'paid', 'failed', 'expired', 'closed')
                      ),
    payer_account_id  text CHECK (length(payer_account_id) BETWEEN 1 AND 64),
    payer_plate       text CHECK (length(payer_plate) BETWEEN 1 AND 16),
    idempotency_scope text,
    idempotency_key   text,
    code_url          text,
    ordered_at        timestamptz,
    transaction_id    text CHECK (length(transaction_id) BETWEEN 1 AND 64),
    provider_state    text NOT NULL DEFAULT '',
    failure           text NOT NULL DEFAULT '' CHECK (length(failure) <= 500),
    recheck           boolean NOT NULL DEFAULT false,
    -- last time a sweeper looked at it: several sweepers never query one order at once
    swept_at          timestamptz,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    -- when it left pending (paid, failed, expired or closed)
    settled_at        timestamptz,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT payment_attempts_out_trade_no_unique UNIQUE (out_trade_no),
    CONSTRAINT payment_attempts_idempotency_unique UNIQUE (idempotency_scope, idempotency_key),
    CONSTRAINT payment_attempts_idempotency_check CHECK (
        (idempotency_scope IS NULL) = (idempotency_key IS NULL)
    ),
    CONSTRAINT payment_attempts_payer_check CHECK (
        payer_account_id IS NOT NULL OR payer_plate IS NOT NULL
    ),
    CONSTRAINT payment_attempts_settled_check CHECK ((status = 'pending') = (settled_at IS NULL)),
    CONSTRAINT payment_attempts_paid_check CHECK (status <> 'paid' OR transaction_id IS NOT NULL),
    CONSTRAINT payment_attempts_expiry_check CHECK (expires_at > created_at)
);
-- The sweeper's work list.
CREATE INDEX payment_attempts_sweep_idx ON payment_attempts (created_at)
    WHERE status = 'pending' OR recheck;

-- The bills one attempt pays, each with its share (the bill's amount).
CREATE TABLE payment_bills (
    attempt_id text NOT NULL REFERENCES payment_attempts (id),
    bill_id    text NOT NULL REFERENCES bills (id),
    amount_fen bigint NOT NULL CHECK (amount_fen > 0),
    PRIMARY KEY (attempt_id, bill_id)
);
CREATE INDEX payment_bills_bill_idx ON payment_bills (bill_id);

-- Checked at commit: an attempt's amount is exactly the sum of its bills'
-- shares, so the provider is never asked for more or less than the bills.
CREATE FUNCTION payment_attempt_check_shares() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    a_id   text;
    amount bigint;
    shares bigint;
BEGIN
    IF TG_TABLE_NAME = 'payment_attempts' THEN
        a_id := NEW.id;
    ELSE
        a_id := NEW.attempt_id;
    END IF;
    SELECT a.amount_fen INTO amount FROM payment_attempts a WHERE a.id = a_id;
    SELECT coalesce(sum(b.amount_fen), 0) INTO shares FROM payment_bills b WHERE b.attempt_id = a_id;
    IF shares <> amount THEN
        RAISE EXCEPTION 'payment attempt % is % fen but its bills add up to % fen',
            a_id, amount, shares
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_attempt_shares';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER payment_attempts_shares
    AFTER INSERT ON payment_attempts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payment_attempt_check_shares();

CREATE CONSTRAINT TRIGGER payment_bills_shares
    AFTER INSERT ON payment_bills
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION payment_attempt_check_shares();

CREATE TRIGGER payment_bills_append_only
    BEFORE UPDATE OR DELETE ON payment_bills
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();

-- The inbox: every authentic notification once, keyed by the provider's
-- notification id (stable across re-sends). The row is inserted and the
-- event applied in one transaction, so a row exists exactly when its event
-- was applied: a re-send (or one of ten concurrent copies) finds it and is
-- answered success without being applied again. Notifications that fail
-- verification are never stored here (they are not the provider's words).
CREATE TABLE payment_notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text NOT NULL,
    notification_id text NOT NULL CHECK (length(notification_id) BETWEEN 1 AND 128),
    -- the event's tag (payment_succeeded, refund_succeeded, ...)
    kind            text NOT NULL,
    out_trade_no    text NOT NULL,
    -- the decoded event, with the verified plaintext payload
    event           jsonb NOT NULL,
    received_at     timestamptz NOT NULL,
    processed_at    timestamptz,
    outcome         text CHECK (length(outcome) <= 200),
    CONSTRAINT payment_notifications_unique UNIQUE (provider, notification_id),
    CONSTRAINT payment_notifications_processed_check CHECK (
        (processed_at IS NULL) = (outcome IS NULL)
    )
);
CREATE INDEX payment_notifications_order_idx ON payment_notifications (provider, out_trade_no);

-- What the provider said that we could not simply apply. Each is recorded
-- once per (kind, dedup_key) however often the provider repeats it.
--   amount_mismatch        a payment of another amount than the order: never applied;
--                          the attempt fails, its bills are owed again
--   unknown_order          a payment for an out_trade_no we never made
--   refund_before_payment  a refund notice for an order whose payment we have not
--                          recorded yet: no bill moves; reconciliation settles it
--   unknown_refund         a refund we never requested (e.g. from the merchant console)
--   paid_after_close       money taken for an attempt we had expired/closed/failed;
--                          applied to its bills while they are owed (resolved at once)
--   duplicate_payment      money taken for bills another payment already paid: the
--                          duplicate part is refunded automatically (action
--                          auto_refund, resolved when the refund succeeds)
--   refund_failed          the provider closed or could not pay out a refund
--   malformed_notification an authentic-looking notification we cannot decode
CREATE TABLE payment_anomalies (
    id              text PRIMARY KEY CHECK (id ~ '^pan-[0-9A-HJKMNP-TV-Z]{26}$'),
    kind            text NOT NULL CHECK (kind IN (
                        'amount_mismatch', 'unknown_order', 'refund_before_payment',
                        'unknown_refund', 'paid_after_close', 'duplicate_payment',
                        'refund_failed', 'malformed_notification'
                    )),
    dedup_key       text NOT NULL CHECK (length(dedup_key) BETWEEN 1 AND 200),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    provider        text NOT NULL,
    out_trade_no    text,
    out_refund_no   text,
    notification_id text,
    attempt_id      text REFERENCES payment_attempts (id),
    bill_id         text REFERENCES bills (id),
    -- what the provider reported, and what we expected
    amount_fen      bigint,
    expected_fen    bigint,
    action          text NOT NULL DEFAULT 'none' CHECK (action IN ('none', 'applied', 'auto_refund')),
    detail          text NOT NULL DEFAULT '' CHECK (length(detail) <= 2000),
    created_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    resolved_by     text,
    remark          text NOT NULL DEFAULT '' CHECK (length(remark) <= 2000),
    CONSTRAINT payment_anomalies_unique UNIQUE (kind, dedup_key),
    CONSTRAINT payment_anomalies_resolution_check CHECK (
        (status = 'resolved') = (resolved_at IS NOT NULL)
        AND (resolved_at IS NULL) = (resolved_by IS NULL)
    )
);
CREATE INDEX payment_anomalies_open_idx ON payment_anomalies (created_at) WHERE status = 'open';
CREATE INDEX payment_anomalies_order_idx ON payment_anomalies (provider, out_trade_no);

-- A driver's standing authorisation (无感支付) for one plate at one provider.
-- The authorisation itself is given at the provider (WeChat's 支付分停车服务
-- mini program); this row says the platform may deduct for the plate.
-- revoked rows are history; one live mandate per provider and plate.
CREATE TABLE contactless_mandates (
    id          text PRIMARY KEY CHECK (id ~ '^cm-[0-9A-HJKMNP-TV-Z]{26}$'),
    provider    text NOT NULL,
    plate       text NOT NULL CHECK (length(plate) BETWEEN 1 AND 16),
    plate_color text NOT NULL DEFAULT 'BLUE' CHECK (length(plate_color) BETWEEN 1 AND 16),
    account_id  text CHECK (length(account_id) BETWEEN 1 AND 64),
    -- the payer at the provider (WeChat openid)
    payer_id    text NOT NULL CHECK (length(payer_id) BETWEEN 1 AND 128),
    state       text NOT NULL CHECK (state IN ('active', 'paused', 'revoked')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX contactless_mandates_live_idx ON contactless_mandates (provider, plate)
    WHERE state <> 'revoked';
CREATE INDEX contactless_mandates_account_idx ON contactless_mandates (account_id)
    WHERE account_id IS NOT NULL;

-- One contactless deduction per bill: requested (attempt committed, provider
-- not answered yet), accepted (the result comes later), refused (no
-- authorisation, blocked plate), unavailable (the provider did not answer),
-- succeeded or failed. refused, unavailable and failed leave an ordinary open
-- bill: leave first, pay later still holds.
CREATE TABLE contactless_deductions (
    id              text PRIMARY KEY CHECK (id ~ '^cd-[0-9A-HJKMNP-TV-Z]{26}$'),
    bill_id         text NOT NULL REFERENCES bills (id),
    mandate_id      text NOT NULL REFERENCES contactless_mandates (id),
    attempt_id      text NOT NULL REFERENCES payment_attempts (id),
    out_parking_no  text NOT NULL CHECK (out_parking_no ~ '^[0-9A-Za-z_-]{6,32}$'),
    parking_id      text,
    status          text NOT NULL CHECK (status IN (
                        'requested', 'accepted', 'refused', 'unavailable', 'succeeded', 'failed'
                    )),
    refusal_code    text,
    refusal_message text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT contactless_deductions_bill_unique UNIQUE (bill_id),
    CONSTRAINT contactless_deductions_parking_unique UNIQUE (out_parking_no),
    CONSTRAINT contactless_deductions_attempt_unique UNIQUE (attempt_id)
);

-- A refund asked of a provider: of one bill (a dispute upheld) or of the
-- duplicate part of a payment (anomaly_id, no bill). out_refund_no is fixed
-- when the row is created, so a timed-out request is retried with it and the
-- provider refunds once. Completed (refunded) by the provider's answer or
-- its REFUND.SUCCESS notification, whichever comes first; only then does
-- the bill move (parking.bills.service.refund posts the ledger's refund).
CREATE TABLE refund_requests (
    id                 text PRIMARY KEY CHECK (id ~ '^rr-[0-9A-HJKMNP-TV-Z]{26}$'),
    bill_id            text REFERENCES bills (id),
    attempt_id         text NOT NULL REFERENCES payment_attempts (id),
    provider           text NOT NULL,
    out_trade_no       text NOT NULL,
    out_refund_no      text NOT NULL CHECK (out_refund_no ~ '^[0-9A-Za-z_-]{6,32}$'),
    amount_fen         bigint NOT NULL CHECK (amount_fen > 0),
    status             text NOT NULL CHECK (
                           status IN ('requested', 'approved', 'rejected', 'refunded', 'failed')
                       ),
    reason             text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    requested_by       text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    decided_by         text CHECK (length(decided_by) BETWEEN 1 AND 200),
    remark             text NOT NULL DEFAULT '' CHECK (length(remark) <= 2000),
    dispute_id         text,
    anomaly_id         text REFERENCES payment_anomalies (id),
    provider_refund_id text,
    -- when the provider first acknowledged the request
    submitted_at       timestamptz,
    last_error         text NOT NULL DEFAULT '' CHECK (length(last_error) <= 500),
    created_at         timestamptz NOT NULL,
    decided_at         timestamptz,
    refunded_at        timestamptz,
    updated_at         timestamptz NOT NULL,
    CONSTRAINT refund_requests_out_refund_no_unique UNIQUE (out_refund_no),
    CONSTRAINT refund_requests_subject_check CHECK (bill_id IS NOT NULL OR anomaly_id IS NOT NULL),
    CONSTRAINT refund_requests_refunded_check CHECK ((status = 'refunded') = (refunded_at IS NOT NULL))
);
CREATE INDEX refund_requests_bill_idx ON refund_requests (bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX refund_requests_pending_idx ON refund_requests (created_at) WHERE status = 'approved';

-- A driver contests a bill; finance approves (refund, or write-off of an
-- unpaid bill) or rejects it, with a remark. Every step is also an
-- audit_log row (0002) naming the operator and the remark.
CREATE TABLE disputes (
    id         text PRIMARY KEY CHECK (id ~ '^dp-[0-9A-HJKMNP-TV-Z]{26}$'),
    bill_id    text NOT NULL REFERENCES bills (id),
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    opened_by  text NOT NULL CHECK (length(opened_by) BETWEEN 1 AND 200),
    opened_at  timestamptz NOT NULL,
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'approved', 'rejected')),
    decided_by text CHECK (length(decided_by) BETWEEN 1 AND 200),
    decided_at timestamptz,
    remark     text NOT NULL DEFAULT '' CHECK (length(remark) <= 2000),
    -- the refund granted (NULL: rejected, or an unpaid bill written off)
    refund_fen bigint CHECK (refund_fen > 0),
    CONSTRAINT disputes_decision_check CHECK (
        (status = 'open') = (decided_at IS NULL) AND (decided_at IS NULL) = (decided_by IS NULL)
    )
);
CREATE UNIQUE INDEX disputes_one_open_per_bill_idx ON disputes (bill_id) WHERE status = 'open';
CREATE INDEX disputes_open_idx ON disputes (opened_at) WHERE status = 'open';

ALTER TABLE refund_requests
    ADD CONSTRAINT refund_requests_dispute_fk FOREIGN KEY (dispute_id) REFERENCES disputes (id);
