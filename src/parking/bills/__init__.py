"""Bills: one per parking session that cost money, each a receivable in the ledger.

``logic`` holds the status transition table; ``service`` keeps every status
change, its audit row and its ledger transaction in the caller's transaction.
"""
