"""The camera tests run the real pipeline of the gateway tests (gateway/pipekit.py): a fresh
copy of the seeded city, an empty Redis, real persister and camera adapter processes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from pipekit import pipeline

__all__ = ["pipeline"]
