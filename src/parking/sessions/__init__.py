"""Parking sessions: the decisions at the lane (entry, exit), and the sessions of record."""
