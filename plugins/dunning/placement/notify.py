"""Telling an agency its files are there, after checking they are what the manifest says.

Runs in ``dunning_agency_notify``, scheduled on the placement-files Asset: a reader of the
delivery, so it re-hashes every published object against the manifest before anyone is told.
The notice carries counts, totals and keys only -- no debtor data travels by email.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from typing import Any

from dunning import lake


class ManifestMismatch(ValueError):
    """A published object is missing or differs from its manifest entry."""


def verify(root: Any, manifest_key: str) -> dict:
    """The manifest, after checking each listed object's sha256."""
    manifest_path = root / manifest_key
    manifest = lake.read_json(manifest_path)
    for entry in manifest["files"]:
        path = manifest_path.parent / entry["name"]
        if not path.exists():
            raise ManifestMismatch(f"{manifest_key}: {entry['name']} is listed but missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise ManifestMismatch(
                f"{manifest_key}: {entry['name']} has sha256 {digest}, manifest says "
                f"{entry['sha256']}"
            )
    return manifest


def notice(manifest: dict, manifest_key: str, sender: str, recipient: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, recipient
    msg["Subject"] = (
        f"{manifest['creditor']}: new files for {manifest['agency']}, {manifest['as_of']}"
    )
    lines = [
        f"New files from {manifest['creditor']} are ready for {manifest['agency']}.",
        "",
        f"Manifest: {manifest_key}",
    ]
    lines += [
        f"- {e['name']} ({e['kind']}): {e['rows']} rows, balance total {e['balance_minor_total']} "
        f"(minor units), sha256 {e['sha256']}"
        for e in manifest["files"]
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg
