"""The fee engine against the contract's worked examples and its computation rules."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from parking.tariffs import Quote, QuoteError, Tariff, decode_tariff, quote, quote_to_json

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")

SUIZHOU = decode_tariff("""{
  "id": "suizhou-zone1",
  "name": "随州 一类区域 路内",
  "currency": "CNY",
  "timezone": "Asia/Shanghai",
  "grace": {"minutes": 30, "deductible": false},
  "bands": [
    {"name": "all-day", "from": "00:00", "to": "00:00",
     "tiers": [{"after_minutes": 0,  "unit_minutes": 60, "unit_fen": 300},
               {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 200}]}
  ],
  "cap": {"fen": 2000, "cycle": "rolling_24h"},
  "nev": {"grace_minutes": 120, "grace_deductible": false, "percent": 50}
}""")

BEIJING = decode_tariff("""{
 "id": "beijing-class1", "name": "北京 一类地区 路侧", "currency": "CNY",
 "timezone": "Asia/Shanghai",
 "bands": [
   {"name": "day", "from": "07:00", "to": "21:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250},
              {"after_minutes": 60, "unit_minutes": 15, "unit_fen": 375}]},
   {"name": "night", "from": "21:00", "to": "07:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 120, "unit_fen": 100}]}]}""")


def at(hour: int, minute: int = 0, *, day: int = 27, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def single_band(
    *,
    unit_minutes: int = 60,
    unit_fen: int = 300,
    start: str = "00:00",
    extra_band: str = "",
    top: str = "",
) -> Tariff:
    """A one-tier tariff; `top` adds top-level fields, e.g. a cap."""
    end = start
    return decode_tariff(f"""{{
      "id": "test", "name": "test", "currency": "CNY", {top}
      "bands": [{{"name": "all", "from": "{start}", "to": "{end}",
                  "tiers": [{{"after_minutes": 0, "unit_minutes": {unit_minutes},
                              "unit_fen": {unit_fen}}}]{extra_band}}}]}}""")


# The contract's worked examples.


@pytest.mark.parametrize(
    ("entry", "exit", "fen"),
    [
        (at(10), at(10, 30), 0),
        (at(10), at(10, 31), 300),
        (at(10), at(11, 1), 500),
        (at(10), at(13), 700),
        (at(8), at(18), 2000),
    ],
)
def test_suizhou_worked_examples(entry: datetime, exit: datetime, fen: int) -> None:
    assert quote(SUIZHOU, entry, exit, nev=False).total_fen == fen


@pytest.mark.parametrize(
    ("entry", "exit", "fen"),
    [
        (at(10), at(11), 1000),
        (at(10), at(11, 15), 1375),
        (at(10), at(12), 2500),
        (at(20), at(23), 1100),
    ],
)
def test_beijing_worked_examples(entry: datetime, exit: datetime, fen: int) -> None:
    assert quote(BEIJING, entry, exit, nev=False).total_fen == fen


def test_suizhou_cap_example_lists_the_raw_and_capped_cycle_sum() -> None:
    result = quote(SUIZHOU, at(8), at(18), nev=False)
    assert [c.fen for c in result.charges] == [300] + [200] * 9
    assert len(result.cycles) == 1
    cycle = result.cycles[0]
    assert (cycle.start, cycle.end) == (at(8), at(8, day=28))
    assert (cycle.raw_fen, cycle.fen) == (2100, 2000)
    assert result.subtotal_fen == 2000


def test_beijing_evening_example_itemises_day_and_night_segments() -> None:
    result = quote(BEIJING, at(20), at(23), nev=False)
    assert [(s.band, s.start, s.end, s.fen) for s in result.segments] == [
        ("day", at(20), at(21), 1000),
        ("night", at(21), at(23), 100),
    ]
    assert [(c.at, c.band, c.tier, c.fen) for c in result.charges] == [
        (at(20), "day", 0, 250),
        (at(20, 15), "day", 0, 250),
        (at(20, 30), "day", 0, 250),
        (at(20, 45), "day", 0, 250),
        (at(21), "night", 0, 100),
    ]
    assert result.cycles == ()


# Step 1: the stay.


@pytest.mark.parametrize("minutes", [0, -1])
def test_exit_not_after_entry_is_an_error_not_a_free_stay(minutes: int) -> None:
    with pytest.raises(QuoteError, match="not after entry"):
        quote(SUIZHOU, at(10), at(10) + timedelta(minutes=minutes), nev=False)


def test_naive_times_are_refused() -> None:
    with pytest.raises(QuoteError, match="no UTC offset"):
        quote(SUIZHOU, datetime(2026, 11, 27, 10), at(11), nev=False)
    with pytest.raises(QuoteError, match="no UTC offset"):
        quote(SUIZHOU, at(10), datetime(2026, 11, 27, 11), nev=False)


def test_entry_and_exit_in_other_offsets_are_the_same_instants() -> None:
    utc_entry = at(10).astimezone(UTC)
    result = quote(
        SUIZHOU, utc_entry, at(11, 1).astimezone(ZoneInfo("America/New_York")), nev=False
    )
    assert result.total_fen == 500
    assert result.entry == at(10)
    assert result.entry.utcoffset() == timedelta(hours=8)


# Step 2: grace.


def test_grace_boundary_is_exact_to_the_microsecond() -> None:
    grace = timedelta(minutes=30)
    assert quote(SUIZHOU, at(10), at(10) + grace, nev=False).total_fen == 0
    just_over = quote(SUIZHOU, at(10), at(10) + grace + timedelta(microseconds=1), nev=False)
    assert just_over.total_fen == 300
    assert not just_over.within_grace


def test_stay_within_grace_has_no_charges_and_no_billable_start() -> None:
    result = quote(SUIZHOU, at(10), at(10, 30), nev=False)
    assert result.within_grace
    assert result.billable_start is None
    assert (result.charges, result.segments, result.cycles) == ((), (), ())
    assert (result.grace_minutes, result.grace_deductible) == (30, False)


def test_non_deductible_grace_bills_from_entry() -> None:
    result = quote(SUIZHOU, at(10), at(10, 31), nev=False)
    assert result.billable_start == at(10)
    assert result.charges[0].at == at(10)


def test_deductible_grace_bills_from_entry_plus_grace() -> None:
    tariff = single_band(top='"grace": {"minutes": 30, "deductible": true},')
    assert quote(tariff, at(10), at(11, 30), nev=False).total_fen == 300
    result = quote(tariff, at(10), at(11, 31), nev=False)
    assert result.billable_start == at(10, 30)
    assert [(c.at, c.fen, c.partial) for c in result.charges] == [
        (at(10, 30), 300, False),
        (at(11, 30), 300, True),
    ]


# Step 4: charges.


def test_partial_unit_is_charged_by_default() -> None:
    result = quote(single_band(), at(10), at(10, 1), nev=False)
    assert result.total_fen == 300
    assert result.charges[0].partial


def test_partial_unit_free_charges_only_whole_units() -> None:
    tariff = single_band(extra_band=', "partial_unit": "free"')
    result = quote(tariff, at(10), at(11, 59), nev=False)
    assert result.total_fen == 300
    assert [(c.fen, c.unit_fen, c.partial) for c in result.charges] == [
        (300, 300, False),
        (0, 300, True),
    ]
    assert quote(tariff, at(10), at(12), nev=False).total_fen == 600
    assert quote(tariff, at(10), at(10, 59), nev=False).total_fen == 0


def test_tiers_are_relative_to_the_billable_start_not_the_segment() -> None:
    # Night has a cheaper second tier from two hours into the stay. A stay from
    # 20:00 reaches it at 22:00 although the night segment began at 21:00.
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY", "bands": [
      {"name": "day", "from": "07:00", "to": "21:00",
       "tiers": [{"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250}]},
      {"name": "night", "from": "21:00", "to": "07:00",
       "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 100},
                 {"after_minutes": 120, "unit_minutes": 60, "unit_fen": 10}]}]}""")
    result = quote(tariff, at(20), at(23), nev=False)
    assert [(c.band, c.tier, c.fen) for c in result.charges if c.band == "night"] == [
        ("night", 0, 100),
        ("night", 1, 10),
    ]
    assert result.total_fen == 1000 + 110


def test_a_stay_starting_at_night_reaches_the_second_day_tier_at_once() -> None:
    # Beijing: 06:00 to 08:00. The day segment starts 60 min into the stay, so
    # its units are already second-tier (375), and the 06:00 night unit is cut
    # short at 07:00 and charged in full.
    result = quote(BEIJING, at(6), at(8), nev=False)
    assert [(c.band, c.tier, c.fen, c.partial) for c in result.charges] == [
        ("night", 0, 100, True),
        ("day", 1, 375, False),
        ("day", 1, 375, False),
        ("day", 1, 375, False),
        ("day", 1, 375, False),
    ]
    assert result.total_fen == 1600


def test_a_unit_started_in_one_tier_runs_its_full_length() -> None:
    # A 45 min first-tier unit starting at 45 min runs to 90 min although the
    # second tier begins at 60 min.
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY", "bands": [
      {"name": "all", "from": "00:00", "to": "00:00",
       "tiers": [{"after_minutes": 0, "unit_minutes": 45, "unit_fen": 100},
                 {"after_minutes": 60, "unit_minutes": 10, "unit_fen": 1}]}]}""")
    result = quote(tariff, at(10), at(11, 40), nev=False)
    assert [(c.at, c.tier) for c in result.charges] == [
        (at(10), 0),
        (at(10, 45), 0),
        (at(11, 30), 1),
    ]


def test_flat_night_band_charges_once_per_segment_across_midnight() -> None:
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY", "bands": [
      {"name": "day", "from": "08:00", "to": "20:00",
       "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 200}]},
      {"name": "night", "from": "20:00", "to": "08:00", "flat": 500}]}""")
    result = quote(tariff, at(19), at(9, day=28), nev=False)
    assert [(c.at, c.band, c.tier, c.fen) for c in result.charges] == [
        (at(19), "day", 0, 200),
        (at(20), "night", "flat", 500),
        (at(8, day=28), "day", 0, 200),
    ]
    assert result.total_fen == 900
    # One minute of night is still the whole flat fee.
    assert quote(tariff, at(19, 30), at(20, 1), nev=False).total_fen == 700


def test_segment_cap_limits_each_segment_and_spends_in_time_order() -> None:
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY", "bands": [
      {"name": "day", "from": "08:00", "to": "20:00", "segment_cap_fen": 1000,
       "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 300}]},
      {"name": "night", "from": "20:00", "to": "08:00", "flat": 0}]}""")
    result = quote(tariff, at(8), at(14), nev=False)
    assert [c.fen for c in result.charges] == [300, 300, 300, 100, 0, 0]
    assert [c.unit_fen for c in result.charges] == [300] * 6
    assert [(s.raw_fen, s.fen) for s in result.segments] == [(1800, 1000)]
    assert result.total_fen == 1000
    # Each day's segment has its own cap.
    assert quote(tariff, at(8), at(14, day=28), nev=False).total_fen == 1000 + 0 + 1000


