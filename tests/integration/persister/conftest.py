"""Fixtures of the persister tests: the pipeline kit of the gateway tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from pipekit import pipeline

__all__ = ["pipeline"]
