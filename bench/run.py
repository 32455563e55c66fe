"""`make bench`: run every bench/bench_*.py in turn and print what each reports.

Each benchmark measures its own baseline in the same run and prints the ratio;
absolute numbers drift between machines, ratios measured together do not.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])
    failures = 0
    for script in sorted(here.glob("bench_*.py")):
        if only and script.stem not in only:
            continue
        print(f"=== {script.stem}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], check=False)
        print(f"=== {script.stem}: exit {result.returncode} in {time.monotonic() - started:.1f}s\n")
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
