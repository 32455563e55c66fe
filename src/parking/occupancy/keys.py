"""The occupancy core's Redis key schema.

Redis Cluster runs a script only on keys of one hash slot, so every key carries
a hash tag, and each Redis function call touches keys of one tag only.

Lot shards: a lot belongs to shard ``crc32(lot_id) % LOT_SHARDS``, tag ``{oN}``.
All keys of a lot, of the devices installed in it, and the shard's
applied-events stream share that tag, so applying a gate or sensor event is one
single-slot call, and the persister reads one stream per shard (XREADGROUP
cannot span slots on a Cluster). 16 shards spread the city over a 3-node
Cluster; more would only multiply the persister's reads.

===========================  =====  ==================================================
key                          type   content
===========================  =====  ==================================================
``{oN}:ready``               str    rebuild generation; absent = shard not loaded, every
                                    call refuses (NOTREADY) so nothing is decided on
                                    empty state
``{oN}:lot:<lot>``           hash   ``capacity``, ``kind`` (gated|on_street),
                                    ``sessions`` (open sessions), ``occupied``
                                    (occupied spaces)
``{oN}:sess:<lot>``          hash   plate -> ``<session_id>|<entry_ms>|<device>|<seq>``:
                                    the lot's open sessions; an unplated car let in by
                                    a driver's scan is ``acct:<account>`` ->
                                    ``<session_id>|<entry_ms>|account:<account>|0``
``{oN}:paid:<lot>:<plate>``  str    ``<session_id>|<billed_fen>|<leave_by_ms or 0>``:
                                    what the plate's session paid in the lot (the exit
                                    lane's display); expires after two days
``{oN}:gone:<lot>``          hash   plate -> ``<session_id>|<exit_ms>|<device>|<seq>``: the
                                    lot's recent exits without an entry read, for an
                                    entry that arrives after its exit (its camera's
                                    backlog) to complete; entries past
                                    ``Tuning.late_entry_within`` are dropped as it grows
``{oN}:spaces:<lot>``        hash   space -> ``<0|1>|<seq>|<observed_ms>|<flap window
                                    start ms>|<changes in window>|<device>``
``{oN}:dev:<device>``        hash   ``hw`` contiguous high-water seq applied here,
                                    ``max`` highest seq applied, ``wm`` watermark the
                                    persister has stored in PostgreSQL, ``online``,
                                    ``firmware``, ``status_ms``
``{oN}:devx:<device>``       set    applied seqs above ``hw`` (only while a gap is open)
``{oN}:seen``                zset   device -> last time heard (ms), for silence checks; a
                                    device reported silent leaves it until heard again
``{oN}:cmd``                 hash   command_id -> ``<expires_ms>|<topic>|<payload>``:
                                    commands not yet acknowledged by the gate
``{oN}:cmdq``                zset   command_id -> next re-send time (ms)
``{oN}:cmdlane``             hash   command topic (one per lane) -> ``<command_id>|<re-sends
                                    so far>|<stale_ms>``: the lane's newest pending
                                    command, the only one re-sent (an older one is
                                    dropped when a newer passage of the lane queues its
                                    own); gone on its ack or drop
``{oN}:out``                 hash   ``<device>:<seq>`` -> follow-ups of an applied gate
                                    event still to run in plate shards / other lots
                                    (``<kind>|<plate>|<session>|<at_ms>|<lot>|<made_ms>``)
``{oN}:events``              stream applied events for the persister (group
                                    ``persisters``)
``{oN}:clk:<device>``        list   the device's recent clock offset samples (ms,
                                    ``sent_at - received_at``), newest first; not
                                    rebuilt (the next messages refill it)
===========================  =====  ==================================================

Plate shards: a plate's city-wide entry lives in shard
``crc32(plate) % PLATE_SHARDS``, tag ``{pN}``.

===========================  =====  ==================================================
``{pN}:ready``               str    as for lot shards
``{pN}:plate:<plate>``       hash   the open session: ``sid``, ``lot``, ``at`` (entry
                                    ms), ``op`` (``<device>:<seq>`` that set it),
                                    ``prev_sid``/``prev_lot`` (what it replaced),
                                    ``mark`` (latest entry/exit time seen, ms: older
                                    claims lose); flags for the entry decision:
                                    ``bl`` (blacklisted: reason), ``arrears`` (ms since
                                    the oldest unpaid bill), ``pass:<scope>`` (scope: a
                                    lot id or lot group id; ``<from_ms>|<until_ms>|<pass
                                    id>``)
``{pN}:flagged``             set    plates of the shard that have any flag
===========================  =====  ==================================================

Gateway statistics, outside the shards:

===========================  =====  ==================================================
``{stats}:lanelat:<hour>``   hash   lane decision latency histogram of one UTC hour
                                    (``<hour>``: epoch seconds): bucket index -> count;
                                    kept three days, read by the city's rollup job
===========================  =====  ==================================================

Plates are normalised (``parking.plates.normalise``) before they become keys.
"""

from __future__ import annotations