def test_whole_day_band_never_splits_at_midnight() -> None:
    # 90 min units from 22:00: 22:00, 23:30, 01:00. A split at midnight would
    # cut the 23:30 unit short and start a fourth unit at 00:00.
    for start in ("00:00", "07:00"):
        tariff = single_band(unit_minutes=90, unit_fen=100, start=start)
        result = quote(tariff, at(22), at(2, day=28), nev=False)
        assert len(result.segments) == 1
        assert [c.at for c in result.charges] == [at(22), at(23, 30), at(1, day=28)]
        assert result.total_fen == 300


def test_three_day_stay_segments_follow_shanghai_clock_exactly() -> None:
    # Asia/Shanghai has one offset all year: every day band is 14 h long.
    result = quote(BEIJING, at(10, day=30), at(10, day=3, month=12), nev=False)
    day_segments = [s for s in result.segments if s.band == "day"]
    assert [s.start.hour for s in result.segments if s.band == "night"] == [21, 21, 21]
    assert all(s.end - s.start == timedelta(hours=14) for s in day_segments[1:-1])
    assert result.segments[0].start == at(10, day=30)
    assert result.segments[-1].end == at(10, day=3, month=12)


# Step 5: caps.

CAP_2000 = '"cap": {"fen": 2000, "cycle": "rolling_24h"},'


