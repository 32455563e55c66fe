-- Money that cannot be applied is on the ledger (issue 10, point 4).
--
-- A provider can collect money that no bill can take: a notified amount other
-- than the order's, a payment of an order we never made, a second payment of
-- a bill already paid. It used to be only an anomaly row, off the ledger; now
-- it also posts to a new account of the chart (parking.ledger.logic):
--   suspense:{provider}      liability  money a provider collected for us that no bill
--                                       can take, until finance refunds it (credit
--                                       balance); a debit balance is money the provider
--                                       paid out that no bill could take (a refund
--                                       confirmed for a bill in another state)
-- The receipt is a 'suspense' transaction (clearing:{provider} / suspense:{provider})
-- keyed by the anomaly; the refund that returns it is an ordinary 'refund'
-- transaction keyed by the provider's refund reference, the other way round.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check CHECK (
    kind IN ('bill_opened', 'bill_paid', 'refund', 'write_off', 'reversal', 'settlement',
             'suspense')
);

-- A refund of money held in suspense for an order we never made has no
-- payment attempt: it names the anomaly (refund_requests_subject_check) and
-- the provider's order number only.
ALTER TABLE refund_requests ALTER COLUMN attempt_id DROP NOT NULL;

-- refund_unapplied: the provider confirmed a refund of ours that the bill can
-- no longer take (already refunded by another refund, in another state);
-- recorded, answered as taken, the money posted to suspense for finance.
ALTER TABLE payment_anomalies DROP CONSTRAINT payment_anomalies_kind_check;
ALTER TABLE payment_anomalies ADD CONSTRAINT payment_anomalies_kind_check CHECK (kind IN (
    'amount_mismatch', 'unknown_order', 'refund_before_payment', 'unknown_refund',
    'paid_after_close', 'duplicate_payment', 'refund_failed', 'malformed_notification',
    'refund_unapplied'
));
