"""`make bench`: run every bench/bench_*.py in turn, collect the rows each records, write them down.

    uv run python bench/run.py [--smoke] [bench_api ingest ...]

Each benchmark measures its own baseline in the same run, prints its figures and
records them as rows (bench/results.py); absolute numbers drift between machines,
ratios measured together do not. This script writes:

- ``.parking/bench/results-<UTC time>.json`` (``BENCH_RESULTS_DIR`` moves the folder):
  every row, with the machine, the git commit, Python, the load average at the start
  and the end, and each benchmark's exit status; ``latest.json`` beside it is a copy;
- for a run of every benchmark at full size: ``docs/performance-table.md`` and the
  same table in ``docs/performance.md`` between its ``bench-table`` markers.

``--smoke`` (or ``BENCH_SMOKE=1``) runs each benchmark for seconds at small sizes, as
``make test`` does; its file is ``results-<time>-smoke.json``, and it leaves
``latest.json`` and the docs alone, since its figures say nothing about performance.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from results import SMOKE, Row, read, smoke

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "performance.md"
TABLE = ROOT / "docs" / "performance-table.md"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    bench: str
    script: str
    exit: int
    seconds: float
    rows: int


class Run(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    smoke: bool
    machine: dict[str, Any]
    git: dict[str, Any]
    python: str
    load_average: dict[str, list[float]]
    benches: list[Outcome]
    rows: list[Row]


def short(stem: str) -> str:
    return stem.removeprefix("bench_")


def machine() -> dict[str, Any]:
    model = ""
    memory_gib = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gib,
    }


def git() -> dict[str, Any]:
    def out(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": out("rev-parse", "HEAD"),
        "dirty": bool(out("status", "--porcelain", "--untracked-files=no")),
    }


def load_average() -> list[float]:
    return [round(n, 2) for n in os.getloadavg()]


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def table(run: Run, source: str) -> str:
    """The run as markdown: a line saying where and when, then one row per figure."""
    commit = run.git.get("commit", "")[:10] or "unknown"
    dirty = " with uncommitted changes" if run.git.get("dirty") else ""
    cpus = run.machine.get("cpus")
    start, end = run.load_average["start"][0], run.load_average["end"][0]
    lines = [
        f"`make bench` of {run.date[:16].replace('T', ' ')} UTC at commit {commit}{dirty}: "
        f"{cpus} CPUs, {run.machine.get('memory_gib')} GiB, Python {run.python}, "
        f"load average {start} at the start and {end} at the end; rows from `{source}`.",
        "",
        "| bench | case | value | baseline | ratio | goal | met |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for row in run.rows:
        own = row.baseline_case == row.case
        baseline = "" if own else f"{row.baseline_case}: {number(row.baseline_value)} {row.unit}"
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}x"
        met = {None: "", True: "met", False: "**missed**"}[row.met]
        cells = [row.bench, row.case, f"{number(row.value)} {row.unit}", baseline, ratio]
        cells += [row.goal or "", met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    failed = [o for o in run.benches if o.exit != 0 or o.rows == 0]
    if failed:
        lines.append("")
        lines += [f"- {o.bench} failed (exit {o.exit}, {o.rows} rows)" for o in failed]
    return "\n".join(lines) + "\n"


def with_table(doc: str, markdown: str) -> str:
    """``doc`` with the text between the markers replaced by ``markdown``."""
    head, found, rest = doc.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise SystemExit(f"{DOC} has no {START} ... {END} section")
    return f"{head}{START}\n{markdown}{END}{tail}"


def run_one(script: Path, folder: Path, *, as_smoke: bool) -> tuple[Outcome, list[Row]]:
    target = folder / f"{script.stem}.json"
    env = {**os.environ, "BENCH_RESULTS_FILE": str(target)}
    if as_smoke:
        env[SMOKE] = "1"
    print(f"=== {script.stem}", flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], env=env, check=False)
    seconds = time.monotonic() - started
    rows = read(target) if target.exists() else []
    print(f"=== {script.stem}: exit {done.returncode} in {seconds:.1f}s, {len(rows)} rows\n")
    outcome = Outcome(
        bench=short(script.stem),
        script=str(script.relative_to(ROOT)),
        exit=done.returncode,
        seconds=round(seconds, 1),
        rows=len(rows),
    )
    return outcome, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs at small sizes")
    parser.add_argument("benches", nargs="*", help="run only these (bench_api or api)")
    args = parser.parse_args()
    as_smoke = args.smoke or smoke()
    only = {short(name) for name in args.benches}
    scripts = [s for s in sorted(HERE.glob("bench_*.py")) if not only or short(s.stem) in only]
    if only - {short(s.stem) for s in scripts}:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(only))}")
    out = Path(os.environ.get("BENCH_RESULTS_DIR") or ROOT / ".parking" / "bench")
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_start = load_average()
    outcomes: list[Outcome] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        for script in scripts:
            outcome, recorded = run_one(script, Path(folder), as_smoke=as_smoke)
            outcomes.append(outcome)
            rows += recorded
    run = Run(
        date=started.isoformat(timespec="seconds"),
        smoke=as_smoke,
        machine=machine(),
        git=git(),
        python=platform.python_version(),
        load_average={"start": load_start, "end": load_average()},
        benches=outcomes,
        rows=rows,
    )
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = out / f"results-{stamp}{'-smoke' if as_smoke else ''}.json"
    encoded = msgspec.json.format(msgspec.json.encode(run), indent=1)
    path.write_bytes(encoded)
    print(f"results: {path}")
    if not as_smoke:
        (out / "latest.json").write_bytes(encoded)
    if not as_smoke and not only:
        markdown = table(run, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
        TABLE.write_text(markdown, encoding="utf-8")
        DOC.write_text(with_table(DOC.read_text(encoding="utf-8"), markdown), encoding="utf-8")
        print(f"table: {TABLE.relative_to(ROOT)}, and in {DOC.relative_to(ROOT)}")
    failed = [o.bench for o in outcomes if o.exit != 0 or o.rows == 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
