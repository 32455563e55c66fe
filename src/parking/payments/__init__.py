"""Payments: the provider port, provider adapters, the payment flows and the ledger
postings they make.

The flows are modules, each importing only those before it in this order (no cycles):
``txn`` (transactions, anomaly writer, shared reads) < ``idempotency``, ``anomalies``
< ``refunds`` < ``notifications`` < ``pay`` < ``contactless``; ``refunds`` <
``decisions`` (money after an operator's decision) < ``disputes``. Adapters are built
by ``providers.build_providers``.

How every flow treats the database and the provider:

Two kinds of use case live here:

- those that talk to a provider take the pool (``pay``, ``handle_notification``,
  ``approve_dispute``, ``refund_anomaly``, ``on_bill_opened``, ``enable_mandate``,
  and the sweeper's steps). They never hold a database transaction across a provider call:
  first a short transaction commits what is about to be asked (the attempt or
  refund request, with its fixed out_trade_no / out_refund_no), then the
  provider is called, then a second transaction records the answer. A crash
  in between leaves a committed request that a retry (or the sweeper) sends
  again with the same number, which the provider de-duplicates;
- those that only touch the database take a connection and run in the
  caller's transaction (``open_dispute``, ``reject_dispute``, ``disable_mandate``,
  the idempotency-key steps, the finance lists). They never commit.

Every status change of a bill goes through ``parking.bills.service``, which
posts its ledger transaction in the same database transaction, so a bill and
the ledger never disagree, whatever is killed when (reliability matrix P2).
Money that no bill can take (a wrong amount, an order we never made, a second
payment of a paid bill, a refund its bill cannot take) is posted here, against
suspense:{provider}, in the transaction that records its anomaly: nothing a
provider reports moving money is off the ledger.
"""
