"""Placement and recall files in each agency's layout, and publishing them (contract C4).

Publishing follows invariant 5: the data files first, ``manifest.json`` last, each one a single
atomic put (S3) or rename (local), so a reader who waits for the manifest never sees half a
delivery.  A re-run of the same date whose content is the same leaves every object untouched.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dunning import clock, lake
from dunning.config import Layout
from dunning.errors import ConfigError
from dunning.quality import neutralize

SCHEMA_VERSION = "1"
DELIMITERS = {"csv": ",", "pipe": "|"}
MONEY_TOTALS = ("principal_minor", "interest_minor", "fees_minor")


@dataclass
class DataFile:
    """One file of a delivery, before publishing: its bytes and the control totals it carries."""

    name: str
    kind: str  # placements | recalls
    data: bytes
    rows: int
    balance_minor_total: int
    totals: dict[str, int] = field(default_factory=dict)


Spec = tuple[str, str, int | None]  # record column, header, fixed width


def layout_specs(layout: Layout) -> list[Spec]:
    return [(f.field, f.header or f.field, f.width) for f in layout.fields]


WIDEST_DATE = date(2026, 12, 31)  # a date whose rendering is as wide as any


def recall_specs(layout: Layout) -> list[Spec]:
    """Recalls travel in the agency's own format (delimiter, dates, trailer): the reference,
    the date and the reason, and the customer reference only if the agency gets it anyway."""
    date_width = len(WIDEST_DATE.strftime(layout.date_format))
    specs: list[Spec] = [("account_ref", "account_ref", 96)]
    if any(f.field == "customer_ref" for f in layout.fields):
        specs.append(("customer_ref", "customer_ref", 64))
    return [*specs, ("recall_date", "recall_date", date_width), ("reason", "reason", 16)]


def _text(records: pd.DataFrame, specs: list[Spec], date_format: str) -> pd.DataFrame:
    """The fields as text: dates in the layout's format, flags Y/N, empty for missing; text
    fields neutralized against spreadsheet formulas (numbers stay numbers: ``-5`` is ``-5``)."""
    out = {}
    free_text = []
    for column, header, _ in specs:
        col = records[column]
        if pd.api.types.is_datetime64_any_dtype(col):
            text = col.dt.strftime(date_format)
        elif pd.api.types.is_bool_dtype(col):
            text = pd.Series(np.where(col.to_numpy(), "Y", "N"), index=col.index)
        elif pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col):
            text = col.astype("Int64").astype("string")
        else:
            text = col.astype("string")
            free_text.append(header)
        out[header] = text.fillna("").astype("object")
    frame = pd.DataFrame(out, index=records.index)
    frame[free_text] = neutralize(frame[free_text])
    return frame


def too_long(records: pd.DataFrame, layout: Layout) -> pd.Series:
    """Per row, the first field wider than its fixed width ("" when none): cut, the agency
    would get a wrong email or name, so such an account is held back with the reason."""
    out = pd.Series("", index=records.index, dtype="object")
    if layout.format != "fixed" or records.empty:
        return out
    specs = layout_specs(layout)
    text = _text(records, specs, layout.date_format)
    for column, header, width in specs:
        wide = (text[header].str.len() > width).to_numpy()
        out[wide] = np.where(out[wide] == "", f"too_long:{column}", out[wide])
    return out


def render(
    records: pd.DataFrame,
    layout: Layout,
    specs: list[Spec] | None = None,
    total_field: str | None = "balance_minor",
) -> bytes:
    """The records in the layout: only its fields, formula-looking text neutralized, UTF-8, LF.

    Fixed-width: text left-justified and space-padded, numbers right-justified zero-padded; no
    header.  ``trailer``: a last ``T`` row with the record count and the money total.
    """
    specs = specs or layout_specs(layout)
    text = _text(records, specs, layout.date_format)
    total = int(records[total_field].sum()) if total_field else 0
    if layout.format == "fixed":
        parts = [
            text[header].str.rjust(width, "0")
            if pd.api.types.is_integer_dtype(records[column])
            else text[header].str.ljust(width)
            for column, header, width in specs
        ]
        body = parts[0].str.cat(parts[1:]).add("\n").str.cat() if len(text) else ""
        if layout.trailer:
            body += f"T{len(records):09d}{total:015d}\n"
        return body.encode("utf-8")
    buf = io.StringIO()
    sep = DELIMITERS[layout.format]
    text.to_csv(buf, sep=sep, index=False, header=layout.header, lineterminator="\n")
    if layout.trailer:
        buf.write(sep.join(["T", str(len(records)), str(total)]) + "\n")
    return buf.getvalue().encode("utf-8")


def encrypt(data: bytes, public_key: Path) -> tuple[bytes, str]:
    """PGP-encrypt to the agency's public key (binary OpenPGP); returns the bytes and the key's
    fingerprint (written in the manifest so the agency knows which key to use)."""
    import gnupg

    with tempfile.TemporaryDirectory(prefix="dunning-gpg-") as home:
        gpg = gnupg.GPG(gnupghome=home)
        imported = gpg.import_keys(public_key.read_text(encoding="utf-8"))
        if not imported.fingerprints:
            raise ConfigError(f"{public_key}: not an OpenPGP public key ({imported.stderr[-200:]})")
        fingerprint = imported.fingerprints[0]
        result = gpg.encrypt(data, fingerprint, armor=False, always_trust=True)
        if not result.ok:
            raise RuntimeError(f"PGP encryption to {fingerprint} failed: {result.status}")
        return result.data, fingerprint


def prefix(agency: str, as_of: date) -> str:
    """The delivery's key prefix under the placement root (C4)."""
    return f"placements/agency={agency}/as_of={as_of.isoformat()}"


