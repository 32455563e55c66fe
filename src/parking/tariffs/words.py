"""A tariff in words, for a driver reading the sign or the page (Chinese, pure)."""

from __future__ import annotations

from parking.tariffs.model import Band, Cap, FreeRemainder, NevPolicy, Tariff, day_entry

_DAY_TYPE_WORDS = {"workday": "工作日", "rest_day": "休息日", "holiday": "节假日"}


def yuan(fen: int) -> str:
    """300 -> ``3``, 150 -> ``1.5``, 5 -> ``0.05``."""
    whole, cents = divmod(fen, 100)
    if cents == 0:
        return str(whole)
    return f"{whole}.{cents:02d}".rstrip("0")


def _minutes(minutes: int) -> str:
    if minutes % 60 == 0:
        return f"{minutes // 60}小时"
    return f"{minutes}分钟"


def _band(band: Band) -> str:
    span = "全天" if band.start == band.end else f"{band.start}–{band.end}"
    if band.flat is not None:
        text = f"每次{yuan(band.flat)}元"
    else:
        tiers = band.tiers or ()
        parts = []
        for i, tier in enumerate(tiers):
            unit = "小时" if tier.unit_minutes == 60 else _minutes(tier.unit_minutes)
            price = f"每{unit}{yuan(tier.unit_fen)}元"
            following = tiers[i + 1] if i + 1 < len(tiers) else None
            if following is None:
                parts.append(price if i == 0 else f"之后{price}")
            elif i == 0:
                parts.append(f"前{_minutes(following.after_minutes)}{price}")
            else:
                span_text = f"{_minutes(tier.after_minutes)}至{_minutes(following.after_minutes)}"
                parts.append(f"{span_text}{price}")
        text = "，".join(parts)
        if band.partial_unit == "free":
            text += "（不足一个计费单位不收费）"
        elif isinstance(band.partial_unit, FreeRemainder):
            minutes = band.partial_unit.free_up_to_minutes
            text += f"（最后不足一个计费单位且不超过{_minutes(minutes)}的部分不收费）"
    if band.segment_cap_fen is not None:
        text += f"，本时段最高{yuan(band.segment_cap_fen)}元"
    if span == "全天" and band.name.lower() in ("all-day", "all day", "全天"):
        label = "全天"
    else:
        label = band.name if band.name == span else f"{band.name}（{span}）"
    return f"{label}：{text}"


def _days(entries: tuple[str, ...]) -> str:
    words = []
    for entry in entries:
        rule = day_entry(entry)
        if isinstance(rule, tuple):
            first, last = rule
            words.append(first.isoformat() if first == last else f"{first}至{last}")
        elif rule is not None:
            words.append(_DAY_TYPE_WORDS[rule])
    return "、".join(words)


def _cap(cap: Cap) -> str | None:
    amounts = cap.amounts
    if not amounts:
        return None
    if cap.cycle == "daily":
        reset = cap.reset_at or "00:00"
        if len(amounts) == 1:
            return f"每日（{reset}起）最高收费{yuan(amounts[0])}元"
        rising = [f"第{n}日最高收费{yuan(fen)}元" for n, fen in enumerate(amounts[:-1], start=1)]
        return f"按日（{reset}起）计：{'，'.join(rising)}，之后每日最高收费{yuan(amounts[-1])}元"
    if len(amounts) == 1:
        return f"每24小时最高收费{yuan(amounts[0])}元"
    rising = [f"第{n}个24小时最高收费{yuan(fen)}元" for n, fen in enumerate(amounts[:-1], start=1)]
    return f"{'，'.join(rising)}，之后每24小时最高收费{yuan(amounts[-1])}元"


def _restart(tariff: Tariff) -> str | None:
    if tariff.restart == "segment":
        return "每个时段重新按首段价格计费"
    if tariff.restart == "cycle" and tariff.cap is not None:
        if tariff.cap.cycle == "daily":
            return f"每日（{tariff.cap.reset_at or '00:00'}起）重新按首段价格计费"
        return "每满24小时重新按首段价格计费"
    return None


def _prices(tariff: Tariff) -> list[str]:
    """Free time, bands (per schedule), the tier restart and the cap."""
    lines = []
    if tariff.grace is not None and tariff.grace.minutes > 0:
        rule = "超时后扣除免费时长计费" if tariff.grace.deductible else "超时从入场起计费"
        lines.append(f"免费停车{_minutes(tariff.grace.minutes)}，{rule}")
    schedules = tariff.day_schedules
    if schedules is None:
        lines.extend(_band(band) for band in tariff.bands)
    else:
        for schedule in schedules:
            label = _days(schedule.days)
            lines.extend(f"【{label}】{_band(band)}" for band in schedule.bands)
    restart = _restart(tariff)
    if restart is not None:
        lines.append(restart)
    if tariff.cap is not None and (cap := _cap(tariff.cap)) is not None:
        lines.append(cap)
    return lines


def _nev(policy: NevPolicy) -> list[str]:
    parts = []
    if isinstance(policy.daily_grace, tuple):
        for n, grace in enumerate(policy.daily_grace, start=1):
            rule = "，超时后扣除免费时长计费" if grace.deductible else ""
            parts.append(f"当日第{n}次停车免费{_minutes(grace.minutes)}{rule}")
        if policy.grace_minutes is not None:
            later = f"免费{_minutes(policy.grace_minutes)}" if policy.grace_minutes else "不免费"
            parts.append(f"之后每次{later}")
    elif policy.grace_minutes:
        parts.append(f"免费停车{_minutes(policy.grace_minutes)}")
    if policy.percent < 100:
        discount = policy.percent / 10
        parts.append(f"按{discount:g}折收费" if policy.percent else "免费")
    lines = ["新能源车：" + "，".join(parts)] if parts else []
    if isinstance(policy.tariff, Tariff):
        lines.extend(
            f"新能源车按「{policy.tariff.name}」：{line}" for line in _prices(policy.tariff)
        )
    return lines


def describe(tariff: Tariff) -> list[str]:
    """The tariff as short sentences: free time, each band's prices, the cap, new-energy cars."""
    lines = _prices(tariff)
    if tariff.nev is not None:
        lines.extend(_nev(tariff.nev))
    return lines