def test_rolling_cap_is_one_cycle_for_an_overnight_stay() -> None:
    result = quote(single_band(top=CAP_2000), at(20), at(4, day=28), nev=False)
    assert [(c.raw_fen, c.fen) for c in result.cycles] == [(2400, 2000)]
    assert result.total_fen == 2000


def test_daily_cap_resets_at_midnight_by_default() -> None:
    tariff = single_band(top='"cap": {"fen": 2000, "cycle": "daily"},')
    result = quote(tariff, at(20), at(4, day=28), nev=False)
    assert [(c.start, c.end, c.raw_fen, c.fen) for c in result.cycles] == [
        (at(0), at(0, day=28), 1200, 1200),
        (at(0, day=28), at(0, day=29), 1200, 1200),
    ]
    assert result.total_fen == 2400


def test_daily_cap_resets_at_reset_at_local_time() -> None:
    tariff = single_band(top='"cap": {"fen": 2000, "cycle": "daily", "reset_at": "06:00"},')
    result = quote(tariff, at(20), at(4, day=28), nev=False)
    assert [(c.start, c.end, c.raw_fen, c.fen) for c in result.cycles] == [
        (at(6), at(6, day=28), 2400, 2000)
    ]
    later = quote(tariff, at(20), at(8, day=28), nev=False)
    assert [(c.raw_fen, c.fen) for c in later.cycles] == [(3000, 2000), (600, 600)]
    assert later.total_fen == 2600


