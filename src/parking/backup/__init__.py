"""Backups of the local stack and point-in-time restores into a fresh stack directory.

PostgreSQL: WAL archiving (``parking stack up --backups``) plus base backups
(``pg_basebackup``); Redis: an RDB snapshot; the broker's password and ACL files,
the stack's secrets, QR keys and device secrets: copies. A restore replays the
archive up to a moment, then rebuilds the occupancy core from the database.
"""
