"""The call channel: when each debtor may be called today, and the agents' dialer queue file.

A call window is the first stretch of time, from the moment the queue is built to the end of the
debtor's local day, in which every instant passes the time rules of ``dunning.compliance``:
inside the calling hours in every listed timezone (end exclusive) and outside the debtor's
designated inconvenient windows.  The windows are checked in every listed zone, exactly as
``compliance._time_blocks`` checks them (the debtor's local time is uncertain between zones), so
an agent who calls anywhere inside the window is never refused by the compliance check for
``INCONVENIENT_TIME``/``OUTSIDE_HOURS``.  For a debtor with one zone this is the first zone's
reading.

How: per contact, the window can only open or close at a boundary -- the start or end of the
hours or of a designated window, as a wall time on the local days around the debtor's day, in
each of its zones, localized per zone (so DST moves them).  The allowed-ness is constant between
consecutive boundaries, so it is evaluated once per stretch, at its start, with the same
UTC-to-local conversion compliance uses, and the first allowed run of stretches is the window.
This is exact while a zone's DST change falls outside its calling hours, which holds for the
legal 08:00-21:00 everywhere (changes happen at night).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dunning.compliance import _DAY_NS, _local, _localize, _minutes, _zones, utc_ns
from dunning.quality import neutralize

_NAT = np.iinfo("int64").min
_MINUTE_NS = 60 * 10**9
DIALER_COLUMNS = (
    "priority",
    "contact_key",
    "debtor_id",
    "name",
    "phone",
    "timezone",
    "window_start_utc",
    "window_end_utc",
    "window_local",
    "currency",
    "balance",
    "balance_minor",
    "invoices",
    "script",
)
# Free text a spreadsheet could run; phone (E.164, its + is the format) and numbers are not.
_TEXT_COLUMNS = ("contact_key", "debtor_id", "name", "timezone", "currency", "balance", "script")
_E164 = r"\+[1-9][0-9]{1,14}"


def _zone_rows(timezones: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """(row, order, tz) per listed zone, and a mask of the contacts that cannot be placed in
    time (no zone, or a zone this machine does not know: their hours cannot be checked)."""
    n = len(timezones)
    names = pd.Series(timezones.to_numpy(), dtype="string").fillna("").str.split("|")
    zones = pd.DataFrame({"row": np.arange(n), "tz": names}).explode("tz")
    zones["tz"] = zones["tz"].astype("string").str.strip().fillna("")
    zones["order"] = zones.groupby("row").cumcount()
    known = zones["tz"].isin(_zones()).to_numpy()
    bad = np.ones(n, dtype=bool)
    bad[zones["row"].to_numpy()] = False
    np.logical_or.at(bad, zones["row"].to_numpy(), ~known)
    zones = zones[~bad[zones["row"].to_numpy()]].reset_index(drop=True)
    return zones[["row", "order", "tz"]].astype({"tz": object}), bad


def call_windows(
    start_utc: pd.Series,
    timezones: pd.Series,
    windows: pd.DataFrame,
    hours_start: str = "08:00",
    hours_end: str = "21:00",
) -> pd.DataFrame:
    """For each contact, the first contiguous interval at or after ``start_utc``, within that
    local day (first listed zone), in which a call is allowed; NaT/NaT when none is left.

    ``start_utc``: aware (or naive = UTC) instants.  ``timezones``: pipe-joined IANA names,
    first = home.  ``windows``: designated inconvenient windows (row = position in
    ``start_utc``, weekdays bit mask with Monday = bit 0, start, end in local minutes; start >
    end wraps midnight).  Returns window_start, window_end (UTC, aware; end exclusive) on
    ``start_utc``'s index.  A contact with no zone, an unknown zone or a NaT start gets NaT.
    """
    n = len(start_utc)
    at = utc_ns(start_utc)
    zones, bad = _zone_rows(timezones)
    bad |= at == _NAT
    zones = zones[~bad[zones["row"].to_numpy()]]
    h_start, h_end = _minutes(hours_start), _minutes(hours_end)

    # The contact's day in its first zone: [day_start, day_end).
    first = zones[zones["order"] == 0]
    f_rows, f_tz = first["row"].to_numpy(), first["tz"].to_numpy()
    day_start = np.full(n, _NAT, dtype="int64")
    day_end = np.full(n, _NAT, dtype="int64")
    local_day = _local(at[f_rows], f_tz)[2]
    day_start[f_rows] = _localize(local_day * _DAY_NS, f_tz)
    day_end[f_rows] = _localize((local_day + 1) * _DAY_NS, f_tz)

    # Boundaries: hours and window edges, on the local days the contact's day touches in each
    # zone (a day is at most 25 h long: the zone's local date at day_start and the two after).
    z_rows, z_tz = zones["row"].to_numpy(), zones["tz"].to_numpy()
    z_day = _local(day_start[z_rows], z_tz)[2]
    w = windows[["row", "weekdays", "start", "end"]]
    w = w[w["row"].isin(np.flatnonzero(~bad))]
    edges = pd.concat(
        [
            pd.DataFrame({"row": z_rows, "tz": z_tz, "day": z_day, "minute": h_start}),
            pd.DataFrame({"row": z_rows, "tz": z_tz, "day": z_day, "minute": h_end}),
            *(
                pd.DataFrame({"row": z_rows, "tz": z_tz, "day": z_day}).merge(
                    w[["row", side]].rename(columns={side: "minute"}), on="row"
                )
                for side in ("start", "end")
            ),
        ],
        ignore_index=True,
    )
    e_row = np.tile(edges["row"].to_numpy(), 3)
    e_tz = np.tile(edges["tz"].to_numpy(), 3)
    wall = np.concatenate(
        [
            (edges["day"].to_numpy() + offset) * _DAY_NS
            + edges["minute"].to_numpy().astype("int64") * _MINUTE_NS
            for offset in (0, 1, 2)
        ]
    )
    e_at = _localize(wall, e_tz)
    inside = (e_at > at[e_row]) & (e_at < day_end[e_row])
    ok_rows = np.flatnonzero(~bad)
    points = (
        pd.DataFrame(
            {
                "row": np.concatenate([ok_rows, ok_rows, e_row[inside]]),
                "t": np.concatenate([at[ok_rows], day_end[ok_rows], e_at[inside]]),
            }
        )
        .drop_duplicates()
        .sort_values(["row", "t"], kind="stable")
        .reset_index(drop=True)
    )
    points["pid"] = np.arange(len(points))

    # Is a call allowed at each point (= over the stretch it starts)?  Same tests as compliance.
    pz = points.merge(zones, on="row")
    p_rows, p_at, p_tz = pz["pid"].to_numpy(), pz["t"].to_numpy(), pz["tz"].to_numpy()
    minute, weekday, _ = _local(p_at, p_tz)
    blocked = np.zeros(len(points), dtype=bool)
    np.logical_or.at(blocked, p_rows, (minute < h_start) | (minute >= h_end))
    if len(w):
        pairs = pd.DataFrame(
            {"pid": p_rows, "row": pz["row"].to_numpy(), "minute": minute, "weekday": weekday}
        ).merge(w, on="row")
        m = pairs["minute"].to_numpy()
        s, e = pairs["start"].to_numpy(), pairs["end"].to_numpy()
        in_span = np.where(s <= e, (m >= s) & (m < e), (m >= s) | (m < e))
        on_day = (pairs["weekdays"].to_numpy() >> pairs["weekday"].to_numpy()) & 1 == 1
        np.logical_or.at(blocked, pairs["pid"].to_numpy(), in_span & on_day)
    t = points["t"].to_numpy()
    row = points["row"].to_numpy()
    blocked[t >= day_end[row]] = True  # the day's end only closes the last stretch

    # First allowed point per contact, then the first blocked point after it.
    allowed = points[~blocked]
    opens = allowed.groupby("row")["t"].min()
    open_at = np.full(n, _NAT, dtype="int64")
    open_at[opens.index.to_numpy()] = opens.to_numpy()
    stops = points[blocked & (open_at[row] != _NAT) & (t > open_at[row])]
    closes = stops.groupby("row")["t"].min()
    close_at = np.full(n, _NAT, dtype="int64")
    close_at[closes.index.to_numpy()] = closes.to_numpy()
    return pd.DataFrame(
        {
            "window_start": pd.DatetimeIndex(open_at, tz="UTC"),
            "window_end": pd.DatetimeIndex(close_at, tz="UTC"),
        },
        index=start_utc.index,
    )


def _iso_z(values: pd.Series) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))


def _local_hhmm(
    start: pd.DatetimeIndex, end: pd.DatetimeIndex, tz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Local HH:MM of each start and end in its zone (one conversion per zone); an end at the
    next local midnight reads 24:00."""
    s_txt = np.empty(len(tz), dtype=object)
    e_txt = np.empty(len(tz), dtype=object)
    codes, names = pd.factorize(tz)
    for k, zone in enumerate(names):
        idx = np.flatnonzero(codes == k)
        ls, le = start[idx].tz_convert(zone), end[idx].tz_convert(zone)
        e = np.asarray(le.strftime("%H:%M"), dtype=object)
        midnight = (e == "00:00") & (le.normalize() > ls.normalize())
        s_txt[idx] = np.asarray(ls.strftime("%H:%M"), dtype=object)
        e_txt[idx] = np.where(midnight, "24:00", e)
    return s_txt, e_txt


