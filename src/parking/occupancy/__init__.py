"""The occupancy core: live lot state in Redis, applied atomically per device event.

Key schema: `parking.occupancy.keys`; the Redis function library: `lua/occupancy.lua`.
"""
