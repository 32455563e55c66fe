"""Domain errors. They know nothing of HTTP; ``api/problems.py`` maps them to RFC 9457."""


class ParkingError(Exception):
    """Base of every error the platform raises on purpose."""


class StackError(ParkingError):
    """The local stack cannot be brought up (missing binaries, a server that will not start)."""


class MigrationError(ParkingError):
    """Migrations cannot be applied (a changed applied file, a gap, bad SQL)."""


class NotFound(ParkingError):
    """The thing asked for does not exist, or is not the caller's to see (404)."""


class Conflict(ParkingError):
    """The request contradicts the current state (409)."""


class InvalidInput(ParkingError):
    """Input that decoded but makes no sense (400)."""
