"""码上反映 · 响应时间 on the city dashboard, in a real headless Chromium (Debian's): before
any report the panel says 尚无案件 (never NaN); then cases are reported and accepted
through the API at times set by the app's injected clock (one of them past its
30-minute clock, which the clock job breaches), the page is reloaded, and the panel
shows p50, p90, the share within 30 minutes, the sentence saying how far the city is
from its target, the cases waiting, the breaches, each district, each day and each
category, every one computed here from the moves this test made. Screenshots of the
panel are saved beside the test's output (and under docs/ when PARKING_SCREENSHOTS
asks)."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from browserkit import chromium
from kits import bearer, log_in
from litestar.testing import AsyncTestClient
from pipekit import Pipeline, eventually
from selenium.webdriver.common.by import By

from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.cases import clocks
from parking.cases import service as cases
from parking.clock import FixedClock, business_day
from parking.seed import city as plan

DOCS = Path(__file__).resolve().parents[3] / "docs"
TARGET = 30

#: (received this long before now, at the demo lot or another district's, category,
#: accepted this many minutes after it was received; None: still waiting)
PLAN: tuple[tuple[timedelta, bool, str, int | None], ...] = (
    (timedelta(days=2), True, "facility_damage", 45),  # past its clock: breached first
    (timedelta(days=1), True, "space_blocked", 10),
    (timedelta(hours=3), False, "gate_fault", 25),
    (timedelta(hours=2), False, "safety_hazard", 18),
    (timedelta(minutes=10), True, "other", None),
)


@dataclass(frozen=True)
class Made:
    """A case this test made, as the figures should see it."""

    district: str
    category: str
    level: str
    day: str
    minutes: int | None


def _rank(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile, the figures' definition, computed here on its own."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _minutes(value: int | None) -> str:
    return "—" if value is None else f"{value} 分钟"


def _share(times: list[int]) -> str:
    return "—" if not times else f"{100 * sum(t <= TARGET for t in times) / len(times):.1f}%"


def _row(name: str, group: list[Made]) -> list[str]:
    times = [m.minutes for m in group if m.minutes is not None]
    return [
        name,
        str(len(group)),
        _minutes(_rank(times, 0.5)),
        _minutes(_rank(times, 0.9)),
        _share(times),
    ]


def _other_lot(pipeline: Pipeline) -> tuple[str, str]:
    """A lot outside the demo lot's district (章贡区): (its id, its district's code)."""
    lot = next(
        p.lot for p in plan.build(pipeline.settings.city_seed) if p.lot.district_code != "ZG"
    )
    return lot.id, lot.district_code


async def _make_cases(pipeline: Pipeline, now: datetime) -> list[Made]:
    """The cases of PLAN, reported by drivers and accepted by city management through
    the API, with the app's clock set to each move's time; the clock job runs once, a
    minute after the target, for the case accepted later than that."""
    clock = FixedClock(now)
    other, other_district = _other_lot(pipeline)
    made: list[Made] = []
    async with AsyncTestClient(app=create_app(pipeline.settings, clock=clock)) as app:
        for n, (back, at_demo, category, after) in enumerate(PLAN):
            received = now - back
            clock.set(received)
            phone = f"1380000170{n}"
            driver = bearer((await log_in(app, pipeline.redis, phone))["access_token"])
            lot = plan.DEMO_LOT if at_demo else other
            got = await app.post(
                "/v1/reports",
                json={"lot_id": lot, "category": category, "text": f"面板测试 {category}"},
                headers=driver,
            )
            assert got.status_code == 201, got.text
            case_id, level = got.json()["id"], got.json()["level"]
            if after is not None:
                if after > TARGET:
                    clock.set(received + timedelta(minutes=TARGET + 1))
                    ticked = await clocks.tick(
                        pipeline.conn, cases.LocalNotifier(), now=clock.now()
                    )
                    assert ticked["escalated"] == 1, ticked
                clock.set(received + timedelta(minutes=after))
                city = bearer(
                    tokens.issue(
                        pipeline.settings.jwt_key,
                        subject="zhao.city",
                        role=Role.CITY,
                        now=clock.now(),
                        ttl=timedelta(hours=1),
                    )
                )
                accepted = await app.post(
                    f"/v1/cases/{case_id}/accept", json={"note": "已签收"}, headers=city
                )
                assert accepted.status_code == 200, accepted.text
                level = accepted.json()["case"]["level"]
            made.append(
                Made(
                    district="ZG" if at_demo else other_district,
                    category=category,
                    level=level,
                    day=business_day(received),
                    minutes=after,
                )
            )
    return made


def _text(browser: Any, element_id: str) -> str:
    text: str = browser.find_element(By.ID, element_id).text
    return text


def _rows(browser: Any, table: str) -> dict[str, list[str]]:
    return {
        row.get_attribute("data-key"): [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    }


def _shot(browser: Any, tmp_path: Path, name: str) -> None:
    """The panel's screenshot with the test's output (and under docs/ when asked)."""
    panel = browser.find_element(By.ID, "cases")
    browser.execute_script("arguments[0].scrollIntoView()", panel)
    path = tmp_path / f"{name}.png"
    panel.screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("PARKING_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / f"{name}.png")


async def test_the_cases_panel_says_how_far_the_city_is_from_answering_within_30_minutes(
    pipeline: Pipeline, token_for: Any, tmp_path: Path
) -> None:
    pipeline.gateway().start()
    await pipeline.subscribed()
    base = await pipeline.api(pipeline.settings.api_port + 4)
    with chromium(1600, 1400) as browser:
        browser.get(f"{base}/dashboard")
        browser.find_element(By.ID, "token").send_keys(token_for(Role.CITY, "zhao.city"))
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()

        async def shown(state: str) -> bool:
            return bool(browser.execute_script("return document.body.dataset.cases") == state)

        async def empty() -> bool:
            return await shown("empty")

        await eventually(empty, within=15, what="the cases panel, empty")
        panel = browser.find_element(By.ID, "cases").text
        assert "NaN" not in panel
        assert "undefined" not in panel
        assert _text(browser, "cases-verdict") == "近 7 天尚无案件，暂无响应时间。"
        assert _text(browser, "cases-share") == "—"
        assert (_text(browser, "cases-p50"), _text(browser, "cases-p90")) == ("—", "—")
        assert _text(browser, "cases-count") == "0 / 0"
        assert (_text(browser, "cases-waiting"), _text(browser, "cases-breaches")) == ("0", "0")
        assert _text(browser, "cases-waiting-now") == "0 / 0"
        for table in ("cases-levels", "cases-districts", "cases-categories"):
            cells = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody td")
            assert [c.text for c in cells] == ["尚无案件"], table
        assert browser.execute_script("return document.body.dataset.casesDays") == "7"
        _shot(browser, tmp_path, "dashboard-cases-panel-empty")

        now = datetime.now(UTC).replace(microsecond=0)
        made = await _make_cases(pipeline, now)
        browser.refresh()  # the token stays in the tab: the board opens again

        async def ready() -> bool:
            return await shown("ready")

        await eventually(ready, within=15, what="the cases panel, with the cases made")
        panel = browser.find_element(By.ID, "cases").text
        assert "NaN" not in panel
        assert "undefined" not in panel

        # the city: accepted after 10, 18, 25 and 45 minutes, one still waiting
        times = [m.minutes for m in made if m.minutes is not None]
        p50, p90 = _rank(times, 0.5), _rank(times, 0.9)
        assert (p50, p90) == (18, 45)
        assert p90 is not None
        assert _text(browser, "cases-p50") == f"{p50} 分钟"
        assert _text(browser, "cases-p90") == f"{p90} 分钟"
        assert _text(browser, "cases-share") == _share(times) == "75.0%"
        assert _text(browser, "cases-share-label") == f"{TARGET} 分钟内签收"
        assert _text(browser, "cases-verdict") == (
            f"p90 响应 {p90} 分钟，比 {TARGET} 分钟目标慢 {p90 - TARGET} 分钟"
        )
        assert "late" in (browser.find_element(By.ID, "cases-verdict").get_attribute("class") or "")
        assert _text(browser, "cases-count") == f"{len(made)} / {len(times)}"
        assert _text(browser, "cases-waiting") == str(sum(m.minutes is None for m in made))
        # waiting now, however old: the one received 10 minutes ago, within its clock
        assert _text(browser, "cases-waiting-now") == "1 / 0"
        assert _text(browser, "cases-breaches") == str(sum(t > TARGET for t in times))

        # each level, district and category
        names = {d.code: d.name for d in plan.DISTRICTS}
        levels = {"small": "小事快处", "middle": "中事协处", "big": "大事统处"}
        assert _rows(browser, "cases-levels") == {
            level: _row(name, [m for m in made if m.level == level])
            for level, name in levels.items()
            if any(m.level == level for m in made)
        }
        assert _rows(browser, "cases-districts") == {
            code: _row(names[code], [m for m in made if m.district == code])
            for code in {m.district for m in made}
        }
        # the slowest district (by p90) first
        first = browser.find_element(By.CSS_SELECTOR, "#cases-districts tbody tr")
        assert first.get_attribute("data-key") == "ZG"
        categories = _rows(browser, "cases-categories")
        assert {k: int(v[1]) for k, v in categories.items()} == {m.category: 1 for m in made}
        assert categories["facility_damage"][0] == "设施损坏"

        # each of the last 7 business days: p50 and p90 bars (none on a day without cases)
        drawn = browser.execute_script(
            "const o = echarts.getInstanceByDom(document.getElementById('cases-daily'))"
            ".getOption(); return [o.xAxis[0].data, o.series[0].data, o.series[1].data];"
        )
        days = [business_day(now - timedelta(days=back)) for back in range(6, -1, -1)]
        assert drawn[0] == [d[5:] for d in days]
        per_day = {
            d: [m.minutes for m in made if m.day == d and m.minutes is not None] for d in days
        }
        assert drawn[1] == [_rank(per_day[d], 0.5) for d in days]
        assert drawn[2] == [_rank(per_day[d], 0.9) for d in days]
        assert browser.find_element(By.CSS_SELECTOR, "#cases-daily canvas").is_displayed()
        _shot(browser, tmp_path, "dashboard-cases-panel")
        print(f"screenshots: {tmp_path}")
