"""PostgreSQL access: connection pools and the migration runner."""
