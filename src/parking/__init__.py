"""Changbo (畅泊): a city-scale smart-parking backend."""