import functools
import zlib
from typing import Final

LOT_SHARDS: Final = 16
PLATE_SHARDS: Final = 16
#: Consumer group of the persisters on every shard stream.
GROUP: Final = "persisters"


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@functools.lru_cache(maxsize=4096)
def lot_tag(lot_id: str) -> str:
    return f"{{o{_crc(lot_id) % LOT_SHARDS}}}"


@functools.lru_cache(maxsize=65536)
def plate_tag(plate: str) -> str:
    return f"{{p{_crc(plate) % PLATE_SHARDS}}}"


def lot_shard(lot_id: str) -> int:
    return _crc(lot_id) % LOT_SHARDS


def shard_tag(shard: int) -> str:
    return f"{{o{shard}}}"


def plate_shard_tag(shard: int) -> str:
    return f"{{p{shard}}}"


def lane_latency(hour_epoch_s: int) -> str:
    return f"{{stats}}:lanelat:{hour_epoch_s}"


def all_lot_tags() -> list[str]:
    return [shard_tag(n) for n in range(LOT_SHARDS)]


def all_plate_tags() -> list[str]:
    return [plate_shard_tag(n) for n in range(PLATE_SHARDS)]


def ready(tag: str) -> str:
    return f"{tag}:ready"


def lot(tag: str, lot_id: str) -> str:
    return f"{tag}:lot:{lot_id}"


def sessions(tag: str, lot_id: str) -> str:
    return f"{tag}:sess:{lot_id}"


def gone(tag: str, lot_id: str) -> str:
    return f"{tag}:gone:{lot_id}"


def spaces(tag: str, lot_id: str) -> str:
    return f"{tag}:spaces:{lot_id}"


def device(tag: str, device_id: str) -> str:
    return f"{tag}:dev:{device_id}"


def device_above(tag: str, device_id: str) -> str:
    return f"{tag}:devx:{device_id}"


def clock(tag: str, device_id: str) -> str:
    return f"{tag}:clk:{device_id}"


def seen(tag: str) -> str:
    return f"{tag}:seen"


def commands(tag: str) -> str:
    return f"{tag}:cmd"


def command_queue(tag: str) -> str:
    return f"{tag}:cmdq"


def command_lanes(tag: str) -> str:
    return f"{tag}:cmdlane"


def followups(tag: str) -> str:
    return f"{tag}:out"


def events(tag: str) -> str:
    return f"{tag}:events"


def plate(tag: str, plate_text: str) -> str:
    return f"{tag}:plate:{plate_text}"


def tag_of_events(stream_key: str) -> str:
    """``{o3}:events`` -> ``{o3}``."""
    return stream_key.split(":", 1)[0]


# Key lists per function, in the order the Lua library expects them.


def passage_keys(lot_id: str, device_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [
        ready(t),
        lot(t, lot_id),
        sessions(t, lot_id),
        device(t, device_id),
        device_above(t, device_id),
        events(t),
        seen(t),
        commands(t),
        command_queue(t),
        followups(t),
        command_lanes(t),
        gone(t, lot_id),
    ]


def space_keys(lot_id: str, device_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [
        ready(t),
        lot(t, lot_id),
        spaces(t, lot_id),
        device(t, device_id),
        device_above(t, device_id),
        events(t),
        seen(t),
    ]


def dead_keys(tag: str, device_id: str | None) -> list[str]:
    base = [ready(tag), events(tag)]
    if device_id is None:
        return base
    return [*base, device(tag, device_id), device_above(tag, device_id), seen(tag)]


def status_keys(lot_id: str, device_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [ready(t), device(t, device_id), events(t), seen(t)]


def ack_keys(lot_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [ready(t), commands(t), command_queue(t), events(t), command_lanes(t)]


def due_keys(tag: str) -> list[str]:
    return [ready(tag), commands(tag), command_queue(tag), events(tag), command_lanes(tag)]


def supersede_keys(lot_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [ready(t), lot(t, lot_id), sessions(t, lot_id), events(t), followups(t)]


def silence_keys(tag: str) -> list[str]:
    return [ready(tag), seen(tag), events(tag)]


def account_keys(lot_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [ready(t), lot(t, lot_id), sessions(t, lot_id)]


def account_field(account_id: str) -> str:
    """The sessions-hash field of an unplated car let in by this account's scan."""
    return f"acct:{account_id}"


def prepaid(lot_id: str, plate_text: str) -> str:
    return f"{lot_tag(lot_id)}:paid:{lot_id}:{plate_text}"


def lot_sync_keys(lot_id: str) -> list[str]:
    t = lot_tag(lot_id)
    return [ready(t), lot(t, lot_id)]


def flagged(tag: str) -> str:
    return f"{tag}:flagged"


def plate_keys(plate_text: str) -> list[str]:
    t = plate_tag(plate_text)
    return [ready(t), plate(t, plate_text)]


def plate_flag_keys(plate_text: str) -> list[str]:
    t = plate_tag(plate_text)
    return [ready(t), plate(t, plate_text), flagged(t)]
