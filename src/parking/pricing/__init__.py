"""Pricing a stay at a lot: which tariff version, which vehicle class, and who parks free.

`Pricer` keeps an in-memory snapshot of the rules (loaded from PostgreSQL and
refreshed by its owner), so pricing an exit on the gateway's hot path does no I/O.
"""

from parking.pricing.model import PricedStay, PricingError
from parking.pricing.service import Pricer

__all__ = ["PricedStay", "Pricer", "PricingError"]
