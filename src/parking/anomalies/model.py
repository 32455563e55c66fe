"""The review queue's types: an anomaly as operators see it, and their resolution."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from parking.errors import Conflict, NotFound
from parking.occupancy.model import CoreUnreachable as CoreUnreachable

_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
Remark = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=_PRINTABLE)]
PlateText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class AnomalyNotFound(NotFound):
    pass


class AnomalyResolved(Conflict):
    """The anomaly was resolved already."""


class AnomalyView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    lot_id: str | None
    device_id: str | None
    plate: str | None
    session_id: str | None
    image_ref: str | None
    details: msgspec.Raw
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None


class Resolution(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``fix-plate`` (with ``plate``: the plate the camera misread) sets the session's plate;
    ``add-missed-exit`` (with ``exit_at``) closes the session left open and prices it;
    ``void`` voids the session (no fee); ``confirm-fee`` confirms the bill of a stay past
    the lot's review limits (a ``fee_review`` anomaly: until then it is never deducted
    contactlessly nor shown on the lane as owed). Every action needs a remark."""

    action: Literal["fix-plate", "add-missed-exit", "void", "confirm-fee"]
    remark: Remark
    plate: PlateText | None = None
    exit_at: datetime | None = None
