"""A deterministic synthetic Ganzhou for `make run`, demos and load tests."""
