"""Opening a Hikvision camera's barrier: ``PUT /ISAPI/Parking/channels/1/barrierGate``.

The camera answers with an ISAPI ``ResponseStatus``; ``statusCode`` 1 is OK. A camera
that is not in platform-control mode (``EntranceParam.ctrlMod`` 1) answers 200 with
another status code and its relay does not move (field notes §1.2), so only 200 *and*
status 1 count as done. The camera must be reachable from the adapter (a LAN adapter
per car park, or a VPN): docs/cameras.md.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Final

import httpx

from gateways.cameras.hikvision import BARRIER_OPEN, BARRIER_PATH

#: A call that has not answered in this long is given up: the driver is waiting at the
#: barrier, and one retry still fits in the few seconds before they press the intercom.
TIMEOUT_S: Final = 2.5
ATTEMPTS: Final = 2
_STATUS: Final = re.compile(rb"<statusCode>\s*(\d+)\s*</statusCode>")


@dataclass(frozen=True, slots=True)
class BarrierResult:
    done: bool
    #: why not, for the command's ack and the log (never the URL's credentials)
    detail: str


class Isapi:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_S, trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def open_barrier(self, control_url: str, user: str, password: str) -> BarrierResult:
        url = control_url.rstrip("/") + BARRIER_PATH
        detail = "not tried"
        for attempt in range(ATTEMPTS):
            try:
                response = await self._client.put(
                    url,
                    content=BARRIER_OPEN,
                    headers={"Content-Type": "application/xml"},
                    auth=httpx.DigestAuth(user, password),
                )
            except httpx.HTTPError as error:
                detail = f"{type(error).__name__}"
            else:
                status = _STATUS.search(response.content)
                if response.status_code == 200 and (status is None or status.group(1) == b"1"):
                    return BarrierResult(True, "ok")
                code = status.group(1).decode() if status else "-"
                detail = f"HTTP {response.status_code}, statusCode {code}"
                if response.status_code in (401, 403):
                    break  # wrong credentials: a retry changes nothing
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(0.2)
        return BarrierResult(False, detail)
