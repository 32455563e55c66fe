"""Finding the server binaries, and installing them with apt-get when we may."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from parking.errors import StackError

PG_MAJOR = 15
_PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")

#: Debian package that provides each binary we need.
PACKAGES: dict[str, str] = {
    "initdb": f"postgresql-{PG_MAJOR}",
    "pg_ctl": f"postgresql-{PG_MAJOR}",
    "postgres": f"postgresql-{PG_MAJOR}",
    "psql": f"postgresql-client-{PG_MAJOR}",
    "pg_dump": f"postgresql-client-{PG_MAJOR}",
    "pg_basebackup": f"postgresql-client-{PG_MAJOR}",
    "pg_verifybackup": f"postgresql-{PG_MAJOR}",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
}


@dataclass(frozen=True, slots=True)
class Binaries:
    initdb: Path
    pg_ctl: Path
    postgres: Path
    psql: Path
    pg_dump: Path
    pg_basebackup: Path
    pg_verifybackup: Path
    redis_server: Path
    redis_cli: Path
    mosquitto: Path
    mosquitto_pub: Path
    mosquitto_sub: Path


def find(name: str) -> Path | None:
    # The versioned PostgreSQL directory comes first: Debian's /usr/bin/psql is a
    # wrapper that may pick another major version.
    candidates = [_PG_BIN / name, Path("/usr/sbin") / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def missing() -> list[str]:
    return [name for name in PACKAGES if find(name) is None]


def _can_apt() -> bool:
    return (
        os.geteuid() == 0 and Path("/etc/debian_version").exists() and bool(shutil.which("apt-get"))
    )


def ensure(*, log: Callable[[str], None]) -> Binaries:
    """Return the binaries, installing missing Debian packages first when running as root."""
    absent = missing()
    if absent:
        packages = sorted({PACKAGES[name] for name in absent})
        if not _can_apt():
            raise StackError(
                "missing server binaries "
                + ", ".join(absent)
                + "; install the packages: "
                + " ".join(packages)
                + " (Debian/Ubuntu: sudo apt-get install -y "
                + " ".join(packages)
                + ")"
            )
        log(f"installing {' '.join(packages)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        # policy-rc.d-less containers would start the system services on their
        # default ports; we never use those, so we stop them right away below.
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
        )
        still = missing()
        if still:
            raise StackError(f"apt-get ran but these are still missing: {', '.join(still)}")
    found = {name: find(name) for name in PACKAGES}
    return Binaries(
        initdb=_req(found, "initdb"),
        pg_ctl=_req(found, "pg_ctl"),
        postgres=_req(found, "postgres"),
        psql=_req(found, "psql"),
        pg_dump=_req(found, "pg_dump"),
        pg_basebackup=_req(found, "pg_basebackup"),
        pg_verifybackup=_req(found, "pg_verifybackup"),
        redis_server=_req(found, "redis-server"),
        redis_cli=_req(found, "redis-cli"),
        mosquitto=_req(found, "mosquitto"),
        mosquitto_pub=_req(found, "mosquitto_pub"),
        mosquitto_sub=_req(found, "mosquitto_sub"),
    )


def _req(found: dict[str, Path | None], name: str) -> Path:
    path = found[name]
    if path is None:
        raise StackError(f"{name} not found")
    return path