def folder(root: Any, agency: str, as_of: date) -> Any:
    return root / prefix(agency, as_of)


def _put_args(sse: str, kms_key_id: str | None) -> dict[str, str]:
    args = {"ServerSideEncryption": sse}
    if kms_key_id:
        args["SSEKMSKeyId"] = kms_key_id
    return args


def publish(
    root: Any,
    agency: str,
    as_of: date,
    files: list[DataFile],
    *,
    creditor: str,
    sse: str = "AES256",
    kms_key_id: str | None = None,
    public_key: Path | None = None,
    references: list[str] | None = None,
) -> dict:
    """Write the files, then the manifest; returns the manifest plus ``changed``.

    ``references``: the earlier deliveries (their manifests' keys) this one amends -- the
    placements a recall file calls back, which stay as they were published.

    A delivery whose manifest is written is published, and a published delivery is immutable:
    an agency may have loaded it already.  Nothing is written then (``changed`` False); when the
    content asked for differs, ``differs`` says so, for the log -- a correction goes out as a
    new delivery of its own date, never as a rewrite."""
    where = folder(root, agency, as_of)
    manifest_path = where / "manifest.json"
    digests = {f.name: hashlib.sha256(f.data).hexdigest() for f in files}
    if manifest_path.exists():
        before = lake.read_json(manifest_path)
        same = {e["name"].removesuffix(".pgp"): e.get("plaintext_sha256") for e in before["files"]}
        return {**before, "changed": False, "differs": same != digests}
    put = _put_args(sse, kms_key_id)
    entries, fingerprint = [], None
    for f in files:
        payload, name = f.data, f.name
        if public_key is not None:
            payload, fingerprint = encrypt(f.data, public_key)
            name += ".pgp"
        lake.write_bytes(where / name, payload, **put)
        entries.append(
            {
                "name": name,
                "kind": f.kind,
                "sha256": hashlib.sha256(payload).hexdigest(),
                "plaintext_sha256": digests[f.name],
                "rows": f.rows,
                "balance_minor_total": f.balance_minor_total,
                **f.totals,
            }
        )
    manifest = {
        "agency": agency,
        "as_of": as_of.isoformat(),
        "creditor": creditor,
        "schema_version": SCHEMA_VERSION,
        "files": entries,
        "encryption": {"server_side": sse, "kms_key_id": kms_key_id, "pgp_key": fingerprint},
        "references": references or [],
        "created_at": clock.utcnow().isoformat(timespec="seconds"),
    }
    lake.write_json(manifest_path, manifest, **put)
    return {**manifest, "changed": True, "differs": False}


def uri(path: Any) -> str:
    """The object's address as a reader outside Airflow writes it (``s3://bucket/key``, without
    the Airflow connection id that ``ObjectStoragePath`` carries)."""
    if lake.is_local(path):
        return Path(path.path).resolve().as_uri()
    return f"{path.protocol}://{path.path}"
