"""Reconciliation and settlement: the providers' statements against our ledger, every day."""
