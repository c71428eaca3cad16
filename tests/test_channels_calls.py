"""The call channel: today's call window per debtor (hours in every zone, designated windows,
DST) and the dialer queue file."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dunning.channels.calls import DIALER_COLUMNS, call_windows, dialer_file

pytestmark = pytest.mark.clock  # dates and hours: the clock guard moves the clock under it

NY, LA, LONDON = "America/New_York", "America/Los_Angeles", "Europe/London"
WEEKDAYS = 0b0011111  # Monday..Friday
NO_WINDOWS = pd.DataFrame({"row": [], "weekdays": [], "start": [], "end": []}, dtype="int64")


def utc(*values: str | None) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True))


def windows_of(starts: pd.Series, zones: list[str], windows=NO_WINDOWS) -> list[tuple]:
    got = call_windows(starts, pd.Series(zones), windows)
    return [
        (
            None if pd.isna(s) else s.strftime("%Y-%m-%dT%H:%MZ"),
            None if pd.isna(e) else e.strftime("%Y-%m-%dT%H:%MZ"),
        )
        for s, e in zip(got["window_start"], got["window_end"], strict=True)
    ]


def test_hours_in_winter_and_after_the_us_dst_switch() -> None:
    # 12:00Z is 07:00 EST in January; in March after the 8th it is 08:00 EDT.
    got = windows_of(utc("2026-01-14T12:00Z", "2026-03-10T12:00Z"), [NY, NY])
    assert got == [
        ("2026-01-14T13:00Z", "2026-01-15T02:00Z"),
        ("2026-03-10T12:00Z", "2026-03-11T01:00Z"),
    ]


def test_switch_day_itself() -> None:
    # Sunday 8 March 2026: 02:00 EST becomes 03:00 EDT; the hours are in EDT.
    got = windows_of(utc("2026-03-08T06:00Z"), [NY])
    assert got == [("2026-03-08T12:00Z", "2026-03-09T01:00Z")]


def test_window_starts_now_when_already_allowed() -> None:
    got = windows_of(utc("2026-01-14T15:17:30Z"), [NY])
    assert got == [("2026-01-14T15:17Z", "2026-01-15T02:00Z")]
    frame = call_windows(utc("2026-01-14T15:17:30Z"), pd.Series([NY]), NO_WINDOWS)
    assert frame["window_start"].iloc[0] == pd.Timestamp("2026-01-14T15:17:30Z")
    assert str(frame["window_start"].dtype) == "datetime64[ns, UTC]"


def test_two_zones_give_the_intersection() -> None:
    # 08:00 in Los Angeles is 16:00Z; 21:00 in New York is 02:00Z.
    got = windows_of(utc("2026-01-14T12:00Z"), [f"{NY}|{LA}"])
    assert got == [("2026-01-14T16:00Z", "2026-01-15T02:00Z")]


def test_two_zones_far_apart_and_the_home_day() -> None:
    # Los Angeles + Tokyo overlap 23:00Z-05:00Z (15:00-21:00 LA, 08:00-14:00 JST).  At 22:00 in
    # Los Angeles (06:00Z) the home day has nothing left: the next overlap is tomorrow there.
    got = windows_of(utc("2026-01-14T12:00Z", "2026-01-15T06:00Z"), [f"{LA}|Asia/Tokyo"] * 2)
    assert got == [("2026-01-14T23:00Z", "2026-01-15T05:00Z"), (None, None)]


def test_designated_window_splits_the_day() -> None:
    windows = pd.DataFrame({"row": [0, 1, 2], "weekdays": WEEKDAYS, "start": 540, "end": 1020})
    starts = utc("2026-01-14T13:00Z", "2026-01-14T14:30Z", "2026-01-18T13:00Z")  # Wed, Wed, Sun
    got = windows_of(starts, [NY, NY, NY], windows)
    assert got == [
        ("2026-01-14T13:00Z", "2026-01-14T14:00Z"),  # 08:00-09:00 local
        ("2026-01-14T22:00Z", "2026-01-15T02:00Z"),  # 17:00-21:00 local
        ("2026-01-18T13:00Z", "2026-01-19T02:00Z"),  # Sunday: the window does not apply
    ]


def test_window_wrapping_midnight_and_several_windows() -> None:
    windows = pd.DataFrame(
        {
            "row": [0, 0],
            "weekdays": 0b1111111,
            "start": [20 * 60, 8 * 60],  # 20:00-07:00 and 08:00-08:30
            "end": [7 * 60, 8 * 60 + 30],
        }
    )
    got = windows_of(utc("2026-01-14T12:00Z"), [NY], windows)
    assert got == [("2026-01-14T13:30Z", "2026-01-15T01:00Z")]  # 08:30-20:00 local


def test_designated_windows_hold_in_every_listed_zone() -> None:
    # Hours: NY 13:00Z-02:00Z, London 08:00-21:00 GMT = 08:00Z-21:00Z, so 13:00Z-21:00Z.
    # A 12:00-13:00 window is 12:00Z-13:00Z read in London and 17:00Z-18:00Z read in New York;
    # both readings are avoided (as the compliance check does), so the window closes at 17:00Z.
    windows = pd.DataFrame({"row": [0], "weekdays": 0b1111111, "start": [720], "end": [780]})
    got = windows_of(utc("2026-01-14T13:00Z"), [f"{NY}|{LONDON}"], windows)
    assert got == [("2026-01-14T13:00Z", "2026-01-14T17:00Z")]


def test_nothing_left_after_hours_and_bad_inputs() -> None:
    starts = utc(
        "2026-01-15T02:30Z", "2026-01-14T12:00Z", "2026-01-14T12:00Z", None, "2026-01-14T12:00Z"
    )
    got = windows_of(starts, [NY, "Mars/Olympus_Mons", "", NY, f"{NY}|Nowhere/Else"])
    assert got == [(None, None)] * 5


def test_index_is_kept_and_empty_input_works() -> None:
    starts = pd.Series(pd.to_datetime(["2026-01-14T12:00Z"], utc=True), index=[42])
    assert call_windows(starts, pd.Series([NY], index=[42]), NO_WINDOWS).index.tolist() == [42]
    empty = call_windows(utc(), pd.Series([], dtype=object), NO_WINDOWS)
    assert len(empty) == 0 and list(empty.columns) == ["window_start", "window_end"]


def test_vectorized_over_many_contacts() -> None:
    n = 20_000
    rng = np.random.default_rng(7)
    starts = pd.Series(
        pd.Timestamp("2026-03-10T11:00Z") + pd.to_timedelta(rng.integers(0, 900, n), unit="min")
    )
    zones = pd.Series(np.array([NY, LONDON, f"{NY}|{LA}", "Asia/Riyadh"])[rng.integers(0, 4, n)])
    rows = rng.choice(n, n // 4, replace=False)
    windows = pd.DataFrame({"row": rows, "weekdays": WEEKDAYS, "start": 540, "end": 1020})
    got = call_windows(starts, zones, windows)
    ok = got["window_start"].notna()
    assert ok.any() and (~ok).any()
    assert (got["window_start"][ok] >= starts[ok]).all()
    assert (got["window_end"][ok] > got["window_start"][ok]).all()


# --- the dialer file ------------------------------------------------------------------------------


def dialer_frame() -> pd.DataFrame:
    starts = utc("2026-01-14T13:00Z", "2026-01-14T13:00Z", "2026-01-14T16:00Z")
    zones = pd.Series([NY, NY, f"{NY}|{LA}"])
    w = call_windows(
        starts, zones, pd.DataFrame({"row": [1], "weekdays": WEEKDAYS, "start": 540, "end": 1020})
    )
    return pd.DataFrame(
        {
            "contact_key": ["c-small", "c-early", "c-big"],
            "debtor_id": ["D1", "D2", "D3"],
            "name": ["Alex Example", "=cmd|' /C calc'!A0", "@Hélène Dupré"],
            "phone": ["+14155550100", "+16175550123", "+442071838750"],
            "timezones": zones,
            "window_start": w["window_start"],
            "window_end": w["window_end"],
            "currency": ["USD", "USD", "USD"],
            "balance": ["$10.00", "$5.00", "$1,550.50"],
            "balance_minor": [1000, 500, 155050],
            "invoices": [1, ["INV-1", "INV-2"], 3],
            "script": ["Hello Alex,\nthis is about INV-1.\n- say the disclosure", "Hi", "+ intro"],
        }
    )


def test_dialer_file_round_trips_and_is_safe() -> None:
    data = dialer_file(dialer_frame())
    queue = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert tuple(queue.columns) == DIALER_COLUMNS
    assert len(queue) == 3
    # Priority: the window closing first (c-early, 09:00 NY), then the larger balance.
    assert queue["contact_key"].tolist() == ["c-early", "c-big", "c-small"]
    assert queue["priority"].tolist() == ["1", "2", "3"]
    first = queue.iloc[0]
    assert first["name"] == "'=cmd|' /C calc'!A0"
    assert first["phone"] == "+16175550123"
    assert first["window_start_utc"] == "2026-01-14T13:00:00Z"
    assert first["window_end_utc"] == "2026-01-14T14:00:00Z"
    assert first["window_local"] == "08:00-09:00 America/New_York"
    assert first["timezone"] == NY
    assert first["invoices"] == "2"
    big = queue.iloc[1]
    assert big["name"] == "'@Hélène Dupré"
    assert big["phone"] == "+442071838750"
    assert big["window_local"] == "11:00-21:00 America/New_York"
    assert (big["balance"], big["balance_minor"], big["script"]) == (
        "$1,550.50",
        "155050",
        "'+ intro",
    )
    small = queue.iloc[2]
    assert small["script"] == "Hello Alex,\nthis is about INV-1.\n- say the disclosure"
    assert data.decode("utf-8").count("\n") > 4  # the newlines are inside one quoted cell


def test_dialer_file_refuses_rows_it_must_not_queue() -> None:
    frame = dialer_frame()
    no_window = frame.assign(window_end=frame["window_end"].where(frame.index != 0))
    with pytest.raises(ValueError, match="no window"):
        dialer_file(no_window)
    with pytest.raises(ValueError, match=r"E\.164"):
        dialer_file(frame.assign(phone=["+14155550100", "=1+2", "+442071838750"]))
