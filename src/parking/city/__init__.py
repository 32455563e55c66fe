"""The city's figures: occupancy now from the live core, per lot, district and city."""
