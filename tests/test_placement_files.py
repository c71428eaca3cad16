"""Placement files: each layout, only the fields it asks for, no formulas, PGP, the manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import gnupg
import pandas as pd
import pytest

from dunning import lake
from dunning.config import PLACEMENT_FIELDS, Layout
from dunning.placement import files, notify

AS_OF = date(2026, 11, 23)


def records(n: int = 2, **overrides) -> pd.DataFrame:
    """Full records with distinctive values in every field (as ``records.build_records`` makes)."""
    values = {}
    for f in PLACEMENT_FIELDS:
        if f.endswith("_minor") or f in ("invoice_count", "days_past_due"):
            values[f] = pd.Series(range(1000, 1000 + n), dtype="int64") * 7
        elif f.endswith("_date"):
            values[f] = pd.to_datetime(["2026-08-01"] * n)
        elif f in (
            "email_consent",
            "email_opt_out",
            "employer_email",
            "sms_consent",
            "sms_opt_out",
            "call_opt_out",
            "cease_communication",
            "attorney_represented",
            "payment_plan",
            "promise_broken",
            "vulnerable",
        ):
            values[f] = pd.Series([True, False] * (n // 2) + [True] * (n % 2))
        else:
            values[f] = pd.Series([f"{f}-value-{i}" for i in range(n)], dtype="object")
    frame = pd.DataFrame(values)
    for k, v in overrides.items():
        frame[k] = v
    return frame  # fmt: skip


def layout(fmt: str = "csv", **kw) -> Layout:
    fields = kw.pop("fields", ["account_ref", "name", "balance_minor", "due_date", "vulnerable"])
    return Layout.model_validate({"format": fmt, "fields": fields, **kw})


def test_csv_layout_has_only_its_fields_in_its_order_with_iso_dates():
    text = files.render(records(), layout()).decode("utf-8")
    lines = text.split("\n")
    assert lines[0] == "account_ref,name,balance_minor,due_date,vulnerable"
    assert lines[1] == "account_ref-value-0,name-value-0,7000,2026-08-01,Y"
    assert text.endswith("\n") and "\r" not in text and len(lines) == 4


def test_pipe_layout_with_headers_renamed_and_a_trailer():
    spec = layout(
        "pipe",
        fields=[{"field": "account_ref", "header": "AccountRef"}, "balance_minor"],
        date_format="%Y%m%d",
        trailer=True,
    )
    lines = files.render(records(3), spec).decode("utf-8").splitlines()
    assert lines[0] == "AccountRef|balance_minor"
    assert lines[1] == "account_ref-value-0|7000"
    assert lines[-1] == f"T|3|{7000 + 7007 + 7014}"


def test_fixed_width_pads_text_and_numbers_and_ends_with_the_control_row():
    spec = layout(
        "fixed",
        fields=[
            {"field": "account_ref", "width": 22},
            {"field": "balance_minor", "width": 10},
            {"field": "due_date", "width": 8},
            {"field": "vulnerable", "width": 1},
        ],
        date_format="%Y%m%d",
        trailer=True,
    )
    lines = files.render(records(2), spec).decode("utf-8").splitlines()
    assert lines[0] == "account_ref-value-0   000000700020260801Y"
    assert all(len(line) == 41 for line in lines[:2])
    assert lines[2] == "T000000002000000000014007"


def test_a_value_too_wide_for_its_fixed_field_holds_the_account_back_instead_of_cutting_it():
    spec = layout("fixed", fields=[{"field": "account_ref", "width": 30},
                                   {"field": "email", "width": 12}])  # fmt: skip
    frame = records(2, email=["a@b.example", "someone.long@example.com"])
    assert list(files.too_long(frame, spec)) == ["", "too_long:email"]
    assert list(files.too_long(frame, layout())) == ["", ""]  # delimited: nothing is cut


def test_data_minimization_a_field_the_layout_does_not_ask_for_never_leaves():
    frame = records(2, email=["secret.person@example.com"] * 2, phone=["+15550001111"] * 2)
    for spec in (
        layout(),
        layout("pipe"),
        layout("fixed", fields=[{"field": "name", "width": 20}]),
    ):
        text = files.render(frame, spec).decode("utf-8")
        assert "secret.person" not in text and "5550001111" not in text
        for field in set(PLACEMENT_FIELDS) - {f.field for f in spec.fields}:
            assert f"{field}-value" not in text, field


@pytest.mark.parametrize("fmt", ["csv", "pipe"])
def test_cells_that_a_spreadsheet_would_run_are_neutralized(fmt):
    frame = records(4, name=['=HYPERLINK("http://x")', "+1-2", "@SUM(A1)", "-cmd|' /C calc'!A0"])
    rows = pd.read_csv(
        pd.io.common.StringIO(files.render(frame, layout(fmt)).decode("utf-8")),
        sep=files.DELIMITERS[fmt],
        dtype=str,
    )
    assert all(v.startswith("'") for v in rows["name"])
    assert rows["balance_minor"].tolist() == ["7000", "7007", "7014", "7021"]  # numbers untouched
    negative = files.render(records(1, fees_minor=[-5]), layout(fmt, fields=["fees_minor"]))
    assert negative == b"fees_minor\n-5\n"


def test_pgp_round_trip_with_the_agencys_key(agency_gpg):
    public, home = agency_gpg
    data = files.render(records(3), layout())
    encrypted, fingerprint = files.encrypt(data, public)
    assert data not in encrypted and len(fingerprint) == 40
    gpg = gnupg.GPG(gnupghome=str(home))
    assert gpg.decrypt(encrypted).data == data


def test_publish_writes_files_then_manifest_and_a_rerun_changes_nothing(tmp_path):
    root = lake.root(tmp_path.as_uri())
    data = files.render(records(3), layout())
    part = files.DataFile("placements.csv", "placements", data, 3, 21021, {"fees_minor": 9})
    first = files.publish(root, "acme", AS_OF, [part], creditor="Test Co")
    folder = tmp_path / "placements" / "agency=acme" / "as_of=2026-11-23"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert first["changed"] and manifest["agency"] == "acme" and manifest["as_of"] == "2026-11-23"
    assert set(manifest) >= {"agency", "as_of", "files", "schema_version", "created_at"}
    entry = manifest["files"][0]
    assert entry["sha256"] == hashlib.sha256((folder / "placements.csv").read_bytes()).hexdigest()
    assert (entry["rows"], entry["balance_minor_total"], entry["fees_minor"]) == (3, 21021, 9)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    again = files.publish(root, "acme", AS_OF, [part], creditor="Test Co")
    assert not again["changed"] and (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert notify.verify(root, "placements/agency=acme/as_of=2026-11-23/manifest.json")
    (folder / "placements.csv").write_bytes(data + b"x")
    with pytest.raises(notify.ManifestMismatch, match=r"placements\.csv has sha256"):
        notify.verify(root, "placements/agency=acme/as_of=2026-11-23/manifest.json")


def test_a_published_delivery_is_never_rewritten(tmp_path):
    """An agency may have loaded it already: other content for the same date is refused (and
    said, for the log), the objects and the manifest stay as published."""
    root = lake.root(tmp_path.as_uri())
    part = files.DataFile("placements.csv", "placements", files.render(records(3), layout()), 3, 1)
    files.publish(root, "acme", AS_OF, [part], creditor="Test Co")
    folder = tmp_path / files.prefix("acme", AS_OF)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = files.DataFile("placements.csv", "placements", files.render(records(2), layout()), 2, 1)
    again = files.publish(root, "acme", AS_OF, [other], creditor="Test Co")
    assert not again["changed"] and again["differs"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_encrypted_publish_names_the_key_and_hashes_what_was_published(tmp_path, agency_gpg):
    public, _ = agency_gpg
    root = lake.root((tmp_path / "lake").as_uri())
    data = files.render(records(2), layout())
    part = files.DataFile("placements.csv", "placements", data, 2, 14007)
    manifest = files.publish(root, "acme", AS_OF, [part], creditor="T", public_key=public)
    entry = manifest["files"][0]
    published = (
        tmp_path / "lake" / files.prefix("acme", AS_OF) / "placements.csv.pgp"
    ).read_bytes()
    assert entry["name"] == "placements.csv.pgp"
    assert entry["sha256"] == hashlib.sha256(published).hexdigest()
    assert entry["plaintext_sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["encryption"]["pgp_key"]
    # PGP output differs each time; the same plaintext still counts as the same delivery
    assert not files.publish(root, "acme", AS_OF, [part], creditor="T", public_key=public)[
        "changed"
    ]


def test_the_agency_notice_names_files_counts_and_totals_and_no_debtor(tmp_path):
    root = lake.root(tmp_path.as_uri())
    frame = records(2, name=["Ada Lovelace", "Alan Turing"])
    part = files.DataFile("placements.csv", "placements", files.render(frame, layout()), 2, 14007)
    files.publish(root, "acme", AS_OF, [part], creditor="Test Co")
    key = f"{files.prefix('acme', AS_OF)}/manifest.json"
    msg = notify.notice(notify.verify(root, key), key, "ops@test.example", "agency@acme.example")
    body = msg.get_content()
    assert msg["To"] == "agency@acme.example" and "acme" in msg["Subject"]
    assert "placements.csv (placements): 2 rows, balance total 14007" in body and key in body
    assert "Ada" not in body and "Turing" not in body
