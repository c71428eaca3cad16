"""Match payment lines to open invoices: a cascade from the surest evidence to the weakest.

Each stage only sees the lines the earlier ones left, and every match carries its method and a
confidence, so finance can see *why* money went where it went:

=================  ==========================================================  ==========
method             evidence                                                    confidence
=================  ==========================================================  ==========
reference          an open invoice's number in the remittance text               0.75-0.99
reference_typo     one keying error away from an invoice of the payer/amount          0.90
debtor_amount      the payer is known and one open invoice has exactly the amount      0.95
debtor_sum         the payer is known and 2-3 open items (or all) sum to the amount    0.90
debtor_oldest      the payer is known, nothing adds up: oldest invoices first          0.85
name_amount        payer name close to a debtor who has an invoice of that amount      0.85
amount_date        one invoice of that amount due near the payment date                0.60
name_only          payer name close to one debtor, nothing else                        0.70
=================  ==========================================================  ==========

Confidences of the debtor stages are scaled by how the payer was identified (processor
customer id 1.0, a bank account seen before 0.97, the account number in the text 0.95, the
exact name 0.9).  A reference match is 0.99 when both the payer and the amount agree, 0.97
when one does, 0.85 when neither does but the number is written in full, else 0.75 -- and
0.6 when the payer's name is nothing like the invoice's debtor (a keying error that hit
somebody else's invoice is the usual story).  Matches
below ``payments.auto_apply_confidence`` (0.8) are proposed, not applied: they go to the
exceptions queue with the suggestion.

Allocation is oldest due date first, for partial payments (the rest stays open and is chased)
and overpayments (the surplus pays the debtor's other invoices, then sits on account, in front
of a person).  Credit notes count only where the payer netted them (exact sums).  A payment in
another currency is converted at the rate of its booking day and counts as an exact amount
within ``fx_tolerance``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from dunning.quality import _arrow, _back, empty_frame, extract, isin
from dunning.reconcile.feeds import normalize_text

# Exception reasons (the queue's vocabulary).
UNMATCHED = "UNMATCHED"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
REFERENCE_CONFLICT = "REFERENCE_CONFLICT"
OVERPAYMENT = "OVERPAYMENT"
NO_RATE = "NO_RATE"
DUPLICATE = "DUPLICATE"
UNKNOWN_ORIGINAL = "UNKNOWN_ORIGINAL"

DEBTOR_CONFIDENCE = {"customer_id": 1.0, "account": 0.97, "reference_account": 0.95, "name": 0.9}
MAX_SET_ITEMS = 12  # exact-sum search only for debtors with at most this many open items
NAME_SCORE = 85  # rapidfuzz token_sort_ratio to call a payer name a debtor's
NAME_ONLY_SCORE = 92
STRANGER_SCORE = 60
AMOUNT_PEERS = 20  # an amount more invoices share than this is no clue to who paid
_LINE_INPUT = (
    "line_id", "booked_on", "amount_minor", "currency", "payer_name", "payer_account",
    "reference", "debtor_hint", "invoice_hint",
)  # fmt: skip  # below: a payer name that is not the referenced invoice's debtor
_POOL_ITEM = (
    "source",
    "invoice_id",
    "debtor_id",
    "currency",
    "due_date",
    "open_minor",
    "item_no",
    "key",
)
_KEY = r"^(?P<letters>[A-Z]{0,4})(?P<digits>\d{3,})$"
_LEGAL = r"\b(?:LTD|LIMITED|INC|LLC|LLP|PLC|CORP|CO|GMBH|SARL|SAS|SA|BV|AG|THE)\b"


@dataclass
class Book:
    """What payments are matched against: open items, debtors, known payer accounts, rates."""

    items: pd.DataFrame  # source, invoice_id, debtor_id, doc_type, currency, due_date, open_minor
    debtors: pd.DataFrame  # debtor_id, name
    accounts: pd.DataFrame  # account, debtor_id
    rates: pd.DataFrame  # date, currency, to, rate


@dataclass
class Matched:
    allocations: (
        pd.DataFrame
    )  # line_id, source, invoice_id, debtor_id, currency, amount_minor, method, confidence
    outcomes: pd.DataFrame  # line_id, status, debtor_id, method, confidence, row (input's)
    exceptions: pd.DataFrame  # line_id, reason, detail (JSON text)


ALLOCATION_COLUMNS = (
    "line_id",
    "source",
    "invoice_id",
    "debtor_id",
    "currency",
    "amount_minor",
    "method",
    "confidence",
)


def name_key(names: pd.Series) -> pd.Series:
    """Payer and debtor names compared without case, punctuation or legal-form words (any
    script: letters and digits are kept, in Arrow's RE2)."""
    text = pc.utf8_upper(_arrow(names.fillna("")))
    text = pc.replace_substring_regex(text, r"[^\p{L}\p{N}]+", " ")
    text = pc.replace_substring_regex(text, _LEGAL, " ")
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r" {2,}", " "))
    return _back(text, names.index).fillna("")


