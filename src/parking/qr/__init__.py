"""Signed QR codes for lots, lanes and on-street spaces (scan once, park anywhere)."""
