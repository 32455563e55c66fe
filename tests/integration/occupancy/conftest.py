"""Fixtures of the occupancy core tests (defined in corekit)."""

from corekit import core

__all__ = ["core"]
