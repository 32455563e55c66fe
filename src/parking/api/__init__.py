"""The HTTP API (Litestar + msgspec): drivers, gates, operators, finance, city."""