def test_rolling_cycles_are_counted_from_entry_not_the_billable_start() -> None:
    tariff = single_band(top=CAP_2000 + '"grace": {"minutes": 60, "deductible": true},')
    result = quote(tariff, at(10), at(10, 30, day=28), nev=False)
    assert result.billable_start == at(11)
    assert [(c.start, c.raw_fen, c.fen) for c in result.cycles] == [
        (at(10), 23 * 300, 2000),
        (at(10, day=28), 300, 300),
    ]
    assert result.total_fen == 2300


def test_a_charge_belongs_to_the_cycle_containing_its_start() -> None:
    # The unit starting at 23:30 runs mostly after the midnight reset but
    # counts in the first cycle.
    tariff = single_band(top='"cap": {"fen": 100000, "cycle": "daily"},')
    result = quote(tariff, at(23, 30), at(0, 45, day=28), nev=False)
    assert [c.at for c in result.charges] == [at(23, 30), at(0, 30, day=28)]
    assert [c.raw_fen for c in result.cycles] == [300, 300]


# Step 6: new-energy vehicles.


def test_nev_grace_replaces_the_conventional_grace() -> None:
    assert quote(SUIZHOU, at(10), at(12), nev=True).total_fen == 0
    result = quote(SUIZHOU, at(10), at(12, 1), nev=True)
    assert (result.grace_minutes, result.nev_applied, result.nev_percent) == (120, True, 50)
    assert result.subtotal_fen == 300 + 200 + 200
    assert result.total_fen == 350


