"""The QR keyring file: ``{stack_dir}/qr-keys.json`` (mode 0600), generated on first use.

Kept beside the stack's other secrets and never in git. Rotation and
retirement rewrite the file atomically under a lock; running API workers
notice the change by the file's modification time (`KeyringFile.current`), so
no restart is needed.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import msgspec

from parking.qr.model import Keyring

FILE_NAME: Final = "qr-keys.json"
_KEY_BYTES: Final = 32


def path_in(stack_dir: Path) -> Path:
    return stack_dir / FILE_NAME


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write(path: Path, keyring: Keyring) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(keyring)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> Keyring:
    return msgspec.json.decode(path.read_bytes(), type=Keyring)


def _next_id(keyring: Keyring | None) -> str:
    numbers = [int(k[1:]) for k in (keyring.keys if keyring else {}) if k[1:].isdigit()]
    return f"k{max(numbers, default=0) + 1}"


def load_or_create(path: Path) -> Keyring:
    """The keyring, with a first key generated if there is no file yet."""
    if path.exists():
        return _read(path)
    with _locked(path):
        if path.exists():
            return _read(path)
        keyring = Keyring(signing="k1", keys={"k1": secrets.token_bytes(_KEY_BYTES)})
        _write(path, keyring)
        return keyring


def rotate(path: Path) -> Keyring:
    """Add a new key and sign with it from now on; older keys still verify."""
    with _locked(path):
        current = _read(path) if path.exists() else None
        key_id = _next_id(current)
        keys = {**(current.keys if current else {}), key_id: secrets.token_bytes(_KEY_BYTES)}
        keyring = Keyring(signing=key_id, keys=keys)
        _write(path, keyring)
        return keyring


def retire(path: Path, key_id: str) -> Keyring:
    """Stop accepting codes signed with ``key_id`` (reprint them first)."""
    with _locked(path):
        current = _read(path)
        if key_id not in current.keys:
            raise KeyError(f"no key {key_id!r}")
        if key_id == current.signing:
            raise ValueError(f"{key_id} signs new codes; rotate before retiring it")
        keyring = Keyring(
            signing=current.signing, keys={k: v for k, v in current.keys.items() if k != key_id}
        )
        _write(path, keyring)
        return keyring


class KeyringFile:
    """The keyring of a running process, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keyring: Keyring | None = None
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def current(self) -> Keyring:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if self._keyring is not None and stamp is not None and stamp == self._stamp:
            return self._keyring
        with self._lock:
            keyring = load_or_create(self.path)
            stat = self.path.stat()
            self._keyring, self._stamp = keyring, (stat.st_mtime_ns, stat.st_ino)
            return keyring
