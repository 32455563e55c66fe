"""The city dashboard in a real headless Chromium (Debian's): log in with a city token,
see the tiles, the map and the district table, publish an entry over MQTT as a gate
and see the lot's count change within 5 s without reloading. Screenshots are saved
beside the test's output (and the README's under docs/ when PARKING_SCREENSHOTS asks)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from browserkit import chromium
from pipekit import DEMO, Pipeline, eventually
from selenium.webdriver.common.by import By
from test_city_figures import PLATES, _drive

from parking.auth.model import Role
from parking.seed import city as plan

DOCS = Path(__file__).resolve().parents[3] / "docs"


async def test_the_dashboard_shows_the_city_and_follows_an_entry_live(
    pipeline: Pipeline, token_for: Any, tmp_path: Path
) -> None:
    entry = await pipeline.add_gate("in1")
    pipeline.gateway().start()
    await pipeline.subscribed()
    base = await pipeline.api(pipeline.settings.api_port + 4)
    rolled = pipeline.cli("city", "rollup", "--once")
    assert rolled.returncode == 0, rolled.stderr
    token = token_for(Role.CITY, "zhao.city")
    with chromium(1600, 1400) as browser:
        browser.get(f"{base}/dashboard")
        assert "城市停车驾驶舱" in browser.title
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()

        async def tiles() -> bool:
            return browser.find_element(By.ID, "tile-capacity").text == f"{plan.TOTAL_SPACES:,}"

        await eventually(tiles, within=15, what="the tiles")
        assert browser.find_element(By.ID, "tile-lots").text == str(plan.TOTAL_LOTS)
        assert browser.find_element(By.ID, "tile-occupied").text == "0"
        rows = browser.find_elements(By.CSS_SELECTOR, "#districts tbody tr")
        districts = {p.lot.district_code for p in plan.build(pipeline.settings.city_seed)}
        assert len(rows) == len(districts)
        assert browser.find_element(By.CSS_SELECTOR, "#map canvas").is_displayed()
        assert browser.execute_script("return document.body.dataset.lots") == str(plan.TOTAL_LOTS)
        # each district drawn as the region its lots imply
        assert browser.execute_script("return document.body.dataset.outlines") == str(
            len(districts)
        )

        # the hourly curves, the money, reconciliation and device panels, from the rollups
        async def figures() -> bool:
            return browser.execute_script("return document.body.dataset.figures") == "ready"

        await eventually(figures, within=15, what="the day's figures")
        assert browser.execute_script("return document.body.dataset.hours") == "24"
        assert browser.find_element(By.CSS_SELECTOR, "#hourly canvas").is_displayed()
        assert browser.find_element(By.ID, "money-billed").text.startswith("¥")
        assert browser.find_element(By.ID, "money-rate").text != ""
        providers = browser.find_elements(By.CSS_SELECTOR, "#reconciliation tbody tr")
        assert [r.get_attribute("data-provider") for r in providers] == ["alipay", "wechat"]
        online, registered = browser.find_element(By.ID, "devices-online").text.split(" / ")
        assert int(online.replace(",", "")) <= int(registered.replace(",", ""))

        async def live() -> bool:
            return browser.find_element(By.ID, "live").text == "实时"

        await eventually(live, within=10, what="the live stream")
        browser.save_screenshot(str(tmp_path / "dashboard-before.png"))
        await _drive(pipeline, entry, 1, PLATES[0], "in")
        entered = time.monotonic()
        while browser.find_element(By.ID, "tile-occupied").text != "1":
            assert time.monotonic() - entered < 5, "the page did not show the entry within 5 s"
            await asyncio.sleep(0.1)
        demo_row = browser.find_element(
            By.CSS_SELECTOR, f'#districts tbody tr[data-district="{_district(pipeline)}"]'
        )

        async def district_counted() -> bool:
            return demo_row.find_elements(By.TAG_NAME, "td")[3].text == "1"

        await eventually(district_counted, within=5, what="the district's count")
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshots: {tmp_path}")
        if os.environ.get("PARKING_SCREENSHOTS"):
            shutil.copyfile(shot, DOCS / "dashboard.png")


def _district(pipeline: Pipeline) -> str:
    plan_lots = plan.build(pipeline.settings.city_seed)
    return next(p.lot.district_code for p in plan_lots if p.id == DEMO)
