"""Failed card payments: read the decline, decide whether to try again, and when.

Card networks fine merchants who retry blindly.  Visa: never re-attempt after a category 1
decline (the issuer will never approve: lost, stolen, closed, invalid account), at most 15
re-attempts in 30 days after categories 2-3.  Mastercard: merchant advice codes 03 and 21 mean
do not try again; 24-30 say how long to wait.  The decline is classified from the most
specific signal present -- the network's advice code, then its response code, then the
processor's decline code -- into:

* ``soft``: the issuer cannot approve *now* (insufficient funds, velocity, issuer down): retry
  on the schedule, on the debtor's market's banking days, within the network's limit;
* ``update``: the card details are stale (expired, new account information): ask for them;
* ``hard``: never retry; stop and ask the debtor for another way to pay.

The result is an instruction file for the processor (retry on a date, or request a new
method), one row per declined charge, written each run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dunning.config import Retries
from dunning.planning import day_off
from dunning.quality import empty_frame

# Visa decline categories by response code (Visa Excessive Reattempts rule, 2022).
VISA_NEVER = frozenset({"04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3"})
VISA_DATA = frozenset({"54", "55", "82", "1A", "N7"})  # category 3: correct, then retry
# Mastercard merchant advice codes.
MAC_NEVER = frozenset({"03", "04", "21"})
MAC_UPDATE = frozenset({"01"})
MAC_WAIT_DAYS = {"24": 1, "25": 1, "26": 2, "27": 4, "28": 6, "29": 8, "30": 10}
# Processor decline codes (Stripe's vocabulary, the one most processors echo).
HARD_CODES = frozenset(
    {
        "stolen_card", "lost_card", "pickup_card", "fraudulent", "merchant_blacklist",
        "invalid_account", "card_not_supported", "currency_not_supported", "restricted_card",
        "revocation_of_authorization", "revocation_of_all_authorizations", "stop_payment_order",
        "do_not_try_again", "security_violation", "transaction_not_allowed", "new_account_information_available_no",
        "incorrect_number", "invalid_number", "no_action_taken", "not_permitted",
    }
)  # fmt: skip
UPDATE_CODES = frozenset(
    {"expired_card", "incorrect_cvc", "invalid_cvc", "invalid_expiry_month",
     "invalid_expiry_year", "new_account_information_available", "incorrect_pin", "pin_try_exceeded"}
)  # fmt: skip
ACTIONS = ("retry", "request_new_method", "stop")
INSTRUCTION_COLUMNS = (
    "charge_ref", "debtor_id", "amount_minor", "currency", "network", "decline_code",
    "category", "attempt", "action", "retry_on", "reason",
)  # fmt: skip


def classify(declines: pd.DataFrame) -> pd.DataFrame:
    """``category`` (soft | update | hard), ``wait_days`` (a network's own minimum wait) and a
    human ``reason`` per decline line."""
    network = declines["network"].fillna("").str.lower()
    response = declines["network_code"].fillna("").str.strip().str.upper()
    advice = declines["advice_code"].fillna("").str.strip().str.upper().str.zfill(2)
    code = declines["decline_code"].fillna("").str.strip().str.lower()
    category = pd.Series("soft", index=declines.index, dtype="object")
    reason = "issuer cannot approve now: " + code.where(code != "", "unspecified")
    category[code.isin(UPDATE_CODES)] = "update"
    category[code.isin(HARD_CODES)] = "hard"
    reason = reason.mask(code.isin(UPDATE_CODES), "card details out of date: " + code)
    reason = reason.mask(code.isin(HARD_CODES), "issuer will never approve: " + code)
    visa = network.eq("visa")
    category[visa & response.isin(VISA_DATA)] = "update"
    category[visa & response.isin(VISA_NEVER)] = "hard"
    reason = reason.mask(visa & response.isin(VISA_NEVER), "Visa category 1 response " + response)
    mc = network.eq("mastercard") & declines["advice_code"].fillna("").str.strip().ne("")
    category[mc & advice.isin(MAC_UPDATE)] = "update"
    category[mc & advice.isin(MAC_NEVER)] = "hard"
    reason = reason.mask(mc & advice.isin(MAC_NEVER), "Mastercard advice code " + advice)
    wait = advice.map(MAC_WAIT_DAYS).where(mc, np.nan)
    return declines.assign(category=category, wait_days=wait, reason=reason)


def next_banking_day(days: pd.Series, countries: pd.Series) -> pd.Series:
    """The day itself or the next one that is not a weekend or holiday in the country."""
    out = pd.to_datetime(days).dt.normalize()
    countries = countries.fillna("").astype(str).set_axis(out.index)
    for _ in range(10):  # no market closes for more than a few days running
        pairs = pd.DataFrame({"c": countries, "d": out}).drop_duplicates()
        off = {(c, d): day_off(c, d.date()) for c, d in zip(pairs["c"], pairs["d"], strict=True)}
        closed = pd.Series(list(zip(countries, out, strict=True)), index=out.index).map(off)
        if not closed.any():
            break
        out = out.where(~closed.astype(bool), out + pd.Timedelta(days=1))
    return out.dt.date


def schedule(
    declines: pd.DataFrame, earlier: pd.DataFrame, countries: pd.Series, rules: Retries
) -> pd.DataFrame:
    """One instruction per decline line (INSTRUCTION_COLUMNS).

    ``declines``: today's decline lines, classified, with charge_ref, debtor_id, failed_on.
    ``earlier``: failures of the same charges from earlier runs (charge_ref, failed_on).
    ``countries``: debtor country per row of ``declines`` (for banking days).
    """
    if declines.empty:
        return empty_frame(INSTRUCTION_COLUMNS)
    network = declines["network"].fillna("").str.lower()
    network = network.where(network.isin(list(rules.limits)), "other")
    limit = network.map(lambda n: rules.limits[n][0])
    window = network.map(lambda n: rules.limits[n][1])
    all_fails = pd.concat(
        [earlier[["charge_ref", "failed_on"]], declines[["charge_ref", "failed_on"]]],
        ignore_index=True,
    )
    all_fails["failed_on"] = pd.to_datetime(all_fails["failed_on"])
    first = all_fails.groupby("charge_ref")["failed_on"].min()
    failed_on = pd.to_datetime(declines["failed_on"])
    prior = earlier.groupby("charge_ref").size()
    today = declines.assign(_on=failed_on).sort_values("_on", kind="stable")
    rank = today.groupby("charge_ref").cumcount().reindex(declines.index)
    attempt = declines["charge_ref"].map(prior).fillna(0).astype("int64") + rank + 1
    spacing = np.array(rules.spacing_days)
    gap = pd.Series(
        spacing[np.minimum(attempt.to_numpy() - 1, len(spacing) - 1)], index=declines.index
    )
    gap = np.maximum(gap, declines["wait_days"].fillna(0))
    retry_on = next_banking_day(failed_on + pd.to_timedelta(gap, unit="D"), countries)
    started = declines["charge_ref"].map(first)
    closes = started + pd.to_timedelta(window, unit="D")
    action = pd.Series("retry", index=declines.index, dtype="object")
    reason = declines["reason"].copy()
    exhausted = (attempt > limit) | (pd.to_datetime(retry_on) > closes)
    action[exhausted] = "request_new_method"
    reason[exhausted] = (
        reason[exhausted]
        + "; retry limit reached ("
        + limit[exhausted].astype(str)
        + " in "
        + window[exhausted].astype(str)
        + " days)"
    )
    action[declines["category"].isin(["hard", "update"])] = "request_new_method"
    retry = action == "retry"
    return pd.DataFrame(
        {
            "charge_ref": declines["charge_ref"],
            "debtor_id": declines["debtor_id"],
            "amount_minor": declines["amount_minor"],
            "currency": declines["currency"],
            "network": network,
            "decline_code": declines["decline_code"],
            "category": declines["category"],
            "attempt": attempt.astype("int64"),
            "action": action,
            "retry_on": pd.Series(retry_on, index=declines.index).where(retry, None),
            "reason": reason,
        }
    )[list(INSTRUCTION_COLUMNS)]
