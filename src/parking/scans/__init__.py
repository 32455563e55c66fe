"""Scan flows (一次扫码): a driver's scan of a lane, space or lot code."""
