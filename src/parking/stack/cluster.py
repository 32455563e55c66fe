"""The stack's Redis Cluster: six nodes, three masters with a replica each.

``parking stack up --redis-cluster`` starts it beside the single Redis (which
keeps running); processes use it with ``PARKING_REDIS_CLUSTER=1``. Nodes listen
on ``redis_cluster_port`` .. + 5 (bus ports + 20: the default + 10000 would land
in Linux's ephemeral range), each with its data under
``<stack dir>/redis-cluster/<port>/``, the same persistence as the single Redis,
and the stack's Redis password for clients and for replication.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from parking.config import Settings, read_secrets
from parking.errors import StackError
from parking.stack.binaries import Binaries
from parking.stack.servers import Log, _pid_alive, _port_free, _wait_gone

NODES = 6
BUS_OFFSET = 20
_FORM_TIMEOUT_S = 60.0
#: How long a master may be unreachable before its replica is promoted. Redis's
#: default is 15 s; 2 s keeps a failover within a few seconds on one machine
#: (the gateway holds its acks meanwhile), at the price of a failover after a
#: 2 s stall of a master (a 5 s DEBUG SLEEP on a master fails it over).
NODE_TIMEOUT_MS = 2000


class RedisCluster:
    def __init__(self, settings: Settings, bins: Binaries, log: Log) -> None:
        self.settings = settings
        self.bins = bins
        self.log = log
        self.root = settings.stack_dir / "redis-cluster"

    def ports(self) -> list[int]:
        return [self.settings.redis_cluster_port + i for i in range(NODES)]

    def _dir(self, port: int) -> Path:
        return self.root / str(port)

    def _pid_file(self, port: int) -> Path:
        return self._dir(port) / "redis.pid"

    def pid(self, port: int) -> int | None:
        return _pid_alive(self._pid_file(port))

    def running(self) -> bool:
        return all(self.pid(port) is not None for port in self.ports())

    def any_running(self) -> bool:
        return any(self.pid(port) is not None for port in self.ports())

    def _config(self, port: int, password: str) -> str:
        home = self._dir(port)
        return (
            "# written by `parking stack up --redis-cluster`\n"
            "bind 127.0.0.1\n"
            f"port {port}\n"
            f"dir {home}\n"
            "daemonize yes\n"
            f"pidfile {self._pid_file(port)}\n"
            f"logfile {home / 'redis.log'}\n"
            f"requirepass {password}\n"
            # replicas authenticate to their master with the same secret
            f"masterauth {password}\n"
            # as the single Redis: AOF everysec, RDB snapshots, never evict
            "appendonly yes\n"
            "appendfsync everysec\n"
            "save 900 1 300 100 60 10000\n"
            "maxmemory-policy noeviction\n"
            "enable-debug-command local\n"
            "cluster-enabled yes\n"
            "cluster-config-file nodes.conf\n"
            f"cluster-node-timeout {NODE_TIMEOUT_MS}\n"
            f"cluster-port {port + BUS_OFFSET}\n"
        )

    def _cli(
        self, password: str, port: int, *args: str, timeout: float = 10
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bins.redis_cli), "-h", "127.0.0.1", "-p", str(port), *args],
            env={**os.environ, "REDISCLI_AUTH": password},
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def start_node(self, port: int) -> None:
        """Start one node (idempotent); a node that was a member rejoins from its
        ``nodes.conf`` (a killed master comes back as its successor's replica)."""
        if self.pid(port) is not None:
            return
        if not _port_free(port):
            raise StackError(f"port {port} is taken by another program")
        secret = read_secrets(self.settings.stack_dir)
        if secret is None:
            raise StackError(
                f"no stack secrets in {self.settings.stack_dir}: run `parking stack up`"
            )
        self._start(port, secret.redis)

    def _start(self, port: int, password: str) -> None:
        home = self._dir(port)
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "redis.conf"
        conf.write_text(self._config(port, password))
        conf.chmod(0o600)
        subprocess.run([str(self.bins.redis_server), str(conf)], check=True)

    def up(self, password: str) -> None:
        for port in self.ports():
            if self.pid(port) is not None:
                continue
            if not _port_free(port):
                raise StackError(f"port {port} is taken by another program")
            self._start(port, password)
        self.log(f"redis cluster: nodes on {self.ports()[0]}..{self.ports()[-1]}")
        deadline = time.monotonic() + _FORM_TIMEOUT_S
        for port in self.ports():
            while self._cli(password, port, "PING").stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    raise StackError(f"redis cluster node {port} did not answer PING")
                time.sleep(0.1)
        if not self._slots_assigned(password):
            self.log("redis cluster: forming (3 masters, 3 replicas)")
            made = self._cli(
                password,
                self.ports()[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports()),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
                timeout=_FORM_TIMEOUT_S,
            )
            if made.returncode != 0:
                raise StackError(f"redis cluster create failed: {made.stdout[-500:]}")
        self._wait_formed(password, deadline)

    def _slots_assigned(self, password: str) -> bool:
        info = self._cli(password, self.ports()[0], "CLUSTER", "INFO").stdout
        return "cluster_slots_assigned:16384" in info

    def _wait_formed(self, password: str, deadline: float) -> None:
        while True:
            states = [self._cli(password, p, "CLUSTER", "INFO").stdout for p in self.ports()]
            if all("cluster_state:ok" in state for state in states) and self._paired(password):
                return
            if time.monotonic() > deadline:
                raise StackError(f"redis cluster not ready (see {self.root}/<port>/redis.log)")
            time.sleep(0.2)

    def _nodes(self, password: str) -> list[dict[str, str]]:
        """CLUSTER NODES of the first live node: id, port, role, master id, link state."""
        for port in self.ports():
            if self.pid(port) is None:
                continue
            out = self._cli(password, port, "CLUSTER", "NODES")
            if out.returncode != 0:
                continue
            nodes = []
            for line in out.stdout.splitlines():
                parts = line.split()
                if len(parts) < 8:
                    continue
                flags = parts[2].split(",")
                nodes.append(
                    {
                        "id": parts[0],
                        "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                        "role": "master" if "master" in flags else "replica",
                        "failed": "yes" if "fail" in flags or "fail?" in flags else "no",
                        "master": parts[3],
                        "link": parts[7],
                    }
                )
            return nodes
        return []

    def _paired(self, password: str) -> bool:
        nodes = self._nodes(password)
        masters = [n for n in nodes if n["role"] == "master" and n["failed"] == "no"]
        replicas = [n for n in nodes if n["role"] == "replica" and n["failed"] == "no"]
        return len(masters) == NODES // 2 and {r["master"] for r in replicas} == {
            m["id"] for m in masters
        }

    def masters(self, password: str) -> list[int]:
        """Ports of the masters serving slots now."""
        return sorted(
            int(n["port"])
            for n in self._nodes(password)
            if n["role"] == "master" and n["failed"] == "no"
        )

    def replica_of(self, password: str, master_port: int) -> int | None:
        nodes = self._nodes(password)
        ids = {n["id"]: n for n in nodes}
        for node in nodes:
            master = ids.get(node["master"])
            if node["role"] == "replica" and master and int(master["port"]) == master_port:
                return int(node["port"])
        return None

    def wait_formed(self, password: str, timeout: float = _FORM_TIMEOUT_S) -> None:
        """Until every node answers, every master has a replica and the state is ok."""
        self._wait_formed(password, time.monotonic() + timeout)

    def down(self, password: str) -> None:
        for port in self.ports():
            if self.pid(port) is None:
                continue
            self.log(f"redis cluster: stopping {port}")
            self._cli(password, port, "SHUTDOWN")
            _wait_gone(self._pid_file(port))
