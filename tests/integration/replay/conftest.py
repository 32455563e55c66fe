"""Fixtures of the replay tests: the pipeline kit of the gateway tests (processes of the
platform started by the test) and the payment sandbox's process kit."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "payments"))

from pipekit import pipeline

__all__ = ["pipeline"]
