"""The local stack: PostgreSQL 15, Redis 7 and Mosquitto 2 as child servers of the project.

Each server runs on a project port with its data and logs under the stack
directory (``.parking/dev`` for ``make run``, ``.parking/test`` for ``make test``),
never as a system service or on a default port.
"""