def test_nev_share_is_rounded_down_to_the_fen() -> None:
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY",
      "bands": [{"name": "all", "from": "00:00", "to": "00:00", "flat": 101}],
      "nev": {"grace_minutes": 0, "grace_deductible": false, "percent": 50}}""")
    result = quote(tariff, at(10), at(11), nev=True)
    assert (result.subtotal_fen, result.total_fen) == (101, 50)


def test_nev_percent_applies_after_the_cap() -> None:
    result = quote(SUIZHOU, at(8), at(18), nev=True)
    assert (result.subtotal_fen, result.total_fen) == (2000, 1000)


def test_nev_flag_without_a_policy_prices_as_conventional() -> None:
    result = quote(BEIJING, at(10), at(12), nev=True)
    assert result.total_fen == 2500
    assert result.nev
    assert not result.nev_applied
    assert result.nev_percent is None


def test_contract_lets_a_deductible_nev_grace_cost_more_with_falling_tiers() -> None:
    # Documents a consequence of the contract, not a wish: a deductible NEV
    # grace moves the billable start, so a tariff whose first hours are dearer
    # bills the NEV at the dear tier where the conventional car is already on
    # the cheap one. Finance should not combine the two.
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY", "bands": [
      {"name": "morning", "from": "08:00", "to": "10:00", "flat": 0},
      {"name": "rest", "from": "10:00", "to": "08:00",
       "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 500},
                 {"after_minutes": 120, "unit_minutes": 60, "unit_fen": 100}]}],
      "nev": {"grace_minutes": 120, "grace_deductible": true, "percent": 50}}""")
    conventional = quote(tariff, at(8), at(12), nev=False)
    new_energy = quote(tariff, at(8), at(12), nev=True)
    assert (conventional.total_fen, new_energy.total_fen) == (200, 500)


# Wall-clock bands in a zone with daylight saving time.

BERLIN_TARIFF = decode_tariff("""{"id": "berlin", "name": "Berlin test", "currency": "EUR",
 "timezone": "Europe/Berlin", "bands": [
   {"name": "day", "from": "07:00", "to": "21:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250},
              {"after_minutes": 60, "unit_minutes": 15, "unit_fen": 375}]},
   {"name": "night", "from": "21:00", "to": "07:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 60, "unit_fen": 100}]}]}""")


def test_bands_follow_the_wall_clock_when_clocks_go_forward() -> None:
    # 2026-03-29 02:00 CET becomes 03:00 CEST: the night from 21:00 to 07:00
    # lasts 9 real hours, and the day band starts at 07:00 CEST (05:00 UTC).
    entry = datetime(2026, 3, 28, 20, tzinfo=BERLIN)
    exit = datetime(2026, 3, 29, 8, tzinfo=BERLIN)
    result = quote(BERLIN_TARIFF, entry, exit, nev=False)
    assert [(s.band, s.start, s.end) for s in result.segments] == [
        ("day", entry, datetime(2026, 3, 28, 21, tzinfo=BERLIN)),
        (
            "night",
            datetime(2026, 3, 28, 21, tzinfo=BERLIN),
            datetime(2026, 3, 29, 7, tzinfo=BERLIN),
        ),
        ("day", datetime(2026, 3, 29, 7, tzinfo=BERLIN), exit),
    ]
    assert result.segments[2].start.astimezone(UTC) == datetime(2026, 3, 29, 5, tzinfo=UTC)
    night = [c for c in result.charges if c.band == "night"]
    assert len(night) == 9
    assert result.total_fen == 4 * 250 + 9 * 100 + 4 * 375


