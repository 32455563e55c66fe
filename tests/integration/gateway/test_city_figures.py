"""City management's figures now (GET /v1/city/...), checked against ground truth this test
computes itself: the cars it drove through the lanes over MQTT (real gates, the real
gateway) and the seeded city's plan (parking.seed.city.build), never the same SQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import datex2_shape
import httpx
from kits import Client
from pipekit import DEMO, Device, Pipeline, eventually
from test_gateway_walkthrough import _pub, _settle, _watch

from parking.auth.model import Role
from parking.seed import city as plan

PLATES = ("赣B7C1T1", "赣B7C1T2", "赣B7C1T3")


async def _drive(pipe: Pipeline, gate: Device, seq: int, plate: str, direction: str) -> None:
    """One passage published as the gate; returns once the lane got its command."""
    assert gate.lane_id is not None
    at = datetime.now(UTC) - timedelta(seconds=30 - seq)
    watch = _watch(pipe, gate, pipe.topics.commands(DEMO, gate.lane_id))
    await _settle()
    payload = {
        "device_id": gate.device_id,
        "seq": seq,
        "observed_at": at.isoformat(),
        "direction": direction,
        "plate": plate,
        "plate_color": "blue",
        "confidence": 0.97,
        "image_ref": f"gz-demo-01/{gate.lane_id}/{seq}.jpg",
    }
    _pub(
        pipe,
        gate,
        pipe.topics.passages(DEMO, gate.lane_id),
        json.dumps(payload, ensure_ascii=False),
    )
    _, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err


async def test_the_city_figures_follow_cars_through_the_lanes(
    pipeline: Pipeline, api: Client, token_for: Any
) -> None:
    entry = await pipeline.add_gate("in1")
    exit_gate = await pipeline.add_gate("out1")
    pipeline.gateway().start()
    await pipeline.subscribed()
    for seq, plate in enumerate(PLATES, start=1):
        await _drive(pipeline, entry, seq, plate, "in")
    await _drive(pipeline, exit_gate, 1, PLATES[0], "out")
    inside = len(PLATES) - 1

    lots = plan.build(pipeline.settings.city_seed)
    by_district = Counter[str]()
    for planned in lots:
        by_district[planned.lot.district_code] += planned.lot.capacity
    demo = next(p.lot for p in lots if p.id == DEMO)
    city_staff = {"Authorization": f"Bearer {token_for(Role.CITY, 'zhao.city')}"}

    async def counted() -> bool:
        got = await api.get("/v1/city/lots/" + DEMO, headers=city_staff)
        return got.status_code == 200 and got.json()["occupied"] == inside

    await eventually(counted, within=10, what="the lot's count")
    lot = (await api.get("/v1/city/lots/" + DEMO, headers=city_staff)).json()
    assert (lot["capacity"], lot["occupied"], lot["free"], lot["full"], lot["live"]) == (
        plan.DEMO_CAPACITY,
        inside,
        plan.DEMO_CAPACITY - inside,
        False,
        True,
    )
    assert lot["occupancy_pct"] == round(100 * inside / plan.DEMO_CAPACITY, 1)

    overview = (await api.get("/v1/city/overview", headers=city_staff)).json()
    assert {k: overview[k] for k in ("lots", "capacity", "occupied", "free", "full_lots")} == {
        "lots": plan.TOTAL_LOTS,
        "capacity": plan.TOTAL_SPACES,
        "occupied": inside,
        "free": plan.TOTAL_SPACES - inside,
        "full_lots": 0,
    }
    assert overview["open_sessions"] == inside
    assert overview["lots_not_live"] == 0
    assert overview["districts"] == len(by_district)

    districts = {
        d["code"]: d
        for d in (await api.get("/v1/city/districts", headers=city_staff)).json()["items"]
    }
    assert {code: d["capacity"] for code, d in districts.items()} == dict(by_district)
    home = districts[demo.district_code]
    assert (home["occupied"], home["free"]) == (inside, by_district[demo.district_code] - inside)
    assert sum(d["occupied"] for d in districts.values()) == inside

    fullest = await api.get(
        "/v1/city/lots",
        params={"district": demo.district_code, "sort": "fullest"},
        headers=city_staff,
    )
    items = fullest.json()["items"]
    assert items[0]["lot_id"] == DEMO
    assert {i["district_code"] for i in items} == {demo.district_code}
    assert len(items) == sum(1 for p in lots if p.lot.district_code == demo.district_code)

    # an operator of another company sees its own lots only; the demo lot is a 404
    county = {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'sun.op', company='gz-county')}"}
    theirs = (await api.get("/v1/city/overview", headers=county)).json()
    assert theirs["capacity"] == sum(
        p.lot.capacity for p in lots if p.lot.company_id == "gz-county"
    )
    assert theirs["occupied"] == 0
    assert (await api.get("/v1/city/lots/" + DEMO, headers=county)).status_code == 404
    # a driver is not city management
    driver = {"Authorization": f"Bearer {token_for(Role.DRIVER, 'acc-1')}"}
    assert (await api.get("/v1/city/overview", headers=driver)).status_code == 403

    # open data, no login: the same lot's free spaces, every other lot empty, no plate
    public = await api.get("/open/v1/availability")
    assert public.status_code == 200, public.text
    sites = {s["uid"]: s for s in public.json()["items"]}
    assert public.json()["total_count"] == plan.TOTAL_LOTS == len(sites)
    assert sites[DEMO]["realtime_free_capacity"] == plan.DEMO_CAPACITY - inside
    assert sites[DEMO]["realtime_opening_status"] == "OPEN"
    assert {uid: s["realtime_free_capacity"] for uid, s in sites.items() if uid != DEMO} == {
        p.id: p.lot.capacity for p in lots if p.id != DEMO
    }
    assert not any(plate in public.text for plate in PLATES)
    assert public.headers["RateLimit-Limit"]
    unchanged = await api.get(
        "/open/v1/availability", headers={"If-None-Match": public.headers["ETag"]}
    )
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    static = await api.get("/open/v1/lots")
    assert static.status_code == 200
    assert static.headers["Last-Modified"].endswith("GMT")
    by_uid = {s["uid"]: s for s in static.json()["items"]}
    assert {uid: (s["capacity"], s["lat"], s["lon"]) for uid, s in by_uid.items()} == {
        p.id: (p.lot.capacity, p.lot.latitude, p.lot.longitude) for p in lots
    }
    assert by_uid[DEMO]["type"] == "CAR_PARK"
    assert {s["type"] for s in by_uid.values()} == {"CAR_PARK", "ON_STREET"}
    assert set(by_uid[DEMO]) == {
        "uid",
        "name",
        "lat",
        "lon",
        "capacity",
        "purpose",
        "type",
        "operator_name",
        "address",
        "has_fee",
        "has_realtime_data",
    }
    assert by_uid[DEMO]["address"] == "赣州市章贡区文清路88号"

    # the same as DATEX II v3 Parking Publications, in the structure the schema requires
    sites_xml = await api.get("/open/datex2/parking-sites")
    assert sites_xml.status_code == 200, sites_xml.text
    assert sites_xml.headers["content-type"].startswith("application/xml")
    root, problems = datex2_shape.check_payload(sites_xml.content)
    assert problems == []
    records = {r.get("id"): r for r in root.iter(datex2_shape.q("prk:parkingRecord"))}
    assert {
        uid: int(r.findtext(datex2_shape.q("prk:parkingNumberOfSpaces")) or -1)
        for uid, r in records.items()
    } == {p.id: p.lot.capacity for p in lots}
    status_xml = await api.get("/open/datex2/parking-status")
    root, problems = datex2_shape.check_payload(status_xml.content)
    assert problems == []
    counted = {
        s.find(datex2_shape.q("prk:parkingRecordReference")).get("id"): s  # type: ignore[union-attr]
        for s in root.iter(datex2_shape.q("prk:parkingRecordStatus"))
    }
    assert set(counted) == set(records)
    demo_status = counted[DEMO]
    occupancy = demo_status.find(datex2_shape.q("prk:parkingOccupancy"))
    assert occupancy is not None
    assert occupancy.findtext(datex2_shape.q("prk:parkingNumberOfVacantSpaces")) == str(
        plan.DEMO_CAPACITY - inside
    )
    assert occupancy.findtext(datex2_shape.q("prk:parkingNumberOfOccupiedSpaces")) == str(inside)
    assert not any(plate.encode() in status_xml.content for plate in PLATES)
    again = await api.get(
        "/open/datex2/parking-status", headers={"If-None-Match": status_xml.headers["ETag"]}
    )
    assert again.status_code == 304
    # the answer names its own time; the same counts a second later are the same answer
    assert status_xml.headers["ETag"].startswith('W/"')
    await asyncio.sleep(1.1)
    later = await api.get(
        "/open/datex2/parking-status", headers={"If-None-Match": status_xml.headers["ETag"]}
    )
    assert later.status_code == 304
    sites_again = await api.get(
        "/open/datex2/parking-sites", headers={"If-None-Match": sites_xml.headers["ETag"]}
    )
    assert sites_again.status_code == 304


def test_the_structure_check_refuses_a_document_the_schema_would() -> None:
    """The checker above can fail: a payload without its creator, a site without its
    place and an unknown enum value are each reported."""
    good = (
        b'<d2:payload xmlns:d2="http://datex2.eu/schema/3/d2Payload" '
        b'xmlns:com="http://datex2.eu/schema/3/common" '
        b'xmlns:prk="http://datex2.eu/schema/3/parking" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        b'xsi:type="prk:ParkingTablePublication" lang="zh" modelBaseVersion="3">'
        b"<com:publicationTime>2026-12-04T10:00:00+08:00</com:publicationTime>"
        b"<com:publicationCreator><com:country>cn</com:country>"
        b"<com:nationalIdentifier>x</com:nationalIdentifier></com:publicationCreator>"
        b'<prk:parkingTable id="t" version="1">'
        b'<prk:parkingRecord xsi:type="prk:UrbanParkingSite" id="L1" version="1">'
        b'<prk:parkingName><com:values><com:value lang="zh">L</com:value></com:values>'
        b"</prk:parkingName>"
        b"<prk:parkingRecordVersionTime>2026-12-04T10:00:00+08:00</prk:parkingRecordVersionTime>"
        b'<prk:parkingLocation xsi:type="loc:PointLocation" '
        b'xmlns:loc="http://datex2.eu/schema/3/locationReferencing"/>'
        b"<prk:urbanParkingSiteType>onStreetParking</prk:urbanParkingSiteType>"
        b"</prk:parkingRecord></prk:parkingTable></d2:payload>"
    )
    assert datex2_shape.check_payload(good)[1] == []
    no_creator = good.replace(
        b"<com:publicationCreator><com:country>cn</com:country>"
        b"<com:nationalIdentifier>x</com:nationalIdentifier></com:publicationCreator>",
        b"",
    )
    assert any("publicationCreator" in p for p in datex2_shape.check_payload(no_creator)[1])
    nowhere = good.replace(
        b'<prk:parkingLocation xsi:type="loc:PointLocation" '
        b'xmlns:loc="http://datex2.eu/schema/3/locationReferencing"/>',
        b"",
    )
    assert any("parkingLocation" in p for p in datex2_shape.check_payload(nowhere)[1])
    odd = good.replace(b"onStreetParking", b"rooftop")
    assert any("rooftop" in p for p in datex2_shape.check_payload(odd)[1])


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of a Server-Sent Events stream."""
    event, data = "message", []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def test_the_city_stream_shows_a_cars_entry_within_seconds(
    pipeline: Pipeline, token_for: Any
) -> None:
    """A real API process; the stream read over TCP as a browser's EventSource would."""
    entry = await pipeline.add_gate("in1")
    pipeline.gateway().start()
    await pipeline.subscribed()
    base = await pipeline.api(pipeline.settings.api_port + 3)
    city_staff = {"Authorization": f"Bearer {token_for(Role.CITY, 'zhao.city')}"}
    async with (
        httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http,
        http.stream("GET", "/v1/city/stream", headers=city_staff) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.aiter_lines())
        kind, data = await anext(events)
        assert kind == "snapshot"
        snapshot = {lot["lot_id"]: lot for lot in json.loads(data)}
        assert len(snapshot) == plan.TOTAL_LOTS
        assert snapshot[DEMO]["occupied"] == 0
        await _drive(pipeline, entry, 1, PLATES[0], "in")
        entered = time.monotonic()
        async for kind, data in events:
            if kind == "lots":
                moved = {lot["lot_id"]: lot for lot in json.loads(data)}
                if DEMO in moved:
                    assert moved[DEMO]["occupied"] == 1
                    assert set(moved) == {DEMO}
                    break
            assert time.monotonic() - entered < 5, "no change within 5 s"
        kind, data = await anext(events)
        assert kind == "overview"
        assert json.loads(data)["occupied"] == 1
