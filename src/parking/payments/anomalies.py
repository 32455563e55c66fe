"""Payment anomalies finance staff review: the list and the resolution (the refund
out of suspense is in ``refunds``).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking.payments import store
from parking.payments.model import (
    Anomaly,
    AnomalyStatus,
    UnknownAnomaly,
)
from parking.payments.txn import remark_text


async def anomalies(
    conn: asyncpg.Connection, *, status: AnomalyStatus | None = AnomalyStatus.OPEN, limit: int = 100
) -> list[Anomaly]:
    """Newest first."""
    return await store.anomalies(conn, status=status, limit=limit)


async def resolve_anomaly(
    conn: asyncpg.Connection, anomaly_id: str, *, by: str, remark: str, now: datetime
) -> Anomaly:
    """A person looked at it and says why it is settled. Audited. In the caller's transaction."""
    remark = remark_text(remark)
    found = await store.anomaly(conn, anomaly_id, lock=True)
    if found is None:
        raise UnknownAnomaly(anomaly_id)
    if found.status is AnomalyStatus.OPEN:
        await store.resolve_anomaly(conn, anomaly_id, by=by, remark=remark, now=now)
        await store.audit(
            conn,
            at=now,
            actor=by,
            role="finance",
            action="payment_anomaly.resolved",
            target=f"payment_anomaly:{anomaly_id}",
            details={"remark": remark, "kind": found.kind.value},
        )
    resolved = await store.anomaly(conn, anomaly_id)
    assert resolved is not None
    return resolved
