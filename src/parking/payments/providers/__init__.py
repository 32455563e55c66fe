"""Provider adapters: each implements ``parking.payments.port`` over one provider's API.

Only ``api/`` and ``workers/`` construct them; they own no database access.
"""
