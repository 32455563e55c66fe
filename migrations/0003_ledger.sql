-- The ledger (append-only double entry) and bills.
--
-- Sign convention: ledger_postings.amount_fen is positive for a debit and
-- negative for a credit, so every transaction's postings sum to zero per
-- currency, and an account's balance is the plain sum of its postings
-- (asset and expense accounts are normally positive, revenue, liability and
-- equity accounts normally negative).
--
-- Chart of accounts. Accounts are created on first use by
-- parking.ledger.service, with the kind that parking.ledger.logic.account_kind
-- gives the code's prefix:
--   receivables              asset      bills issued and not yet paid (the city's arrears)
--   clearing:{provider}      asset      money a provider (wechatpay, alipay, sandbox) collected
--                                       for us and has not yet settled to the bank
--   bank                     asset      money settled to the operator's bank account
--   revenue:{lot}            revenue    parking fees earned at a lot
--   refunds:{lot}            revenue    contra-revenue: fees given back at a lot (debit balance)
--   provider_fees:{provider} expense    fees a provider deducts at settlement
--   write_offs               expense    bills forgiven or found uncollectable
--   refunds_payable          liability  refunds promised and not yet paid out (reserved)
--   equity                   equity     opening balances (reserved)

CREATE TABLE ledger_accounts (
    code       text PRIMARY KEY CHECK (code ~ '^[a-z][a-z_]{0,31}(:[A-Za-z0-9_-]{1,64})?$'),
    kind       text NOT NULL CHECK (kind IN ('asset', 'liability', 'revenue', 'expense', 'equity')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per business event. (kind, idempotency_key) is unique, so the same
-- event (a bill opened, a bill paid, a refund by its provider reference) can
-- never post twice however often it is retried; correlation_id groups every
-- transaction of one business object (a bill id) for audit and invariants.
-- A new kind is a new migration: the kind names the event that moved money.
CREATE TABLE ledger_transactions (
    id              text PRIMARY KEY CHECK (id ~ '^lt-[0-9A-HJKMNP-TV-Z]{26}$'),
    -- The order of posting: ids sort by occurred_at, and two transactions of
    -- one use case (a write-off reversed, then the payment) share that instant.
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind            text NOT NULL CHECK (
                        kind IN ('bill_opened', 'bill_paid', 'refund', 'write_off',
                                 'reversal', 'settlement')
                    ),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    correlation_id  text NOT NULL CHECK (length(correlation_id) BETWEEN 1 AND 200),
    reverses        text REFERENCES ledger_transactions (id),
    occurred_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    memo            text NOT NULL DEFAULT '' CHECK (length(memo) <= 2000),
    CONSTRAINT ledger_transactions_event_unique UNIQUE (kind, idempotency_key),
    -- A reversal names what it reverses and is keyed by it, so the unique
    -- constraint above also means a transaction is reversed at most once.
    CONSTRAINT ledger_transactions_reversal_check CHECK (
        (kind = 'reversal') = (reverses IS NOT NULL)
        AND (reverses IS NULL OR idempotency_key = reverses)
    )
);
CREATE INDEX ledger_transactions_correlation_idx ON ledger_transactions (correlation_id);

CREATE TABLE ledger_postings (
    transaction_id text NOT NULL REFERENCES ledger_transactions (id),
    line           smallint NOT NULL CHECK (line >= 1),
    account_code   text NOT NULL REFERENCES ledger_accounts (code),
    -- positive = debit, negative = credit (see the top of this file)
    amount_fen     bigint NOT NULL CHECK (amount_fen <> 0),
    currency       char(3) NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    PRIMARY KEY (transaction_id, line)
);
CREATE INDEX ledger_postings_account_idx ON ledger_postings (account_code, currency);

-- Checked at commit, when all of a transaction's postings are in: a
-- transaction has at least two postings and they sum to zero per currency.
-- Fired both by a new transaction (which catches one with no postings) and
-- by a new posting (which catches a posting added later to an old one).
CREATE FUNCTION ledger_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tx_id      text;
    n_postings integer;
    bad        record;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        tx_id := NEW.id;
    ELSE
        tx_id := NEW.transaction_id;
    END IF;
    SELECT count(*) INTO n_postings FROM ledger_postings WHERE transaction_id = tx_id;
    IF n_postings < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % posting(s); double entry needs at least two',
            tx_id, n_postings
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    SELECT currency, sum(amount_fen) AS total INTO bad
      FROM ledger_postings WHERE transaction_id = tx_id
     GROUP BY currency HAVING sum(amount_fen) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % postings sum to % fen',
            tx_id, bad.currency, bad.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER ledger_transactions_balanced
    AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE CONSTRAINT TRIGGER ledger_postings_balanced
    AFTER INSERT ON ledger_postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- Append-only (reliability matrix P9): a mistake is corrected by a reversing
-- transaction, never by editing history. These triggers stop the application
-- and a careless console; a table owner can still drop them, so production
-- runs the platform as a role that does not own these tables.
CREATE FUNCTION append_only_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'correct the ledger with a reversing transaction';
END;
$$;

CREATE TRIGGER ledger_accounts_append_only
    BEFORE UPDATE OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER ledger_accounts_no_truncate
    BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER ledger_transactions_no_truncate
    BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER ledger_postings_append_only
    BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER ledger_postings_no_truncate
    BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse();

-- One bill per parking session that cost money. A free stay creates no bill:
-- a 0-fen receivable has no ledger entry (postings are non-zero), would sit in
-- a driver's open bills for ever, and the session already records the free
-- quote. Hence amount_fen > 0.
--
-- status: open -> paying -> paid -> refunded, with disputes and write-offs;
-- parking.bills.logic holds the transition table. 'refunded' covers partial
-- and full refunds (refunded_fen tells them apart). A bill is owed (a
-- receivable in the ledger) while status is open, paying or disputed and
-- paid_at is NULL.
--
-- session_id has no foreign key yet: the sessions table lands in its own
-- migration, which should add it.
CREATE TABLE bills (
    id             text PRIMARY KEY CHECK (id ~ '^b-[0-9A-HJKMNP-TV-Z]{26}$'),
    session_id     text NOT NULL CHECK (length(session_id) BETWEEN 1 AND 64),
    lot_id         text NOT NULL REFERENCES lots (id),
    plate          text CHECK (length(plate) BETWEEN 1 AND 16),
    account_id     text CHECK (length(account_id) BETWEEN 1 AND 64),
    amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
    refunded_fen   bigint NOT NULL DEFAULT 0,
    tariff_id      text NOT NULL,
    tariff_version integer NOT NULL,
    -- The fee breakdown of the tariff engine, so a bill can be explained and
    -- re-computed from its tariff version alone.
    quote          jsonb NOT NULL CHECK (jsonb_typeof(quote) = 'object'),
    status         text NOT NULL DEFAULT 'open' CHECK (
                       status IN ('open', 'paying', 'paid', 'refunded', 'written_off', 'disputed')
                   ),
    -- The payment that settled the bill: set once, together.
    provider       text,
    payment_ref    text,
    paid_at        timestamptz,
    closed_at      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT bills_session_unique UNIQUE (session_id),
    FOREIGN KEY (tariff_id, tariff_version) REFERENCES tariff_versions (tariff_id, version),
    CONSTRAINT bills_refund_within_amount CHECK (refunded_fen BETWEEN 0 AND amount_fen),
    CONSTRAINT bills_payment_complete CHECK (
        (paid_at IS NULL AND provider IS NULL AND payment_ref IS NULL)
        OR (paid_at IS NOT NULL AND provider IS NOT NULL AND payment_ref IS NOT NULL)
    ),
    CONSTRAINT bills_status_matches_money CHECK (
        CASE status
            WHEN 'open' THEN paid_at IS NULL
            WHEN 'paying' THEN paid_at IS NULL
            WHEN 'written_off' THEN paid_at IS NULL
            WHEN 'paid' THEN paid_at IS NOT NULL AND refunded_fen = 0
            WHEN 'refunded' THEN paid_at IS NOT NULL AND refunded_fen > 0
            ELSE true  -- disputed: paid or not
        END
    ),
    CONSTRAINT bills_refund_needs_payment CHECK (refunded_fen = 0 OR paid_at IS NOT NULL)
);
-- Arrears lookups at the entry lane (by plate) and in the driver app (by account).
CREATE INDEX bills_owed_by_plate_idx ON bills (plate, closed_at)
    WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed') AND plate IS NOT NULL;
CREATE INDEX bills_owed_by_account_idx ON bills (account_id, closed_at)
    WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed') AND account_id IS NOT NULL;
CREATE INDEX bills_lot_idx ON bills (lot_id);
CREATE INDEX bills_tariff_idx ON bills (tariff_id, tariff_version);

-- Every status change of a bill, who made it and why; append-only like the ledger.
CREATE TABLE bill_events (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bill_id               text NOT NULL REFERENCES bills (id),
    at                    timestamptz NOT NULL,
    from_status           text,  -- NULL when the bill is created
    to_status             text NOT NULL,
    actor                 text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    remark                text NOT NULL DEFAULT '' CHECK (length(remark) <= 2000),
    -- The money this change moved, if any (a refund's amount, a payment).
    amount_fen            bigint,
    ledger_transaction_id text REFERENCES ledger_transactions (id)
);
CREATE INDEX bill_events_bill_idx ON bill_events (bill_id, id);
CREATE INDEX bill_events_ledger_idx ON bill_events (ledger_transaction_id)
    WHERE ledger_transaction_id IS NOT NULL;

CREATE TRIGGER bill_events_append_only
    BEFORE UPDATE OR DELETE ON bill_events
    FOR EACH ROW EXECUTE FUNCTION append_only_refuse();
CREATE TRIGGER bill_events_no_truncate
    BEFORE TRUNCATE ON bill_events
    FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse();
