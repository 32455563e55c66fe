"""Fixtures of the gateway tests (defined in pipekit, shared with the persister tests)."""

from pipekit import pipeline

__all__ = ["pipeline"]
