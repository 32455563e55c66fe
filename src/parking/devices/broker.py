"""Mosquitto's password and ACL files, rendered from what the platform knows.

The broker never sees a plain password: we store Mosquitto's own PBKDF2-SHA512
hash format (``$7$iterations$salt$hash``), so the password file can be rebuilt
from the database at any time and reloaded with SIGHUP, without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Mosquitto 2.0's mosquitto_passwd uses 101 iterations; the broker verifies
# whatever count the hash carries. More iterations would slow every CONNECT of
# 100k devices after a broker restart, and the secrets are random 24-byte
# tokens, not human passwords, so brute force is not the threat here.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    salt_b64 = base64.b64encode(salt).decode()
    digest_b64 = base64.b64encode(digest).decode()
    return f"$7${PBKDF2_ITERATIONS}${salt_b64}${digest_b64}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = encoded.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt_b64), int(iterations)
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


@dataclass(frozen=True, slots=True)
class BrokerUser:
    username: str
    password_hash: str
    #: (access, topic) pairs, access one of "read", "write", "readwrite"
    grants: tuple[tuple[str, str], ...]


def render_password_file(users: Iterable[BrokerUser]) -> str:
    return "".join(f"{u.username}:{u.password_hash}\n" for u in users)


def render_acl_file(users: Iterable[BrokerUser]) -> str:
    lines: list[str] = []
    for user in users:
        lines.append(f"user {user.username}")
        lines.extend(f"topic {access} {topic}" for access, topic in user.grants)
        lines.append("")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` so the broker never reads a half-written file on reload."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def platform_user(username: str, password_hash: str, topic_prefix: str) -> BrokerUser:
    return BrokerUser(
        username=username,
        password_hash=password_hash,
        grants=(("readwrite", f"{topic_prefix}/#"), ("read", "$SYS/#")),
    )
