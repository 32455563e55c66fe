"""The page a scanned code opens (issue 14), in Debian's headless Chromium at a phone's
size (375 x 812): the code printed by `parking qr render`, the lot and its tariff
before login, the OTP login, a plate bound, the car entering over MQTT (real gate,
gateway, persister) shown with its fee; paying hands the browser over to the provider's
cashier (the sandbox provider's page standing in for the WeChat app, WeChat H5) and
back to a receipt: (a) prepaid in the lot, the exit within the window bills nothing
more; (b) a car without a plate scans in and out at the lanes, then pays; (c) an old
bill of another lot is paid from the same page; (d) forged and expired codes answer a
page a driver understands, a full lot says so. Every request the page makes goes to
the platform's own origin (the browser's performance log; the one way out is the
handover to the provider's cashier, a navigation), and the CSP is there. Screenshots
are saved with the test's output."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from browserkit import chromium
from PIL import Image
from pipekit import DEMO, Device, Pipeline, eventually
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from test_city_days import _make_lot, _passage
from test_gateway_walkthrough import _pub, _settle, _watch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))
from payment_servers import SandboxProcess

from parking.accounts import notifier
from parking.auth.model import Role
from parking.qr import keys, logic
from parking.qr.model import QrKind
from parking.seed.city import DEMO_COMPANY

PHONE = "13800000141"
PLATE = "赣B14P01"
PHONE_SIZE = (375, 812)
DOCS = Path(__file__).resolve().parents[3] / "docs"


def _shot(browser: Any, tmp_path: Path, name: str) -> None:
    """A screenshot with the test's output (and under docs/ when PARKING_SCREENSHOTS asks)."""
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    if os.environ.get("PARKING_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / f"driver-page-{name}.png")


def _requests(browser: Any) -> list[tuple[str, str, str]]:
    """Every request the browser made (Chrome's performance log): ``(the page that
    made it, its type, its URL)``."""
    made = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            made.append((params["documentURL"], params.get("type", ""), params["request"]["url"]))
    return made


def _only_own_origin(made: list[tuple[str, str, str]], base: str, cashier: str) -> None:
    """The platform's page asks only its own origin; it leaves only by navigating to the
    provider's cashier (a document, never a script, style, image or fetch)."""
    own, provider = urlsplit(base).netloc, urlsplit(cashier).netloc
    mine = [(kind, url) for page, kind, url in made if urlsplit(page).netloc == own]
    assert mine, made
    elsewhere = [
        (kind, url)
        for kind, url in mine
        if urlsplit(url).netloc not in (own, "")
        and not (kind == "Document" and urlsplit(url).netloc == provider)
    ]
    assert elsewhere == [], elsewhere


@asynccontextmanager
async def _platform(
    pipeline: Pipeline, tmp_path: Path, api_offset: int, sandbox_offset: int
) -> AsyncIterator[tuple[str, SandboxProcess]]:
    """An API process whose printed codes carry its own address, paying through a sandbox
    provider (WeChat Pay v3 and its cashier page) of its own: ``(base URL, sandbox)``."""
    sandbox = SandboxProcess(
        tmp_path / "sandbox-stack", pipeline.settings.sandbox_port + sandbox_offset
    )
    sandbox.start()
    try:
        port = pipeline.settings.api_port + api_offset
        base = await pipeline.api(
            port,
            PARKING_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            PARKING_WECHATPAY_CONFIG=str(sandbox.config_path),
        )
        pipeline.env["PARKING_PUBLIC_BASE_URL"] = base
        yield base, sandbox
    finally:
        sandbox.stop()


async def _pay_at_the_cashier(
    browser: Any, tmp_path: Path, shot: str, sandbox: SandboxProcess
) -> str:
    """At the provider's cashier (the sandbox's page for the WeChat app): confirm; back on
    the platform's page once it has the payment's result. Returns the amount shown."""

    async def at_cashier() -> bool:
        return bool(browser.find_elements(By.ID, "confirm"))

    await eventually(at_cashier, within=20, what="the provider's cashier page")
    assert browser.current_url.startswith(sandbox.base_url + "/sandbox/h5/checkmweb?")
    amount: str = browser.find_element(By.ID, "amount").text
    assert amount.startswith("¥")
    _shot(browser, tmp_path, shot)
    browser.find_element(By.ID, "confirm").click()

    async def back() -> bool:
        if not browser.current_url.startswith("http://127.0.0.1") or "/q/" not in (
            browser.current_url
        ):
            return False
        return bool(browser.execute_script("return document.body.dataset.paid || ''"))

    await eventually(back, within=40, what="the page back from the cashier, paid")
    assert "?" not in browser.current_url  # nothing left in the address
    assert browser.execute_script("return window.sessionStorage.length") == 0
    return amount


async def _receipt(browser: Any) -> dict[str, str]:
    async def shown() -> bool:
        return not browser.find_element(By.ID, "receipt").get_attribute("hidden")

    await eventually(shown, within=10, what="the receipt")
    terms = browser.find_elements(By.CSS_SELECTOR, "#receipt-body dt")
    values = browser.find_elements(By.CSS_SELECTOR, "#receipt-body dd")
    return {
        t.get_attribute("textContent"): v.get_attribute("textContent")
        for t, v in zip(terms, values, strict=True)
    }


async def _code(pipeline: Pipeline, tmp_path: Path, *extra: str) -> str:
    made = pipeline.cli("qr", "render", "--lot", DEMO, *extra, "--out", str(tmp_path / "c.svg"))
    assert made.returncode == 0, made.stderr
    url: str = json.loads(made.stdout)["url"]
    return url


async def test_a_driver_scans_the_lot_code_logs_in_binds_a_plate_and_sees_the_car_inside(
    pipeline: Pipeline, token_for: Any, tmp_path: Path
) -> None:
    entry = await pipeline.add_gate("in1")
    leaving = await pipeline.add_gate("out1")
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    async with _platform(pipeline, tmp_path, 6, 6) as (base, sandbox):
        await _scan_log_in_prepay_and_leave(
            pipeline, token_for, tmp_path, base, sandbox, entry, leaving
        )


async def _scan_log_in_prepay_and_leave(
    pipeline: Pipeline,
    token_for: Any,
    tmp_path: Path,
    base: str,
    sandbox: SandboxProcess,
    entry: Device,
    leaving: Device,
) -> None:
    url = await _code(pipeline, tmp_path)
    assert url.startswith(base + "/q/")

    with chromium(*PHONE_SIZE, performance_log=True) as browser:
        browser.get(url)
        async with httpx.AsyncClient(trust_env=False) as http:
            page = await http.get(url)
        assert "default-src 'self'" in page.headers["content-security-policy"]

        async def shown() -> bool:
            return browser.find_element(By.ID, "lot-name").text != "正在读取…"

        await eventually(shown, within=15, what="the lot")
        assert "畅泊演示停车场" in browser.find_element(By.ID, "lot-name").text
        tariff = browser.find_elements(By.CSS_SELECTOR, "#tariff li")
        assert tariff
        assert "元" in " ".join(t.text for t in tariff)
        assert browser.find_element(By.ID, "hours").text == "开放时间：全天24小时开放"
        assert browser.find_element(By.ID, "lot-where").text.startswith("赣州市章贡区文清路88号")
        _shot(browser, tmp_path, "1-code")

        await _log_in(browser, pipeline, PHONE)
        _shot(browser, tmp_path, "2-logged-in")
        # the cookie is scoped to /q/auth: ask the browser for all of its cookies
        every = browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
        cookies = {c["name"]: c for c in every}
        assert cookies["changbo_refresh"]["httpOnly"] is True
        assert cookies["changbo_refresh"]["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""  # nothing readable

        await _bind_verified(browser, pipeline, token_for, base, PHONE, PLATE)

        # The car entered 65 minutes ago at the demo lot's gate (over MQTT); the page
        # shows it with its fee so far.
        await _drive_at(pipeline, entry, DEMO, PLATE, at=datetime.now(UTC) - timedelta(minutes=65))

        async def inside() -> bool:
            return browser.execute_script("return document.body.dataset.sessions") == "1"

        await eventually(inside, within=20, what="the session on the page")
        listed = browser.find_element(By.CSS_SELECTOR, "#session-list li").text
        assert PLATE in listed
        assert "当前费用" in listed
        assert "0.00 元" not in listed  # 65 minutes is past the free time
        _shot(browser, tmp_path, "3-inside")

        # A reload keeps the login (the HttpOnly cookie), no token stored by the page.
        browser.refresh()

        async def logged_in() -> bool:
            return browser.execute_script("return document.body.dataset.loggedIn") == "yes"

        await eventually(logged_in, within=10, what="the login after a reload")
        assert browser.execute_script("return window.sessionStorage.length") == 0
        assert browser.execute_script("return window.localStorage.length") == 0

        # Pay now and leave (场内缴费): the stay is billed up to now and the page hands
        # over to the provider's cashier, then comes back to the receipt.
        browser.find_element(
            By.XPATH, "//ul[@id='session-list']/li//button[text()='立即缴费离场']"
        ).click()
        amount = await _pay_at_the_cashier(browser, tmp_path, "4-cashier", sandbox)
        assert "前离场" in browser.find_element(By.ID, "message").text
        receipt = await _receipt(browser)
        assert receipt["车牌"] == PLATE
        assert receipt["金额"] == amount.removeprefix("¥") + " 元"
        assert receipt["支付方式"] == "微信支付"
        _shot(browser, tmp_path, "5-prepaid")
        prepaid = await pipeline.conn.fetch(
            "SELECT id, status, amount_fen FROM bills WHERE plate = $1", PLATE
        )
        assert [(r["status"], f"¥{r['amount_fen'] / 100:.2f}") for r in prepaid] == [
            ("paid", amount)
        ]

        # The car leaves within the exit window: the barrier opens, nothing more is billed.
        command = await _drive_at(pipeline, leaving, DEMO, PLATE, "out")
        assert command is not None
        assert command["action"] == "open"

        async def closed() -> bool:
            status = await pipeline.fetchval(
                "SELECT status FROM sessions WHERE plate = $1 AND lot_id = $2", PLATE, DEMO
            )
            return status == "closed"

        await eventually(closed, within=30, what="the stay closed at the exit")
        after = await pipeline.conn.fetch(
            "SELECT id, status, amount_fen FROM bills WHERE plate = $1", PLATE
        )
        assert [tuple(r) for r in after] == [tuple(r) for r in prepaid]

        # The driver disputes the paid bill from the history.
        async def billed() -> bool:
            return bool(browser.find_elements(By.CSS_SELECTOR, "#history-list li[data-bill^='b-']"))

        await eventually(billed, within=30, what="the bill in the history")
        row = browser.find_element(By.CSS_SELECTOR, "#history-list li[data-bill^='b-']")
        bill_id = row.get_attribute("data-bill")
        row.find_element(By.XPATH, ".//button[text()='申诉']").click()
        browser.find_element(By.ID, "dispute-reason").send_keys("我只停了几分钟，收费不对")
        browser.find_element(By.CSS_SELECTOR, "#dispute-form button[type=submit]").click()

        async def disputed() -> bool:
            return "申诉已提交" in browser.find_element(By.ID, "message").text

        await eventually(disputed, within=10, what="the dispute")
        status = await pipeline.fetchval("SELECT status FROM bills WHERE id = $1", bill_id)
        assert status == "disputed"
        reason = await pipeline.fetchval("SELECT reason FROM disputes WHERE bill_id = $1", bill_id)
        assert reason == "我只停了几分钟，收费不对"
        _shot(browser, tmp_path, "6-disputed")

        _only_own_origin(_requests(browser), base, sandbox.base_url)
        print(f"screenshots: {tmp_path}")


async def test_forged_and_expired_codes_and_a_full_lot_say_what_happened(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    # a lot of one space, filled by a car through its gate over MQTT
    small = await _make_lot(pipeline, capacity=1, tag="T14")
    gate = await pipeline.add_gate("in1", lot=small)
    pipeline.gateway().start()
    await pipeline.subscribed()
    port = pipeline.settings.api_port + 7
    base = await pipeline.api(port, PARKING_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    keyring = keys.load_or_create(keys.path_in(pipeline.settings.stack_dir))
    prefix = logic.prefix_of(base)
    lot = logic.target(QrKind.LOT, DEMO)
    genuine = logic.sign(lot, keyring=keyring, now=datetime.now(UTC))
    forged = genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA") else "BBBB")
    expired = logic.sign(
        lot,
        keyring=keyring,
        now=datetime.now(UTC) - timedelta(days=2),
        expires_at=datetime.now(UTC) - timedelta(days=1),
    )
    with chromium(*PHONE_SIZE) as browser:
        for name, token, status, words in (
            ("forged", forged, 404, "无法识别的二维码"),
            ("expired", expired, 410, "二维码已过期"),
        ):
            async with httpx.AsyncClient(trust_env=False) as http:
                answer = await http.get(prefix + token)
            assert answer.status_code == status
            assert "default-src 'self'" in answer.headers["content-security-policy"]
            browser.get(prefix + token)
            assert browser.find_element(By.TAG_NAME, "h1").text == words
            assert "{" not in browser.find_element(By.TAG_NAME, "body").text
            _shot(browser, tmp_path, f"d-{name}")

        # The lot fills up: the page says so before anyone logs in.
        await _drive_at(pipeline, gate, small, "赣B14F01")
        browser.get(
            prefix
            + logic.sign(logic.target(QrKind.LOT, small), keyring=keyring, now=datetime.now(UTC))
        )

        async def full() -> bool:
            return browser.execute_script("return document.body.dataset.free") == "0"

        await eventually(full, within=15, what="the full lot")
        assert browser.find_element(By.ID, "free").text == "已满"
        assert "车位已满" in browser.find_element(By.ID, "free-label").text
        _shot(browser, tmp_path, "d-full")
    print(f"screenshots: {tmp_path}")


async def _drive_at(
    pipeline: Pipeline,
    gate: Device,
    lot_id: str,
    plate: str,
    direction: str = "in",
    seq: int = 1,
    at: datetime | None = None,
) -> dict[str, Any] | None:
    """One passage published as the gate of ``lot_id``; returns the lane's command once
    it got it (a passage ``at`` long ago gets none: the barrier opened long since)."""
    assert gate.lane_id is not None
    if at is not None:
        _pub(
            pipeline,
            gate,
            pipeline.topics.passages(lot_id, gate.lane_id),
            _passage(gate, seq, direction, plate, at),
        )
        return None
    watch = _watch(pipeline, gate, pipeline.topics.commands(lot_id, gate.lane_id))
    await _settle()
    _pub(
        pipeline,
        gate,
        pipeline.topics.passages(lot_id, gate.lane_id),
        _passage(gate, seq, direction, plate, datetime.now(UTC)),
    )
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    command: dict[str, Any] = json.loads(out)
    return command


async def _bind_verified(
    browser: Any, pipeline: Pipeline, token_for: Any, base: str, phone: str, plate: str
) -> None:
    """The driver adds ``plate`` on the page; an operator verifies it from its 行驶证 (the
    driver sees a verified plate's stays and bills only); the plate was theirs since
    yesterday (a driver of long standing)."""
    browser.find_element(By.ID, "plate").send_keys(plate)
    browser.find_element(By.CSS_SELECTOR, "#plate-form button").click()

    async def bound() -> bool:
        return plate in browser.find_element(By.ID, "plate-list").text

    await eventually(bound, within=10, what="the plate")
    account = await pipeline.fetchval("SELECT id FROM accounts WHERE phone = $1", "+86" + phone)
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
        evidence = {"evidence": "行驶证 360702141414", "photo_ref": "upload/xsz-14.jpg"}
        claim = await http.post(
            "/v1/me/plate-claims",
            json={"plate": plate, **evidence},
            headers={"Authorization": f"Bearer {token_for(Role.DRIVER, account)}"},
        )
        assert claim.status_code == 201, claim.text
        approved = await http.post(
            f"/v1/operator/plate-claims/{claim.json()['id']}/approve",
            json={},
            headers={"Authorization": f"Bearer {token_for(Role.OPERATOR, 'op', DEMO_COMPANY)}"},
        )
        assert approved.status_code == 200, approved.text
    await pipeline.conn.execute(
        "UPDATE vehicles SET bound_at = bound_at - interval '1 day' WHERE plate = $1", plate
    )


async def _contactless_on_and_off(
    browser: Any, pipeline: Pipeline, tmp_path: Path, sandbox: SandboxProcess, plate: str
) -> None:
    """无感支付 from the page: the provider's sign-in (WeChat 网页授权, silent), its
    authorising page (the sandbox's, for the 停车服务 mini program): declined once, then
    agreed (the mandate stored, the provider asked first), then turned off."""
    row = f"//ul[@id='plate-list']/li[@data-plate='{plate}']"

    async def at_authorising_page() -> bool:
        return browser.current_url.startswith(sandbox.base_url + "/sandbox/mandates/authorize")

    async def said(words: str) -> bool:
        here = browser.current_url.startswith("http://127.0.0.1") and "/q/" in browser.current_url
        return here and words in browser.find_element(By.ID, "message").text

    browser.find_element(By.XPATH, f"{row}//button[text()='开通无感支付']").click()
    await eventually(at_authorising_page, within=20, what="the provider's authorising page")
    assert browser.find_element(By.ID, "plate").text == plate
    browser.find_element(By.ID, "cancel").click()
    await eventually(lambda: said("未开通无感支付"), within=20, what="the page: declined")
    assert browser.find_element(By.XPATH, row).get_attribute("data-contactless") == "off"

    browser.find_element(By.XPATH, f"{row}//button[text()='开通无感支付']").click()
    await eventually(at_authorising_page, within=20, what="the provider's authorising page")
    _shot(browser, tmp_path, "14-contactless-authorise")
    browser.find_element(By.ID, "confirm").click()
    await eventually(lambda: said("无感支付已开通"), within=20, what="the page: contactless on")
    assert "?" not in browser.current_url

    async def on() -> bool:
        return browser.find_element(By.XPATH, row).get_attribute("data-contactless") == "on"

    await eventually(on, within=10, what="the plate shown with contactless on")
    mandate = await pipeline.conn.fetchrow(
        "SELECT state, payer_id FROM contactless_mandates WHERE plate = $1", plate
    )
    assert mandate is not None
    assert mandate["state"] == "active"
    assert mandate["payer_id"].startswith("oSbx")  # the openid the provider's sign-in gave
    _shot(browser, tmp_path, "15-contactless-on")

    browser.find_element(By.XPATH, f"{row}//button[text()='关闭']").click()
    await eventually(lambda: said("无感支付已关闭"), within=10, what="the page: contactless off")

    async def off() -> bool:
        # the page says so first, then reloads the plates
        return browser.find_element(By.XPATH, row).get_attribute("data-contactless") == "off"

    await eventually(off, within=10, what="the plate shown without contactless")
    state = await pipeline.fetchval(
        "SELECT state FROM contactless_mandates WHERE plate = $1", plate
    )
    assert state == "revoked"


async def _report_a_problem_here(browser: Any, pipeline: Pipeline, tmp_path: Path) -> None:
    """码上反映 starts here: the code's place, a kind of problem, the driver's words; the
    case is triaged (a blocked space: the lot's own staff) and listed on the page."""
    category = Select(browser.find_element(By.ID, "report-category"))
    category.select_by_value("gate_fault")
    assert not browser.find_element(By.ID, "report-plate").is_displayed()
    category.select_by_value("space_blocked")
    # a blocked space may name the car in it; a photo goes with the words
    browser.find_element(By.ID, "report-plate").send_keys("赣b·7p123")
    browser.find_element(By.ID, "report-text").send_keys("入口旁的车位被杂物占了")
    photo = tmp_path / "blocked.png"
    Image.new("RGB", (64, 48), (200, 80, 40)).save(photo)
    browser.find_element(By.ID, "report-photos").send_keys(str(photo))
    browser.find_element(By.CSS_SELECTOR, "#report-form button[type=submit]").click()

    async def reported() -> bool:
        return bool(browser.execute_script("return document.body.dataset.reported || ''"))

    await eventually(reported, within=10, what="the report")
    case_id = browser.execute_script("return document.body.dataset.reported")
    case = await pipeline.conn.fetchrow(
        "SELECT lot_id, category, level, holder, text, plate FROM cases WHERE id = $1", case_id
    )
    assert case is not None
    assert (case["lot_id"], case["category"], case["level"]) == (DEMO, "space_blocked", "small")
    assert case["plate"] == "赣B7P123"
    assert browser.execute_script("return document.body.dataset.photos") == "1"
    stored = await pipeline.conn.fetchrow(
        "SELECT content_type, kind FROM case_photos WHERE case_id = $1", case_id
    )
    assert stored is not None
    assert (stored["content_type"], stored["kind"]) == ("image/png", "report")
    assert case["holder"] == f"lot_staff:{DEMO}"
    assert case["text"] == "入口旁的车位被杂物占了"
    assert "30分钟内响应" in browser.find_element(By.ID, "message").text
    listed = browser.find_element(By.CSS_SELECTOR, f"#report-list li[data-report='{case_id}']")
    assert "已派单" in listed.text
    browser.execute_script("document.getElementById('report-list').scrollIntoView()")
    _shot(browser, tmp_path, "16-reported")


async def _log_in(browser: Any, pipeline: Pipeline, phone: str) -> None:
    browser.find_element(By.ID, "phone").send_keys(phone)
    browser.find_element(By.ID, "send-code").click()

    async def code_sent() -> bool:
        return await notifier.latest_code(pipeline.redis, "+86" + phone) is not None

    await eventually(code_sent, within=10, what="the OTP")
    code = await notifier.latest_code(pipeline.redis, "+86" + phone)
    assert code is not None
    browser.find_element(By.ID, "code").send_keys(code)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()

    async def logged_in() -> bool:
        return browser.execute_script("return document.body.dataset.loggedIn") == "yes"

    await eventually(logged_in, within=10, what="the login")


async def test_a_car_without_a_plate_scans_in_and_out_at_the_lanes_then_pays(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """(b) the entry lane's code opens the barrier (its MQTT command goes out), the exit
    lane's code closes the stay and opens the exit (先离后缴); the driver pays the bill at
    the provider's cashier and reads the receipt."""
    entry = await pipeline.add_gate("in1")
    leaving = await pipeline.add_gate("out1")
    pipeline.gateway().start()
    await pipeline.subscribed()
    async with _platform(pipeline, tmp_path, 8, 7) as (base, sandbox):
        await _in_and_out_without_a_plate(pipeline, tmp_path, base, sandbox, entry, leaving)


async def _in_and_out_without_a_plate(
    pipeline: Pipeline,
    tmp_path: Path,
    base: str,
    sandbox: SandboxProcess,
    entry: Device,
    leaving: Device,
) -> None:
    lane_in = await _code(pipeline, tmp_path, "--lane", "in1")
    lane_out = await _code(pipeline, tmp_path, "--lane", "out1")
    with chromium(*PHONE_SIZE, performance_log=True) as browser:
        browser.get(lane_in)

        async def shown() -> bool:
            return browser.find_element(By.ID, "place").text == "入口 in1"

        await eventually(shown, within=15, what="the entry lane")
        await _log_in(browser, pipeline, "13800000142")
        assert browser.find_element(By.ID, "action-title").text == "无牌车扫码入场"
        watch = _watch(pipeline, entry, pipeline.topics.commands(DEMO, "in1"))
        await _settle()
        browser.find_element(By.ID, "action-button").click()
        out, err = watch.communicate(timeout=40)
        assert watch.returncode == 0, err
        assert json.loads(out)["action"] == "open"

        async def opened() -> bool:
            return "道闸已开启" in browser.find_element(By.ID, "message").text

        await eventually(opened, within=10, what="the page to say the barrier opened")

        async def inside() -> bool:
            # the page says so first, then reloads the stays
            return browser.execute_script("return document.body.dataset.sessions") == "1"

        await eventually(inside, within=10, what="the stay on the page")
        assert "无牌车" in browser.find_element(By.ID, "session-list").text
        _shot(browser, tmp_path, "7-lane-in")
        # Two hours pass (moved, not waited for): the stay has a fee past the free time.
        moved = await pipeline.conn.execute(
            "UPDATE sessions SET entry_at = entry_at - interval '2 hours' "
            "WHERE lot_id = $1 AND status = 'open' AND plate IS NULL AND account_id = "
            "(SELECT id FROM accounts WHERE phone = $2)",
            DEMO,
            "+8613800000142",
        )
        assert moved == "UPDATE 1"

        browser.get(lane_out)  # still logged in: the HttpOnly cookie
        await eventually(
            lambda: _is(browser, "place", "出口 out1"), within=15, what="the exit lane"
        )

        async def back() -> bool:
            return browser.execute_script("return document.body.dataset.loggedIn") == "yes"

        await eventually(back, within=10, what="the login kept across pages")
        watch = _watch(pipeline, leaving, pipeline.topics.commands(DEMO, "out1"))
        await _settle()
        browser.find_element(By.ID, "action-button").click()
        out, err = watch.communicate(timeout=40)
        assert watch.returncode == 0, err
        assert json.loads(out)["action"] == "open"

        async def left() -> bool:
            return "一路顺风" in browser.find_element(By.ID, "message").text

        await eventually(left, within=10, what="the page to say the car may leave")

        async def gone() -> bool:
            # the page says so first, then reloads the stays
            return browser.execute_script("return document.body.dataset.sessions") == "0"

        await eventually(gone, within=10, what="the stay gone from the page")
        _shot(browser, tmp_path, "8-lane-out")

        # The bill is owed; the driver pays it at the provider's cashier: the receipt.
        async def owed() -> bool:
            return browser.find_element(By.ID, "pay-bills").is_displayed()

        await eventually(owed, within=15, what="the bill to pay")
        bill_id = browser.find_element(By.CSS_SELECTOR, "#bill-list li").get_attribute("data-bill")
        browser.find_element(By.ID, "pay-bills").click()
        amount = await _pay_at_the_cashier(browser, tmp_path, "9-lane-cashier", sandbox)
        assert "支付成功" in browser.find_element(By.ID, "message").text
        receipt = await _receipt(browser)
        assert receipt["车牌"] == "无牌车"
        assert receipt["票据号"] == bill_id
        assert receipt["金额"] == amount.removeprefix("¥") + " 元"
        assert browser.find_element(By.ID, "owed").text == "没有欠费，谢谢！"
        assert not browser.find_element(By.ID, "pay-bills").is_displayed()
        status = await pipeline.fetchval("SELECT status FROM bills WHERE id = $1", bill_id)
        assert status == "paid"
        _shot(browser, tmp_path, "10-lane-receipt")
        _only_own_origin(_requests(browser), base, sandbox.base_url)
    print(f"screenshots: {tmp_path}")


async def test_an_old_bill_from_another_lot_is_paid_from_the_same_page(
    pipeline: Pipeline, token_for: Any, tmp_path: Path
) -> None:
    """(c) the driver's car left another lot unpaid (先离后缴); standing at the demo lot,
    the page lists the city-wide bills and pays the old one at the provider's cashier."""
    other = await _make_lot(pipeline, tag="T14C")
    entry = await pipeline.add_gate("in1", lot=other)
    leaving = await pipeline.add_gate("out1", lot=other)
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    async with _platform(pipeline, tmp_path, 9, 8) as (base, sandbox):
        url = await _code(pipeline, tmp_path)
        plate, phone = "赣B14C01", "13800000143"
        with chromium(*PHONE_SIZE, performance_log=True) as browser:
            browser.get(url)
            await eventually(
                lambda: _is(browser, "hours", "开放时间：全天24小时开放"), within=15, what="the lot"
            )
            await _log_in(browser, pipeline, phone)
            await _bind_verified(browser, pipeline, token_for, base, phone, plate)
            # Three hours at the other lot, left without paying.
            await _drive_at(
                pipeline, entry, other, plate, at=datetime.now(UTC) - timedelta(hours=3)
            )

            async def inside() -> bool:
                return bool(
                    await pipeline.fetchval(
                        "SELECT count(*) FROM sessions WHERE plate = $1 AND status = 'open'", plate
                    )
                )

            await eventually(inside, within=30, what="the stay at the other lot")
            await _drive_at(pipeline, leaving, other, plate, "out")

            async def owed() -> bool:
                return browser.find_element(By.ID, "pay-bills").is_displayed()

            await eventually(owed, within=30, what="the other lot's bill on the page")
            row = browser.find_element(By.CSS_SELECTOR, "#bill-list li")
            assert other in row.text
            bill_id = row.get_attribute("data-bill")
            assert browser.find_element(By.ID, "lot-name").text.startswith("畅泊演示停车场")
            _shot(browser, tmp_path, "11-other-lot-owed")
            browser.find_element(By.ID, "pay-bills").click()
            amount = await _pay_at_the_cashier(browser, tmp_path, "12-other-lot-cashier", sandbox)
            receipt = await _receipt(browser)
            assert receipt["停车场"] == "测试停车场"
            assert receipt["车牌"] == plate
            assert receipt["金额"] == amount.removeprefix("¥") + " 元"
            assert browser.find_element(By.ID, "owed").text == "没有欠费，谢谢！"
            paid = await pipeline.conn.fetchrow(
                "SELECT status, lot_id FROM bills WHERE id = $1", bill_id
            )
            assert paid is not None
            assert tuple(paid) == ("paid", other)
            _shot(browser, tmp_path, "13-other-lot-receipt")
            await _contactless_on_and_off(browser, pipeline, tmp_path, sandbox, plate)
            await _report_a_problem_here(browser, pipeline, tmp_path)
            _only_own_origin(_requests(browser), base, sandbox.base_url)
    print(f"screenshots: {tmp_path}")


async def _is(browser: Any, element: str, text: str) -> bool:
    return bool(browser.find_element(By.ID, element).text == text)
