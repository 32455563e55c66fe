"""Payments: the provider port, provider adapters, notifications and idempotency."""