def _digits_key(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(key, digits as written, letter prefix): invoice numbers compared without prefix or
    leading zeros."""
    norm = normalize_text(values)
    parts = extract(norm, _KEY)
    digits = parts["digits"]
    stripped = _back(pc.utf8_ltrim(_arrow(digits.fillna("")), characters="0"), digits.index)
    key = stripped.where(digits.notna(), norm)
    return key.fillna(""), digits.fillna(""), parts["letters"].fillna("")


def _tokens(lines: pd.DataFrame, item_keys: pd.Index, debtor_keys: pd.Index) -> pd.DataFrame:
    """The letter/digit runs of each line's reference and invoice hint that can say something:
    an open item's key (``key_no``, its position in ``item_keys``), a debtor's id, or a number
    long enough to be a mistyped invoice number (``key_no`` -1)."""
    text = (lines["reference"].fillna("") + " " + lines["invoice_hint"].fillna("")).str.upper()
    parts = pc.split_pattern_regex(_arrow(text), r"[^0-9A-Z]+")
    flat = pc.list_flatten(parts)
    tokens = pd.DataFrame(
        {"row": pc.list_parent_indices(parts).to_numpy(), "token": flat.to_pandas()}
    )
    tokens = tokens[tokens["token"].str.len() >= 3]
    # Keyed once per distinct token: "INVOICE" is on most lines.
    codes, uniques = pd.factorize(tokens["token"])
    uniques = pd.Series(uniques, dtype="str")
    key, digits, letters = _digits_key(uniques)
    key_no = item_keys.get_indexer(key)
    useful = (key_no >= 0) | (digits.str.len() >= 4).to_numpy() | isin(uniques, debtor_keys)
    same_key = pd.factorize(key)[0]  # "0001234" and "1234" are one key
    tokens = tokens[useful.to_numpy()[codes]]
    codes = codes[useful.to_numpy()[codes]]
    tokens = tokens.assign(
        key=key.to_numpy()[codes], digits=digits.to_numpy()[codes],
        letters=letters.to_numpy()[codes], key_no=key_no[codes],
        line_id=lines["line_id"].to_numpy()[tokens["row"].to_numpy()],
    )  # fmt: skip
    pair = tokens["line_id"].to_numpy() * (len(same_key) + 1) + same_key[codes]
    return tokens[~pd.Series(pair).duplicated().to_numpy()]


def prepare_book(book: Book) -> Book:
    """Keys computed once per run: invoice-number keys, name keys, id keys."""
    items = book.items.assign(due_date=pd.to_datetime(book.items["due_date"]))
    # In allocation order (oldest due date, then invoice number), so that each item's row
    # number, ``item_no``, is both its address (cheap to mark and to debit) and its rank.
    items = items.sort_values(["due_date", "invoice_id", "source"]).reset_index(drop=True)
    items["key"], items["digits"], items["letters"] = _digits_key(items["invoice_id"])
    items["item_no"] = np.arange(len(items))
    debtors = book.debtors.copy()
    debtors["name_key"] = name_key(debtors["name"])
    debtors["id_key"] = normalize_text(debtors["debtor_id"])
    return Book(items, debtors, book.accounts, book.rates)


# --- money in another currency ----------------------------------------------------------------


def convert(
    amount: pd.Series, src: pd.Series, dst: pd.Series, on: pd.Series, rates: pd.DataFrame
) -> pd.Series:
    """``amount`` (minor units of ``src``) in minor units of ``dst`` at the latest rate on or
    before ``on``; NA where no rate is known (either direction of the pair works)."""
    from dunning.quality import currency_exponent

    out = pd.Series(np.where(src.to_numpy() == dst.to_numpy(), amount, np.nan), index=amount.index)
    need = (src != dst) & src.notna() & dst.notna()
    if not need.any() or rates.empty:
        return out.round().astype("Int64")
    both = pd.concat(
        [
            rates[["date", "currency", "to", "rate"]],
            rates.rename(columns={"currency": "to", "to": "currency"}).assign(
                rate=lambda r: 1 / r["rate"]
            )[["date", "currency", "to", "rate"]],
        ],
        ignore_index=True,
    )
    both["date"] = pd.to_datetime(both["date"]).astype("datetime64[ns]")
    both["pair"] = both["currency"] + both["to"]
    ask = pd.DataFrame(
        {
            "pair": (src + dst)[need],
            "date": pd.to_datetime(on[need]).astype("datetime64[ns]"),
            "i": np.flatnonzero(need),
        }
    )
    found = pd.merge_asof(
        ask.sort_values("date"),
        both.sort_values("date")[["date", "pair", "rate"]],
        on="date",
        by="pair",
        direction="backward",
    ).sort_values("i")
    scale = 10.0 ** (
        currency_exponent(dst[need]).fillna(2).to_numpy(dtype="float")
        - currency_exponent(src[need]).fillna(2).to_numpy(dtype="float")
    )
    values = amount[need].to_numpy(dtype="float") * found["rate"].to_numpy(dtype="float") * scale
    out.iloc[found["i"].to_numpy()] = values
    return out.round().astype("Int64")


def _same(a: pd.Series, b: pd.Series, exact: pd.Series, tolerance: float) -> pd.Series:
    a, b = a.astype("float"), b.astype("float")
    return ((a == b) | (~exact & ((a - b).abs() <= tolerance * b.abs()))).fillna(False)


# --- who paid -----------------------------------------------------------------------------------


def identify_debtors(lines: pd.DataFrame, book: Book, tokens: pd.DataFrame) -> pd.DataFrame:
    """``debtor_id`` and ``debtor_how`` per line, from the surest clue present."""
    # Ids that differ only by case or punctuation identify nobody.
    ids = book.debtors.drop_duplicates("id_key", keep=False).set_index("id_key")["debtor_id"]
    found = pd.Series(pd.NA, index=lines.index, dtype="object")
    how = pd.Series(pd.NA, index=lines.index, dtype="object")

    def take(candidate: pd.Series, label: str) -> None:
        fill = found.isna() & candidate.notna()
        found[fill] = candidate[fill]
        how[fill] = label

    take(normalize_text(lines["debtor_hint"]).map(ids), "customer_id")
    if len(book.accounts):
        accounts = book.accounts.set_index("account")["debtor_id"]
        take(normalize_text(lines["payer_account"]).map(accounts), "account")
    in_text = tokens[isin(tokens["token"], ids.index)]
    in_text = in_text.drop_duplicates("row", keep=False)  # two account numbers: no answer
    by_row = pd.Series(in_text["token"].map(ids).to_numpy(), index=in_text["row"].to_numpy())
    take(pd.Series(np.arange(len(lines)), index=lines.index).map(by_row), "reference_account")
    names = book.debtors[book.debtors["name_key"] != ""]
    unique = names.drop_duplicates("name_key", keep=False).set_index("name_key")["debtor_id"]
    rest = found.isna()
    take(name_key(lines.loc[rest, "payer_name"]).map(unique).reindex(lines.index), "name")
    return lines.assign(debtor_id=found, debtor_how=how)


# --- allocation ----------------------------------------------------------------------------------


def allocate(cands: pd.DataFrame) -> pd.DataFrame:
    """Oldest due date first within each line's ranked candidates (``rank`` 0 before 1).

    ``cands``: line_id, avail (the line's amount in the item's currency), rank and the item
    columns.  Returns the candidates that receive money, with ``amount_minor``."""
    cands = cands[cands["avail"].notna()]  # no rate to the item's currency: not a candidate
    if cands.empty:
        return cands.assign(amount_minor=pd.Series(dtype="int64"))
    # Sorted by three integer keys, then only the rows that receive money are taken: the
    # candidates are wide and a full reorder of them costs more than the arithmetic.
    line = cands["line_id"].to_numpy(dtype="int64")
    order = np.lexsort((cands["item_no"].to_numpy(), cands["rank"].to_numpy(), line))
    line, open_ = line[order], cands["open_minor"].to_numpy(dtype="int64")[order]
    prior = np.cumsum(open_) - open_  # open amounts of all earlier rows...
    starts = np.r_[True, line[1:] != line[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(line)), 0))
    before = prior - prior[first]  # ...of the same line
    avail = cands["avail"].to_numpy(dtype="float")[order]
    amount = np.minimum(np.maximum(avail - before, 0), open_).astype("int64")
    paid = amount > 0
    return cands.iloc[order[paid]].assign(amount_minor=amount[paid])


def _with_items(lines: pd.DataFrame, items: pd.DataFrame, on: str, settings) -> pd.DataFrame:
    """Lines joined to items on ``on``, with the line's amount in the item's currency."""
    joined = lines.merge(items, on=on, suffixes=("", "_item"))
    if on == "debtor_id":
        joined["debtor_id_item"] = joined["debtor_id"]
    joined["avail"] = convert(
        joined["amount_minor"], joined["currency"], joined["currency_item"], joined["booked_on"],
        settings.rates,
    )  # fmt: skip
    joined["exact"] = joined["currency"] == joined["currency_item"]
    # One currency per line: its own when the payer owes in it, else one other (a running
    # total across currencies would pay more than was paid).
    own = joined.groupby("line_id")["exact"].transform("any")
    joined = joined[joined["exact"] | ~own]
    first = joined.groupby("line_id")["currency_item"].transform("first")
    return joined[joined["currency_item"] == first]


def _scaled(chosen: pd.DataFrame, scale: pd.Series, factor: float) -> pd.Series:
    """Per row of ``chosen``: its line's debtor confidence times the stage's own."""
    values = scale.reindex(chosen["line_id"]).astype("float").to_numpy() * factor
    return pd.Series(values, index=chosen.index, dtype="float")


def _records(
    alloc: pd.DataFrame, method: str | pd.Series, confidence: float | pd.Series
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line_id": alloc["line_id"],
            "source": alloc["source"],
            "invoice_id": alloc["invoice_id"],
            "debtor_id": alloc["debtor_id_item"],
            "currency": alloc["currency_item"],
            "amount_minor": alloc["amount_minor"].astype("int64"),
            "method": method,
            "confidence": confidence,
        }
    )


@dataclass
class _Settings:
    rates: pd.DataFrame
    tolerance: float
    threshold: float
    window_days: int


class _Cascade:
    """The running state: lines still open, allocations and outcomes so far."""

    def __init__(self, lines: pd.DataFrame, book: Book, settings: _Settings):
        self.book, self.s = book, settings
        # No raw text through the joins, and lines known by their rank in line-id order: an
        # integer is far cheaper to join, group and look up than a hash, and the order (which
        # line goes first when two want the same invoice) stays the line ids' own.
        lines = lines[list(_LINE_INPUT)].reset_index(drop=True)
        order = pc.sort_indices(_arrow(lines["line_id"])).to_numpy()
        self.ids, self.rows = lines["line_id"].to_numpy()[order], order
        rank = np.empty(len(lines), dtype="int64")
        rank[order] = np.arange(len(lines))
        lines["line_id"] = rank
        # Invoice-number keys as integers shared by tokens and items: the reference join is
        # then on numbers.
        book.items["key_no"], item_keys = pd.factorize(book.items["key"])
        self.tokens = _tokens(lines, pd.Index(item_keys), book.debtors["id_key"])
        known = identify_debtors(lines, book, self.tokens)
        self.left = known.drop(
            columns=["reference", "invoice_hint", "debtor_hint", "payer_account"]
        )
        self.allocs: list[pd.DataFrame] = []
        self.outcomes: list[pd.DataFrame] = []
        self.exceptions: list[pd.DataFrame] = []
        self.held = self._mask([])  # lines waiting for the next pass of the stage
        self.touched = np.zeros(len(book.items), dtype=bool)  # items taken in this pass
        self.only: np.ndarray | None = None  # a later pass: just these lines
        self._positive()

    def _positive(self) -> None:
        """Open invoices, with just the columns the stages join and allocate on (these frames
        are joined to a million lines: every column carried costs)."""
        items = self.book.items
        self.is_positive = ((items["open_minor"] > 0) & (items["doc_type"] == "invoice")).to_numpy()
        self.positive = items.loc[self.is_positive, list(_POOL_ITEM)]

    def __setattr__(self, name: str, value) -> None:
        """Changing which lines are left, held or looked at drops the cached ``active``."""
        if name in ("left", "held", "only"):
            object.__setattr__(self, "_active", None)
        object.__setattr__(self, name, value)

    def _mask(self, codes) -> np.ndarray:
        """A bitmap over all lines with ``codes`` set."""
        mask = np.zeros(len(self.ids), dtype=bool)
        mask[np.asarray(codes, dtype="int64")] = True
        return mask

    def _in(self, values: pd.Series, lines: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
        """``values.isin(lines)`` for line codes (``lines`` codes, or already a bitmap)."""
        chosen = lines if isinstance(lines, np.ndarray) and lines.dtype == bool else None
        return (self._mask(lines) if chosen is None else chosen)[values.to_numpy(dtype="int64")]

    @property
    def active(self) -> pd.DataFrame:
        """The lines this pass works on; kept until ``left``, ``held`` or ``only`` change (a
        stage reads it many times, and it is a million-row filter)."""
        if self._active is None:
            left = self.left
            if self.only is not None:
                left = left[self._in(left["line_id"], self.only)]
            self._active = left[~self._in(left["line_id"], self.held)]
        return self._active

    def run(self, stage) -> None:
        """A stage in passes: a line whose invoices another line of the pass also takes waits
        for the next pass, so two payments never take the same open amount (each pass sees
        what the previous one left).  The lowest line id always goes, so passes end."""
        self.only = None
        while True:
            self.held, self.touched = self._mask([]), np.zeros(len(self.book.items), dtype=bool)
            stage()
            if not self.held.any():
                return
            self.only = self.held  # the next pass is for the lines that waited, no others

    def settle(self, chosen: pd.DataFrame, method: str, confidence: pd.Series) -> None:
        """``chosen``: allocations (one row per item, with line_id, avail); ``confidence`` per
        row.  Sure lines are applied (unless they compete for an invoice), unsure ones
        proposed."""
        if chosen.empty:
            return
        conf = confidence.groupby(chosen["line_id"]).max()
        sure = chosen["line_id"].map(conf) >= self.s.threshold
        taking = chosen[sure & chosen["item_no"].notna()]
        item = taking["item_no"].to_numpy(dtype="int64")
        first = taking["line_id"].groupby(item).transform("min")
        late = (first != taking["line_id"]).to_numpy() | self.touched[item]
        wait = self._mask(taking.loc[late, "line_id"])
        self.held = self.held | wait
        self.touched[item[~self._in(taking["line_id"], wait)]] = True
        chosen = chosen[~self._in(chosen["line_id"], wait)]
        conf = conf[~wait[conf.index.to_numpy(dtype="int64")]]
        ok = conf[conf >= self.s.threshold].index
        applied = chosen[self._in(chosen["line_id"], ok)]
        if len(applied):
            paying = applied[applied["amount_minor"] != 0]
            self.allocs.append(_records(paying, method, paying["line_id"].map(conf)))
            self._surplus(applied, conf)
            self._consume(paying)
        proposed = chosen[~self._in(chosen["line_id"], ok)]
        if len(proposed):
            self._exception(proposed, LOW_CONFIDENCE, method, conf)
        debtor = chosen.groupby("line_id")["debtor_id_item"].first()
        self.outcomes.append(
            pd.DataFrame(
                {
                    "line_id": conf.index,
                    "status": np.where(conf >= self.s.threshold, "applied", "exception"),
                    "debtor_id": debtor.reindex(conf.index).to_numpy(),
                    "method": method,
                    "confidence": conf.to_numpy(),
                }
            )
        )
        self.left = self.left[~self._in(self.left["line_id"], conf.index)]

    def _consume(self, paying: pd.DataFrame) -> None:
        """Applied money leaves the items' open amounts for the stages that follow."""
        rows = paying.dropna(subset=["item_no"])
        if rows.empty:
            return
        items = self.book.items
        taken = np.zeros(len(items), dtype="int64")
        np.add.at(taken, rows["item_no"].to_numpy(dtype="int64"), rows["amount_minor"].to_numpy())
        items["open_minor"] = items["open_minor"].to_numpy(dtype="int64") - taken
        self._positive()

    def _surplus(self, applied: pd.DataFrame, conf: pd.Series) -> None:
        """What a line paid beyond its items stays on the debtor's account, for a person."""
        per = applied.groupby("line_id").agg(
            avail=("avail", "first"),
            paid=("amount_minor", "sum"),
            debtor_id=("debtor_id_item", "first"),
            currency=("currency_item", "first"),
        )
        rest = per[per["avail"] > per["paid"]]
        if rest.empty:
            return
        self.allocs.append(
            pd.DataFrame(
                {
                    "line_id": rest.index,
                    "source": None,
                    "invoice_id": None,
                    "debtor_id": rest["debtor_id"].to_numpy(),
                    "currency": rest["currency"].to_numpy(),
                    "amount_minor": (rest["avail"] - rest["paid"]).astype("int64").to_numpy(),
                    "method": "on_account",
                    "confidence": conf.reindex(rest.index).to_numpy(),
                }
            )
        )
        detail = [
            json.dumps({"on_account_minor": int(a - p), "currency": c, "debtor_id": d})
            for a, p, c, d in zip(
                rest["avail"], rest["paid"], rest["currency"], rest["debtor_id"], strict=True
            )
        ]
        self.exceptions.append(
            pd.DataFrame({"line_id": rest.index, "reason": OVERPAYMENT, "detail": detail})
        )

    def _exception(self, proposed: pd.DataFrame, reason: str, method: str, conf: pd.Series) -> None:
        """The proposal as JSON per line (method, confidence, debtor, invoice -> amount), built
        as text columns: there can be tens of thousands a day."""
        pairs = proposed["invoice_id"].astype(str).map(json.dumps) + ": "
        pairs += proposed["amount_minor"].astype("int64").astype(str)
        several = proposed["line_id"].duplicated(keep=False)  # most proposals are one invoice
        invoices = pd.concat(
            [
                pd.Series(pairs[~several].to_numpy(), index=proposed.loc[~several, "line_id"]),
                pairs[several].groupby(proposed.loc[several, "line_id"]).agg(", ".join),
            ]
        ).sort_index()
        debtor = proposed.groupby("line_id")["debtor_id_item"].first().astype(str).map(json.dumps)
        score = conf.reindex(invoices.index).round(3).astype(str)
        detail = (
            f'{{"method": "{method}", "confidence": ' + score + ', "debtor_id": '
            + debtor.reindex(invoices.index) + ', "invoices": {' + invoices + "}}"
        )  # fmt: skip
        self.exceptions.append(
            pd.DataFrame({"line_id": invoices.index, "reason": reason, "detail": detail.to_numpy()})
        )

    def fail(self, lines: pd.DataFrame, reason: str, detail: str | list[str] = "{}") -> None:
        if lines.empty:
            return
        self.exceptions.append(
            pd.DataFrame(
                {"line_id": lines["line_id"].to_numpy(), "reason": reason, "detail": detail}
            )
        )
        self.outcomes.append(
            pd.DataFrame(
                {
                    "line_id": lines["line_id"].to_numpy(),
                    "status": "exception",
                    "debtor_id": lines["debtor_id"].to_numpy(),
                    "method": None,
                    "confidence": np.nan,
                }
            )
        )
        self.left = self.left[~self._in(self.left["line_id"], lines["line_id"])]

    # --- stages ---------------------------------------------------------------------------------

    def by_reference(self) -> None:
        tokens = self.tokens[self._in(self.tokens["line_id"], self.active["line_id"])]
        items = self.book.items[self.book.items["open_minor"] != 0]
        hits = tokens.drop(columns="key").merge(items, on="key_no", suffixes=("_token", ""))
        if hits.empty:
            return
        lines = self.active.set_index("line_id")
        hits["payer"] = hits["line_id"].map(lines["debtor_id"])
        conflict = hits["payer"].notna() & (hits["payer"] != hits["debtor_id"])
        agreeing = hits[~conflict]
        # Only conflicting references: another debtor's invoice -- a person decides.
        only_conflict = hits[conflict & ~self._in(hits["line_id"], agreeing["line_id"])]
        if len(only_conflict):
            detail = only_conflict.groupby("line_id")["invoice_id"].agg(
                lambda v: json.dumps({"invoices": sorted(set(map(str, v)))})
            )
            self.fail(
                self.active[self._in(self.active["line_id"], detail.index)].sort_values("line_id"),
                REFERENCE_CONFLICT,
                detail.sort_index().tolist(),
            )
        if agreeing.empty:
            return
        # Strong: written as the invoice is (its prefix, or all its leading zeros).
        bare = agreeing["letters_token"] == ""
        strong = (agreeing["letters_token"] == agreeing["letters"]) & (agreeing["letters"] != "")
        strong |= bare & (agreeing["digits_token"] == agreeing["digits"])
        self._apply_referenced(agreeing.assign(strong=strong), "reference")

    def by_typo(self) -> None:
        """One substitution or swap away from an invoice of the payer, or of the paid amount."""
        from rapidfuzz.distance import DamerauLevenshtein
        from rapidfuzz.process import cpdist

        tokens = self.tokens[
            self._in(self.tokens["line_id"], self.active["line_id"])
            & (self.tokens["digits"].str.len() >= 4)
            & (self.tokens["key_no"] < 0)
        ]
        if tokens.empty:
            return
        lines = self.active[["line_id", "debtor_id", "amount_minor", "currency"]]
        t = tokens.merge(lines, on="line_id")
        items = self.positive[
            ["source", "invoice_id", "debtor_id", "key", "open_minor", "currency", "item_no"]
        ]
        cols = ["line_id", "key_token", "key", "source", "invoice_id", "item_no"]
        of_payer = t.dropna(subset=["debtor_id"]).merge(
            items.drop(columns="currency"), on="debtor_id", suffixes=("_token", "")
        )
        of_amount = (
            t[t["debtor_id"].isna()]
            .drop(columns="debtor_id")
            .merge(
                _telling(items).rename(columns={"open_minor": "amount_minor"}),
                on=["amount_minor", "currency"],
                suffixes=("_token", ""),
            )
        )
        pairs = pd.concat([of_payer[cols], of_amount[cols]], ignore_index=True)
        pairs = pairs[pairs["key_token"].str.len().sub(pairs["key"].str.len()).abs() <= 1]
        if pairs.empty:
            return
        distance = cpdist(
            pairs["key_token"].tolist(),
            pairs["key"].tolist(),
            scorer=DamerauLevenshtein.distance,
            workers=-1,
        )
        close = pairs[distance == 1].drop_duplicates(["line_id", "source", "invoice_id"])
        close = close[close.groupby("line_id")["invoice_id"].transform("nunique") == 1]
        if close.empty:
            return
        self._apply_referenced(close.assign(strong=True, typo=True), "reference_typo")

    def _apply_referenced(self, hits: pd.DataFrame, method: str) -> None:
        """Referenced items first, then the debtor's other invoices; confidence from agreement."""
        lines = self.active.set_index("line_id")
        ref = hits[["line_id", "item_no", "strong"]].drop_duplicates(["line_id", "item_no"])
        ref_items = self.book.items.iloc[ref["item_no"].to_numpy()].assign(
            line_id=ref["line_id"].to_numpy(), strong=ref["strong"].to_numpy()
        )
        debtor = self._referenced_debtor(ref_items)
        ref_items = ref_items[ref_items["debtor_id"] == ref_items["line_id"].map(debtor)]
        ref = ref[np.isin(ref["item_no"], ref_items["item_no"])]
        base = self.active[self._in(self.active["line_id"], debtor.index)]
        base = base.drop(columns=["debtor_id", "payer_name"])
        base = base.assign(debtor_id=base["line_id"].map(debtor))
        # The referenced invoices (cash pays invoices: a referenced credit note is left out)...
        named = ref_items.loc[
            self.is_positive[ref_items["item_no"].to_numpy()], ["line_id", *_POOL_ITEM]
        ]
        first = _with_items(base, named.drop(columns="debtor_id"), "line_id", self.s)
        first["debtor_id_item"], first["rank"] = first["debtor_id"], 0
        # ...then, only for lines that pay more than those, the debtor's other invoices.
        covered = first.groupby("line_id")["open_minor"].sum()
        avail_first = first.groupby("line_id")["avail"].first()
        more = base[
            ~self._in(base["line_id"], covered.index)
            | base["line_id"].map(avail_first).gt(base["line_id"].map(covered)).fillna(False)
        ]
        rest = _with_items(more, self.positive, "debtor_id", self.s)
        pair = len(self.book.items)  # (line, item) as one integer
        taken = named["line_id"].to_numpy(dtype="int64") * pair + named["item_no"].to_numpy()
        codes = rest["line_id"].to_numpy(dtype="int64") * pair + rest["item_no"].to_numpy()
        rest = rest[~pd.Series(codes).isin(taken).to_numpy()]
        pool = pd.concat([first, rest.assign(rank=1)], ignore_index=True)
        chosen = allocate(pool)
        if chosen.empty:
            return
        ref_total = pool[pool["rank"] == 0].groupby("line_id")["open_minor"].sum()
        avail = pool.groupby("line_id")["avail"].first()
        exact = pool.groupby("line_id")["exact"].first()
        amount_ok = _same(avail, ref_total.reindex(avail.index), exact, self.s.tolerance)
        payer_ok = lines["debtor_id"].reindex(avail.index).notna()
        strong = ref.groupby("line_id")["strong"].any().reindex(avail.index).fillna(False)
        conf = pd.Series(0.75, index=avail.index)
        conf[strong] = 0.85
        conf[amount_ok | payer_ok] = 0.97 if method == "reference" else 0.9
        conf[amount_ok & payer_ok] = 0.99 if method == "reference" else 0.9
        # An unknown payer whose name is nothing like the invoice's debtor, paying another
        # amount: likely a keying error that hit someone else's invoice -- a person decides.
        from rapidfuzz.fuzz import token_sort_ratio
        from rapidfuzz.process import cpdist

        doubt = avail.index[~payer_ok.to_numpy() & ~amount_ok.to_numpy()]
        if len(doubt):
            names = self.book.debtors.set_index("debtor_id")["name_key"]
            payer = name_key(lines["payer_name"].reindex(doubt))
            owner = doubt.to_series().map(debtor).map(names).fillna("")
            score = cpdist(payer.tolist(), owner.tolist(), scorer=token_sort_ratio, workers=-1)
            stranger = (payer != "").to_numpy() & (score < STRANGER_SCORE)
            conf[doubt[stranger]] = 0.6
        self.settle(chosen, method, chosen["line_id"].map(conf))

    def _referenced_debtor(self, ref_items: pd.DataFrame) -> pd.Series:
        """When a line's numbers point at several debtors' invoices, the debtor whose
        referenced total is the amount, then the one written as its invoices are; a tie is
        left to a person."""
        lines = self.active.set_index("line_id")
        debtors, names = pd.factorize(ref_items["debtor_id"])  # grouped by number, not text
        per = (
            ref_items.assign(debtor=debtors)
            .groupby(["line_id", "debtor"])
            .agg(
                total=("open_minor", "sum"),
                strong=("strong", "any"),
                currency=("currency", "first"),
            )
        )
        per = per.reset_index()
        per["debtor_id"] = np.asarray(names, dtype=object)[per["debtor"].to_numpy()]
        amount = per["line_id"].map(lines["amount_minor"])
        same = per["currency"] == per["line_id"].map(lines["currency"])
        per["score"] = 2 * (same & (amount == per["total"])).astype(int) + per["strong"].astype(int)
        best = per[per["score"] == per.groupby("line_id")["score"].transform("max")]
        tied = best["line_id"].duplicated(keep=False)
        if tied.any():
            unsure = (
                best[tied]
                .groupby("line_id")["debtor_id"]
                .agg(lambda v: json.dumps({"debtors": sorted(map(str, v))}))
            )
            self.fail(
                self.active[self._in(self.active["line_id"], unsure.index)].sort_values("line_id"),
                REFERENCE_CONFLICT,
                unsure.sort_index().tolist(),
            )
        return best[~tied].set_index("line_id")["debtor_id"]

    def by_debtor(self) -> None:
        left = self.active.dropna(subset=["debtor_id"])
        if left.empty:
            return
        pool = _with_items(left, self.positive, "debtor_id", self.s)
        scale = left.set_index("line_id")["debtor_how"].map(DEBTOR_CONFIDENCE)
        no_rate = pool["avail"].isna()
        missing = left[
            self._in(left["line_id"], pool.loc[no_rate, "line_id"])
            & ~self._in(left["line_id"], pool.loc[~no_rate, "line_id"])
        ]
        self.fail(missing, NO_RATE)
        pool = pool[~no_rate]
        # One invoice of exactly the amount (the oldest, if several).
        equal = pool[_same(pool["avail"], pool["open_minor"], pool["exact"], self.s.tolerance)]
        one = equal.sort_values(["line_id", "due_date"]).drop_duplicates("line_id")
        one = one.assign(
            rank=0, amount_minor=one["avail"].clip(upper=one["open_minor"]).astype("int64")
        )
        self.settle(one, "debtor_amount", _scaled(one, scale, 0.95))
        # Several items (credit notes netted) that sum to the amount.
        sets = self._exact_sets(self.active.dropna(subset=["debtor_id"]))
        if len(sets):
            self.settle(sets, "debtor_sum", _scaled(sets, scale, 0.9))
        rest = pool[self._in(pool["line_id"], self.active["line_id"])].assign(rank=0)
        chosen = allocate(rest)
        self.settle(chosen, "debtor_oldest", _scaled(chosen, scale, 0.85))
        # Known payer with nothing open in reach: all of it on account, for a person.
        idle = self.active.dropna(subset=["debtor_id"])
        if len(idle):
            idle = idle.assign(
                debtor_id_item=idle["debtor_id"], currency_item=idle["currency"],
                avail=idle["amount_minor"], item_no=np.nan, source=None, invoice_id=None, amount_minor=0,
            )  # fmt: skip
            self.settle(idle, "on_account", _scaled(idle, scale, 1.0))

    def _exact_sets(self, left: pd.DataFrame) -> pd.DataFrame:
        """Pairs, triples and the whole open balance (credit notes included) equal to the amount."""
        items = self.book.items[self.book.items["open_minor"] != 0]
        counts = items.groupby("debtor_id")["invoice_id"].transform("size")
        items = items[counts <= MAX_SET_ITEMS].reset_index(drop=True)
        items["item"] = np.arange(len(items))
        pool = _with_items(left, items, "debtor_id", self.s).dropna(subset=["avail"])
        if pool.empty:
            return pool
        cols = ["line_id", "item", "open_minor", "avail", "exact"]
        a = pool[cols]
        found = []
        total = a.groupby("line_id")["open_minor"].sum()
        first = a.groupby("line_id")[["avail", "exact"]].first()
        whole = _same(first["avail"], total.reindex(first.index), first["exact"], self.s.tolerance)
        whole_lines = whole[whole].index
        if len(whole_lines):
            found.append(
                a[self._in(a["line_id"], whole_lines)][["line_id", "item"]].assign(set_id=0)
            )
        pairs = a.merge(a[["line_id", "item", "open_minor"]], on="line_id", suffixes=("", "_2"))
        pairs = pairs[pairs["item"] < pairs["item_2"]]
        pairs = pairs.assign(total=pairs["open_minor"] + pairs["open_minor_2"])
        triples = pairs.merge(
            a[["line_id", "item", "open_minor"]].rename(
                columns={"item": "item_3", "open_minor": "open_minor_3"}
            ),
            on="line_id",
        )
        triples = triples[triples["item_2"] < triples["item_3"]]
        triples = triples.assign(total=triples["total"] + triples["open_minor_3"])
        for size, frame in ((2, pairs), (3, triples)):
            hit = frame[_same(frame["avail"], frame["total"], frame["exact"], self.s.tolerance)]
            hit = hit[~self._in(hit["line_id"], whole_lines)]
            hit = hit.drop_duplicates("line_id")  # the first set found; a person sees the method
            for k in range(1, size + 1):
                column = "item" if k == 1 else f"item_{k}"
                found.append(
                    hit[["line_id", column]].rename(columns={column: "item"}).assign(set_id=size)
                )
        if not found:
            return pool.iloc[0:0]
        chosen = pd.concat(found, ignore_index=True)
        chosen = chosen.sort_values("set_id").drop_duplicates(["line_id", "item"])
        first_set = chosen.groupby("line_id")["set_id"].transform("min")
        chosen = chosen[chosen["set_id"] == first_set]
        out = chosen.merge(pool, on=["line_id", "item"])
        return out.assign(rank=0, amount_minor=out["open_minor"].astype("int64"))

    def by_amount(self) -> None:
        """Unknown payer: an invoice of exactly the amount, named like the payer, or due near."""
        from rapidfuzz.fuzz import token_sort_ratio
        from rapidfuzz.process import cpdist

        left = self.active[self.active["debtor_id"].isna()]
        if left.empty:
            return
        pool = left.drop(columns="debtor_id").merge(
            _telling(self.positive).rename(columns={"open_minor": "amount_minor"}),
            on=["amount_minor", "currency"],
            suffixes=("", "_item"),
        )
        if pool.empty:
            return
        pool = pool.assign(
            open_minor=pool["amount_minor"], avail=pool["amount_minor"],
            currency_item=pool["currency"], debtor_id_item=pool["debtor_id"], rank=0,
        )  # fmt: skip
        names = self.book.debtors.set_index("debtor_id")["name_key"]
        payer = name_key(pool["payer_name"])
        score = cpdist(
            payer.tolist(),
            pool["debtor_id"].map(names).fillna("").tolist(),
            scorer=token_sort_ratio,
            workers=-1,
        )
        pool["score"] = np.where(payer.to_numpy() != "", score, 0)
        named = pool[pool["score"] >= NAME_SCORE]
        best = named.sort_values(["line_id", "score", "due_date"], ascending=[True, False, True])
        best = best.drop_duplicates("line_id")
        self.settle(best, "name_amount", pd.Series(0.85, index=best.index))
        pool = pool[self._in(pool["line_id"], self.active["line_id"])]
        gap = (pd.to_datetime(pool["booked_on"]) - pool["due_date"]).dt.days.abs()
        near = pool[gap <= self.s.window_days]
        near = near[near.groupby("line_id")["invoice_id"].transform("size") == 1]
        self.settle(near, "amount_date", pd.Series(0.6, index=near.index))

    def by_name(self) -> None:
        """Unknown payer, nothing else to go on: a close name proposes the debtor (for review)."""
        from rapidfuzz.fuzz import token_sort_ratio
        from rapidfuzz.process import cdist

        left = self.active[self.active["debtor_id"].isna()].copy()
        left["name_key"] = name_key(left["payer_name"])
        left = left[left["name_key"].str.len() >= 4]
        if left.empty:
            return
        debtors = self.book.debtors[self.book.debtors["name_key"].str.len() >= 4]
        blocks = dict(tuple(debtors.groupby(debtors["name_key"].str.slice(0, 2))))
        found = []
        for prefix, group in left.groupby(left["name_key"].str.slice(0, 2)):
            names = blocks.get(prefix)
            if names is None:
                continue
            scores = cdist(
                group["name_key"].tolist(),
                names["name_key"].tolist(),
                scorer=token_sort_ratio,
                workers=-1,
            )
            best = scores.argmax(axis=1)
            top = scores[np.arange(len(group)), best]
            keep = top >= NAME_ONLY_SCORE
            found.append(
                pd.DataFrame(
                    {
                        "line_id": group["line_id"].to_numpy()[keep],
                        "debtor_id": names["debtor_id"].to_numpy()[best[keep]],
                    }
                )
            )
        if not found:
            return
        guess = pd.concat(found, ignore_index=True)
        lines = left.drop(columns="debtor_id").merge(guess, on="line_id")
        pool = _with_items(lines, self.positive, "debtor_id", self.s).dropna(subset=["avail"])
        pool["rank"] = 0
        chosen = allocate(pool)
        self.settle(chosen, "name_only", pd.Series(0.7, index=chosen.index))

    def result(self) -> Matched:
        self.fail(self.left, UNMATCHED)
        allocs = pd.concat(self.allocs, ignore_index=True) if self.allocs else _empty_allocations()
        outcomes = (
            pd.concat(self.outcomes, ignore_index=True)
            if self.outcomes
            else empty_frame(
                ["line_id", "status", "debtor_id", "method", "confidence"], confidence="float"
            )
        )
        exceptions = (
            pd.concat(self.exceptions, ignore_index=True)
            if self.exceptions
            else pd.DataFrame(columns=["line_id", "reason", "detail"])
        )
        exceptions = exceptions.drop_duplicates("line_id")
        outcomes["row"] = self.rows[outcomes["line_id"].to_numpy(dtype="int64")]
        frames = (allocs[list(ALLOCATION_COLUMNS)], outcomes, exceptions)
        return Matched(*(self._named(f) for f in frames))

    def _named(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Line codes back to line ids."""
        return frame.assign(line_id=self.ids[frame["line_id"].to_numpy(dtype="int64")])


def _telling(items: pd.DataFrame) -> pd.DataFrame:
    """Open items whose amount says something: an amount that more than ``AMOUNT_PEERS``
    invoices share (a standard monthly bill) identifies nobody, and joining on it would pair
    each such payment with thousands of invoices."""
    peers = items.groupby(["open_minor", "currency"])["open_minor"].transform("size")
    return items[peers <= AMOUNT_PEERS]


def _empty_allocations() -> pd.DataFrame:
    return empty_frame(ALLOCATION_COLUMNS, amount_minor="int64")


def match_payments(
    lines: pd.DataFrame,
    book: Book,
    *,
    threshold: float,
    tolerance: float,
    window_days: int,
) -> Matched:
    """Run the cascade over payment lines (kind ``payment``) against a prepared book."""
    settings = _Settings(book.rates, tolerance, threshold, window_days)
    book = Book(book.items.copy(), book.debtors, book.accounts, book.rates)
    cascade = _Cascade(lines, book, settings)
    if not lines.empty:
        for stage in (
            cascade.by_reference, cascade.by_typo, cascade.by_debtor, cascade.by_amount,
            cascade.by_name,
        ):  # fmt: skip
            cascade.run(stage)
    return cascade.result()