def dialer_file(frame: pd.DataFrame) -> bytes:
    """The agents' call queue as UTF-8 CSV with a header, one row per call, in priority order
    (1 first: the window that closes soonest, then the larger balance).

    Input columns: contact_key, debtor_id, name, phone (E.164), timezones (pipe-joined, first =
    home), window_start, window_end (aware UTC, from ``call_windows``), currency, balance (as
    formatted for the debtor), balance_minor, invoices (a count, or a list per row), script (the
    rendered call template).  Output: ``DIALER_COLUMNS``; times as ISO 8601 ``Z`` and as
    ``HH:MM-HH:MM Zone`` in the home zone; multi-line scripts stay in one quoted cell; free text
    is neutralized against spreadsheet formulas (C4), phone is left as is.

    Raises ``ValueError`` for a row without a window (it must not be queued: the caller records
    it as not callable today) or with a phone that is not E.164 (so it cannot carry a formula).
    """
    start = pd.DatetimeIndex(frame["window_start"])
    end = pd.DatetimeIndex(frame["window_end"])
    if start.tz is None:
        start, end = start.tz_localize("UTC"), end.tz_localize("UTC")
    no_window = int((start.isna() | end.isna()).sum())
    if no_window:
        raise ValueError(f"{no_window} call(s) have no window today; leave them out of the queue")
    phone = frame["phone"].astype("string")
    if not phone.str.fullmatch(_E164).fillna(False).all():
        raise ValueError("a phone number is not E.164; the dialer file takes validated numbers")
    home = frame["timezones"].astype("string").str.split("|").str[0].str.strip()
    s_local, e_local = _local_hhmm(start, end, home.to_numpy(dtype=object))
    invoices = frame["invoices"]
    if invoices.dtype == object:  # a list of invoices per row (or a mix): count them
        invoices = invoices.map(lambda v: len(v) if pd.api.types.is_list_like(v) else v)
    out = pd.DataFrame(
        {
            "contact_key": frame["contact_key"].to_numpy(),
            "debtor_id": frame["debtor_id"].to_numpy(),
            "name": frame["name"].to_numpy(),
            "phone": phone.to_numpy(dtype=object),
            "timezone": home.to_numpy(dtype=object),
            "window_start_utc": _iso_z(start).to_numpy(),
            "window_end_utc": _iso_z(end).to_numpy(),
            "window_local": s_local + "-" + e_local + " " + home.to_numpy(dtype=object),
            "currency": frame["currency"].to_numpy(),
            "balance": frame["balance"].to_numpy(),
            "balance_minor": frame["balance_minor"].to_numpy(dtype="int64"),
            "invoices": invoices.fillna(0).to_numpy(dtype="int64"),
            "script": frame["script"].to_numpy(),
            "_end": end.asi8,
        }
    )
    text = list(_TEXT_COLUMNS)
    out[text] = neutralize(out[text].astype("string").fillna("").astype(object))
    out = out.sort_values(
        ["_end", "balance_minor", "contact_key"], ascending=[True, False, True], kind="stable"
    )
    out["priority"] = np.arange(1, len(out) + 1)
    return out[list(DIALER_COLUMNS)].to_csv(index=False).encode("utf-8")
