"""The replay's report: ``report.json`` (everything) and ``report.md`` (what a reader wants).

Written under ``.parking/loadtests/<run>/`` beside the devices' outboxes, the
plan's per-process event files and any locust reports of the same run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from counterparts.replay.check import EXAMPLES_PER_KIND, CheckResult
from counterparts.replay.model import SHARES, Kind
from parking.clock import SHANGHAI

if TYPE_CHECKING:
    from counterparts.replay.drivers import DriversReport
    from counterparts.replay.fleet import FleetTotals
    from counterparts.replay.plan import DayPlan
    from counterparts.replay.runner import ReplayOptions, Run
    from counterparts.replay.truth import Truth


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _dist(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        **{
            name: round((percentile(values, q) or 0.0) * scale, digits)
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "max": round(max(values) * scale, digits),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=5)  # fmt: skip
    except OSError:
        return None
    return out.stdout.strip() or None


@dataclass
class Report:
    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.data["check"]["passed"])

    @classmethod
    def build(
        cls,
        *,
        run: Run,
        options: ReplayOptions,
        plan: DayPlan,
        truth: Truth,
        fleet: FleetTotals,
        played: FleetTotals,
        lags: list[float],
        backlog_lags: list[float],
        drivers: DriversReport,
        result: CheckResult,
        drained: bool,
        decisions: dict[str, Any] | None = None,
    ) -> Report:
        begin, end = plan.window
        play_s = run.seconds("play")
        day_events = sum(1 for e in plan.events if e.at_ms >= begin)
        samples = [s for s in run.samples if s.get("cpu")]
        cpu_avg: dict[str, float] = defaultdict(float)
        for s in samples:
            for name, share in s["cpu"].items():
                cpu_avg[name] += share / len(samples)
        examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in result.mismatches:
            if len(examples[m.kind]) < EXAMPLES_PER_KIND:
                examples[m.kind].append(
                    {"what": m.what, "expected": m.expected, "actual": m.actual}
                )
        timings = {
            name: _dist(values, digits=1) for name, values in sorted(drivers.timings.items())
        }
        data: dict[str, Any] = {
            "run": {
                "id": run.id,
                "started": run.started.isoformat(),
                "commit": _commit(),
                "machine": {"cores": os.cpu_count(), "load_at_end": list(os.getloadavg())},
            },
            "options": {
                "seed": options.seed,
                "date": options.day.isoformat(),
                "start": options.start.isoformat(),
                "hours": options.hours,
                "speedup": options.speedup,
                "lots": options.lots,
                "processes": fleet.processes,
                "republish_after_s": options.republish_after,
                "pay_rate": options.pay_rate,
                "fault_scale": options.fault_scale,
            },
            "plan": {
                "window": [
                    datetime.fromtimestamp(begin / 1000, SHANGHAI).isoformat(),
                    datetime.fromtimestamp(end / 1000, SHANGHAI).isoformat(),
                ],
                "lots": len(plan.lots),
                "street_lots": sum(1 for lot in plan.lots if lot.kind != "gated"),
                "devices": len(plan.devices()),
                "events": len(plan.events),
                "events_by_kind": dict(Counter(e.kind.name.lower() for e in plan.events)),
                "events_before_window": len(plan.events) - day_events,
                "faults": dict(
                    Counter(
                        (f.name or "").lower()
                        for e in plan.events
                        for f in type(e.fault)
                        if f.value and f in e.fault
                    )
                ),
                "stays": len(plan.stays),
                "stays_by_payer": dict(Counter(str(s.payer) for s in plan.stays)),
                "drivers": len(plan.drivers),
                "outages": len(plan.outages),
                "malformed": sum(
                    1 for e in plan.events if e.kind in (Kind.BAD_RAW, Kind.BAD_IN_SEQUENCE)
                ),
                "lots_left_out": plan.left_out,
                "shares": SHARES,
            },
            "timing": {
                "phases_s": {
                    p.name: round(((p.ended or p.started) - p.started), 1) for p in run.phases
                },
                "play_s": round(play_s, 1),
                "target_events_per_s": round(
                    day_events / ((end - begin) / 1000 / options.speedup), 1
                ),
                "achieved_events_per_s": (
                    round(max(0, played.emitted - (len(plan.events) - day_events)) / play_s, 1)
                    if play_s
                    else None
                ),
                "peak_events_per_s": run.peak.get("rate"),
                "drained": drained,
                "drain_s": round(run.seconds("drain"), 1),
            },
            "lag_s": {"day_events": _dist(lags), "backlog": _dist(backlog_lags)},
            "decisions_ms": decisions or {"count": 0},
            "devices": {
                **{
                    k: v
                    for k, v in msgspec.structs.asdict(fleet).items()
                    if k not in ("day_ms", "done")
                },
                "cpu_share_of_a_core": round(fleet.cpu_s / play_s, 3) if play_s else None,
            },
            "platform": {
                "peak_pending": run.peak.get("pending"),
                "peak_stream_entries": run.peak.get("stream"),
                "peak_redis_mb": run.peak.get("redis_mb"),
                "cpu_share_of_a_core": {k: round(v, 3) for k, v in sorted(cpu_avg.items())},
            },
            "drivers": {
                "signed_up": drivers.signed_up,
                "contactless": drivers.contactless,
                "payments": drivers.payments,
                "bills_paid": len(drivers.paid),
                "paid_fen": drivers.paid_fen,
                "nothing_owed": drivers.nothing_owed,
                "rate_limited": drivers.rate_limited,
                "uncertain": len(drivers.uncertain),
                "failed": drivers.failed,
                "errors": drivers.errors,
                "requests": timings,
            },
            "truth": {
                "sessions": len(truth.sessions),
                "held_passages": truth.held,
                "full": truth.full,
                "older_entries": truth.older,
                "dead_letters": len(truth.dead_letters),
            },
            "check": {
                "passed": result.passed,
                "compared": result.compared,
                "mismatches": result.by_kind(),
                "examples": examples,
                "figures": result.figures,
            },
            "samples": run.samples,
        }
        return cls(data)


def _row(*cells: object) -> str:
    return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"


def markdown(report: Report) -> str:
    d = report.data
    t, lag, dev, plat, chk = d["timing"], d["lag_s"], d["devices"], d["platform"], d["check"]
    opts, plan = d["options"], d["plan"]
    verdict = "**passed**: zero mismatches" if chk["passed"] else (
        f"**failed**: {sum(chk['mismatches'].values())} mismatches"
    )  # fmt: skip
    lines = [
        f"# City-day replay {d['run']['id']}",
        "",
        f"Seed {opts['seed']}, {plan['window'][0]} to {plan['window'][1]}, {opts['speedup']}x, "
        f"{plan['lots']} lots ({plan['street_lots']} on-street), {plan['devices']} devices in "
        f"{opts['processes']} processes; commit {d['run']['commit']}; load average at the end "
        f"{d['run']['machine']['load_at_end'][0]:.2f} on {d['run']['machine']['cores']} cores.",
        "",
        f"Ground truth: {verdict}.",
        "",
        "## Rate and lag",
        "",
        _row("what", "figure"),
        _row("---", "---:"),
        _row("events in the plan (before the window: a backlog)",
             f"{plan['events']:,} ({plan['events_before_window']:,})"),
        _row("target rate (the day's events at this speed-up)", f"{t['target_events_per_s']:,} /s"),
        _row("achieved rate (sent / playing time)", f"{t['achieved_events_per_s']:,} /s"),
        _row("playing time / drain",
             f"{t['play_s']} s / {t['drain_s']} s (drained: {t['drained']})"),
        _row("end-to-end lag, publish to watermark, p50 / p99 / max",
             f"{lag['day_events'].get('p50')} / {lag['day_events'].get('p99')} / "
             f"{lag['day_events'].get('max')} s"),
        _row("lag of backlog events (outages, the night before), p50 / p99",
             f"{lag['backlog'].get('p50')} / {lag['backlog'].get('p99')} s"),
        _row("decisions: publish to the gateway's decision, p50 / p99",
             f"{d['decisions_ms'].get('p50')} / {d['decisions_ms'].get('p99')} ms"),
        "",
        "## The devices' side",
        "",
        _row("devices online at the end", "connects", "disconnects", "re-published",
             "duplicates sent", "malformed sent", "outbox left", "CPU (share of a core)"),
        _row(*(["---:"] * 8)),
        _row(f"{dev['online']}/{dev['devices']}", dev["connects"], dev["disconnects"],
             dev["republished"], dev["duplicates"], dev["bad_published"], dev["outbox"],
             dev["cpu_share_of_a_core"]),
        "",
        "## The platform",
        "",
        _row("peak stream entries pending", "peak Redis memory (MB)",
             "CPU per process (share of a core)"),
        _row("---:", "---:", "---"),
        _row(plat["peak_pending"], plat["peak_redis_mb"],
             ", ".join(f"{k} {v}" for k, v in plat["cpu_share_of_a_core"].items())),
        "",
        "## Drivers",
        "",
        f"{d['drivers']['signed_up']} signed up ({d['drivers']['contactless']} contactless), "
        f"{d['drivers']['payments']} payments for {d['drivers']['bills_paid']} bills "
        f"({d['drivers']['paid_fen'] / 100:,.2f} 元), {d['drivers']['failed']} failed.",
        "",
        _row("request", "count", "p50 ms", "p99 ms", "max ms"),
        _row("---", "---:", "---:", "---:", "---:"),
        *[_row(name, v["count"], v.get("p50"), v.get("p99"), v.get("max"))
          for name, v in d["drivers"]["requests"].items()],
        "",
        "## Ground truth",
        "",
        _row("compared", "count"),
        _row("---", "---:"),
        *[_row(k, f"{v:,}") for k, v in chk["compared"].items()],
        "",
    ]  # fmt: skip
    if chk["mismatches"]:
        lines += [_row("mismatch", "count"), _row("---", "---:")]
        lines += [_row(k, v) for k, v in sorted(chk["mismatches"].items())]
        lines.append("")
        for kind, items in chk["examples"].items():
            lines.append(f"### {kind}")
            lines.append("")
            lines += [f"- {json.dumps(i, ensure_ascii=False, default=str)}" for i in items[:5]]
            lines.append("")
    figures = chk["figures"]
    lines += ["Figures:", ""]
    lines += [
        f"- {k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in figures.items()
    ]
    lines.append("")
    return "\n".join(lines)


def write_report(report: Report, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(report.data, ensure_ascii=False, indent=1, default=str))
    (out_dir / "report.md").write_text(markdown(report))
    return path


def finished_at() -> str:
    return datetime.now(UTC).isoformat()