def test_bands_repeat_with_the_hour_when_clocks_go_back() -> None:
    # 2026-10-25 03:00 CEST becomes 02:00 CET, so 02:00 to 03:00 happens twice
    # and a band boundary at 02:30 is crossed twice.
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "EUR",
      "timezone": "Europe/Berlin", "bands": [
        {"name": "early", "from": "00:00", "to": "02:30", "flat": 1},
        {"name": "late", "from": "02:30", "to": "00:00", "flat": 10}]}""")
    entry = datetime(2026, 10, 24, 23, tzinfo=UTC)  # 01:00 CEST
    exit = datetime(2026, 10, 25, 3, tzinfo=UTC)  # 04:00 CET
    result = quote(tariff, entry, exit, nev=False)
    assert [
        (s.band, s.start.astimezone(UTC).time().isoformat("minutes")) for s in result.segments
    ] == [
        ("early", "23:00"),
        ("late", "00:30"),
        ("early", "01:00"),
        ("late", "01:30"),
    ]
    assert result.total_fen == 22


def test_daily_reset_in_a_repeated_hour_happens_once() -> None:
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "EUR",
      "timezone": "Europe/Berlin",
      "bands": [{"name": "all", "from": "00:00", "to": "00:00",
                 "tiers": [{"after_minutes": 0, "unit_minutes": 30, "unit_fen": 1}]}],
      "cap": {"fen": 1000, "cycle": "daily", "reset_at": "02:30"}}""")
    entry = datetime(2026, 10, 24, 23, tzinfo=UTC)  # 01:00 CEST
    exit = datetime(2026, 10, 25, 3, tzinfo=UTC)  # 04:00 CET
    result = quote(tariff, entry, exit, nev=False)
    assert [c.start.astimezone(UTC) for c in result.cycles] == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST on the 24th
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # first 02:30 on the 25th
    ]
    assert result.cycles[1].end == datetime(2026, 10, 26, 2, 30, tzinfo=BERLIN)


def test_daily_reset_in_a_skipped_hour_happens_when_the_clock_jumps() -> None:
    tariff = decode_tariff("""{"id": "t", "name": "t", "currency": "EUR",
      "timezone": "Europe/Berlin",
      "bands": [{"name": "all", "from": "00:00", "to": "00:00",
                 "tiers": [{"after_minutes": 0, "unit_minutes": 30, "unit_fen": 1}]}],
      "cap": {"fen": 1000, "cycle": "daily", "reset_at": "02:30"}}""")
    entry = datetime(2026, 3, 29, 0, tzinfo=UTC)  # 01:00 CET
    exit = datetime(2026, 3, 29, 2, tzinfo=UTC)  # 04:00 CEST
    result = quote(tariff, entry, exit, nev=False)
    assert [c.start.astimezone(UTC) for c in result.cycles][1] == datetime(
        2026, 3, 29, 1, tzinfo=UTC
    )
    assert [c.raw_fen for c in result.cycles] == [2, 2]


# Step 7: the quote as data.


def test_quote_json_has_a_top_level_total_and_round_trips() -> None:
    result = quote(SUIZHOU, at(10), at(11, 1), nev=False)
    document = msgspec.json.decode(quote_to_json(result))
    assert document["total_fen"] == 500
    assert document["charges"][0] == {
        "at": "2026-11-27T10:00:00+08:00",
        "band": "all-day",
        "tier": 0,
        "unit_fen": 300,
        "fen": 300,
        "partial": False,
    }
    decoded = msgspec.json.decode(quote_to_json(result), type=Quote)
    assert decoded.total_fen == result.total_fen
    assert decoded.charges == result.charges


def test_flat_charges_are_tiered_as_flat_in_json() -> None:
    flat = decode_tariff("""{"id": "t", "name": "t", "currency": "CNY",
      "bands": [{"name": "all", "from": "00:00", "to": "00:00", "flat": 5}]}""")
    document = msgspec.json.decode(quote_to_json(quote(flat, at(10), at(11), nev=False)))
    assert document["charges"] == [
        {
            "at": "2026-11-27T10:00:00+08:00",
            "band": "all",
            "tier": "flat",
            "unit_fen": 5,
            "fen": 5,
            "partial": False,
        }
    ]
