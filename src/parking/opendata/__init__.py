"""Open data: where to park, for everyone (ParkAPI v3 JSON); nothing personal."""
