"""A tariff in words, for a driver reading the sign or the page (Chinese, pure)."""

from __future__ import annotations

from parking.tariffs.model import Band, Tariff


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
    if band.segment_cap_fen is not None:
        text += f"，本时段最高{yuan(band.segment_cap_fen)}元"
    if span == "全天" and band.name.lower() in ("all-day", "all day", "全天"):
        label = "全天"
    else:
        label = band.name if band.name == span else f"{band.name}（{span}）"
    return f"{label}：{text}"


def describe(tariff: Tariff) -> list[str]:
    """The tariff as short sentences: free time, each band's prices, the cap, new-energy cars."""
    lines = []
    if tariff.grace is not None and tariff.grace.minutes > 0:
        rule = "超时后扣除免费时长计费" if tariff.grace.deductible else "超时从入场起计费"
        lines.append(f"免费停车{_minutes(tariff.grace.minutes)}，{rule}")
    lines.extend(_band(band) for band in tariff.bands)
    if tariff.cap is not None:
        if tariff.cap.cycle == "daily":
            reset = tariff.cap.reset_at or "00:00"
            lines.append(f"每日（{reset}起）最高收费{yuan(tariff.cap.fen)}元")
        else:
            lines.append(f"每24小时最高收费{yuan(tariff.cap.fen)}元")
    if tariff.nev is not None:
        parts = []
        if tariff.nev.grace_minutes:
            parts.append(f"免费停车{_minutes(tariff.nev.grace_minutes)}")
        if tariff.nev.percent < 100:
            discount = tariff.nev.percent / 10
            parts.append(f"按{discount:g}折收费" if tariff.nev.percent else "免费")
        if parts:
            lines.append("新能源车：" + "，".join(parts))
    return lines
