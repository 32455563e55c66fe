-- Reconciliation (issue 12): the providers' daily statements, matched against
-- our payments and refunds; what differs, what waits, and the settlement.

-- One imported statement file: a provider's trade bill of one business day
-- (Asia/Shanghai). The file itself is kept as downloaded under the stack's
-- statements/ folder, named by its SHA-256. A later, different file for the
-- same day replaces it (--replace): the old import stays, marked replaced.
CREATE TABLE statement_imports (
    id            text PRIMARY KEY CHECK (id ~ '^si-[0-9A-HJKMNP-TV-Z]{26}$'),
    provider      text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$'),
    business_date date NOT NULL,
    -- the wire format: wechat-tradebill | alipay-bill-zip
    kind          text NOT NULL CHECK (kind IN ('wechat-tradebill', 'alipay-bill-zip')),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    -- where the file came from: fetched from the provider, or a file a person imported
    source        text NOT NULL CHECK (source IN ('fetched', 'imported')),
    path          text NOT NULL,
    lines         integer NOT NULL CHECK (lines >= 0),
    imported_by   text NOT NULL CHECK (length(imported_by) BETWEEN 1 AND 200),
    imported_at   timestamptz NOT NULL,
    replaced_at   timestamptz,
    replaced_by   text REFERENCES statement_imports (id)
);
CREATE UNIQUE INDEX statement_imports_current_idx
    ON statement_imports (provider, business_date) WHERE replaced_at IS NULL;

-- Every detail line of an import, verbatim beside its parsed fields (COPY).
CREATE TABLE statement_lines (
    import_id      text NOT NULL REFERENCES statement_imports (id),
    line_no        integer NOT NULL CHECK (line_no >= 1),
    kind           text NOT NULL CHECK (kind IN ('payment', 'refund')),
    -- the order (payments) or the refund request (refunds): what we match on
    match_key      text NOT NULL,
    out_trade_no   text NOT NULL,
    out_refund_no  text,
    transaction_id text NOT NULL,
    refund_id      text,
    -- the provider's state of the line: SUCCESS, REVOKED, or a refund's status
    state          text NOT NULL,
    succeeded      boolean NOT NULL,
    amount_fen     bigint NOT NULL CHECK (amount_fen >= 0),
    fee_milli_fen  bigint NOT NULL,
    trade_time     timestamptz NOT NULL,
    line           text NOT NULL,
    PRIMARY KEY (import_id, line_no)
);

-- One run of the matching over a day's current import.
CREATE TABLE reconciliation_runs (
    id             text PRIMARY KEY CHECK (id ~ '^rc-[0-9A-HJKMNP-TV-Z]{26}$'),
    provider       text NOT NULL,
    business_date  date NOT NULL,
    import_id      text NOT NULL REFERENCES statement_imports (id),
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    duration_ms    integer NOT NULL CHECK (duration_ms >= 0),
    lines          integer NOT NULL,
    matched        integer NOT NULL,
    matched_fen    bigint NOT NULL,
    fees_fen       bigint NOT NULL,
    refunds        integer NOT NULL,
    refunds_fen    bigint NOT NULL,
    discrepancies  integer NOT NULL,
    pending        integer NOT NULL,
    settled        boolean NOT NULL,
    run_by         text NOT NULL
);
CREATE INDEX reconciliation_runs_day_idx ON reconciliation_runs (provider, business_date, started_at);

-- What differs between a statement and our records. A run of a day finds the
-- same set again (dedup_key); one it no longer finds (a replaced statement)
-- is withdrawn; finance resolves the rest, each resolution audited.
CREATE TABLE discrepancies (
    id                text PRIMARY KEY CHECK (id ~ '^dc-[0-9A-HJKMNP-TV-Z]{26}$'),
    provider          text NOT NULL,
    business_date     date NOT NULL,
    kind              text NOT NULL CHECK (kind IN (
                          'missing_at_provider', 'missing_internally', 'amount_mismatch',
                          'status_mismatch', 'duplicate', 'fee_mismatch')),
    dedup_key         text NOT NULL,
    status            text NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'resolved', 'withdrawn')),
    out_trade_no      text,
    out_refund_no     text,
    transaction_id    text,
    refund_id         text,
    attempt_id        text,
    refund_request_id text,
    ours_fen          bigint,
    provider_fen      bigint,
    line_no           integer,
    line              text,
    detail            text NOT NULL DEFAULT '',
    found_at          timestamptz NOT NULL,
    last_run_id       text NOT NULL REFERENCES reconciliation_runs (id),
    resolution        text CHECK (resolution IN (
                          'apply_payment', 'accept_provider', 'accept_ours', 'write_off')),
    remark            text CHECK (length(remark) BETWEEN 1 AND 2000),
    resolved_by       text,
    resolved_at       timestamptz,
    CONSTRAINT discrepancies_dedup_key UNIQUE (provider, dedup_key),
    CONSTRAINT discrepancies_resolved_check CHECK (
        (status = 'resolved') = (resolved_at IS NOT NULL)
        AND (resolved_at IS NULL) = (resolution IS NULL)
        AND (resolved_at IS NULL) = (resolved_by IS NULL)
    )
);
CREATE INDEX discrepancies_day_idx ON discrepancies (provider, business_date, kind);
CREATE INDEX discrepancies_open_idx ON discrepancies (status, found_at) WHERE status = 'open';

-- The holding pool: a payment or refund of ours not (yet) on its day's
-- statement waits three business days (a payment at 23:59:59 may be on the
-- next day's); seen on a later statement it clears, else it becomes a
-- missing_at_provider discrepancy.
CREATE TABLE reconciliation_pool (
    provider       text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('payment', 'refund')),
    match_key      text NOT NULL,
    business_date  date NOT NULL,
    ours_fen       bigint NOT NULL,
    status         text NOT NULL CHECK (status IN ('waiting', 'cleared', 'missing')),
    cleared_on     date,
    PRIMARY KEY (provider, kind, match_key),
    CONSTRAINT reconciliation_pool_cleared_check CHECK ((status = 'cleared') = (cleared_on IS NOT NULL))
);
CREATE INDEX reconciliation_pool_waiting_idx ON reconciliation_pool (provider, business_date)
    WHERE status = 'waiting';

-- Helps the daily selection of our side (successes of a provider's day).
CREATE INDEX payment_attempts_settled_idx ON payment_attempts (provider, settled_at)
    WHERE status = 'paid';
CREATE INDEX refund_requests_refunded_idx ON refund_requests (provider, refunded_at)
    WHERE status = 'refunded';

-- Append-only: an import and its lines are history.
REVOKE UPDATE, DELETE ON statement_lines FROM parking_app;
