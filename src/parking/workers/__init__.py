"""Process entry points: api, gateway, persister, scheduler, and the supervisor."""
