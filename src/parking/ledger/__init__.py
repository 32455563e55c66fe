"""The ledger: append-only double entry in PostgreSQL.

Every transaction sums to zero (checked in Python and again by the database at
commit), posts once per business event, and is never edited: corrections are
reversing transactions. See ``model`` for the sign convention and ``logic``
for the chart of accounts.
"""
