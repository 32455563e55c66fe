"""``parking run``: every platform process in the foreground until Ctrl-C.

A child that dies is restarted with backoff (and the restart is logged), so a
crash of one process never takes the demo city down. Ctrl-C or SIGTERM stops
the children with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

_STOP_GRACE_S = 10.0
_MAX_BACKOFF_S = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv)
        self.started_at = time.monotonic()
        print(f"[run] started {self.name} (pid {self.proc.pid})", file=sys.stderr, flush=True)


def supervise(children: list[Child], banner: str) -> int:
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        child.start()
    print(banner, file=sys.stderr, flush=True)
    while not stopping:
        time.sleep(0.2)
        now = time.monotonic()
        for child in children:
            if child.proc is None:
                if now >= child.next_start and not stopping:
                    child.start()
                continue
            code = child.proc.poll()
            if code is None:
                continue
            # A child that ran for a minute earns its backoff back.
            if now - child.started_at > 60:
                child.restarts = 0
            child.restarts += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2**child.restarts)
            print(
                f"[run] {child.name} exited with {code}; restarting in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            child.proc = None
            child.next_start = now + delay
    print("[run] stopping", file=sys.stderr, flush=True)
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()
    print("[run] stopped", file=sys.stderr, flush=True)
    return 0
