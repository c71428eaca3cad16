"""The placement stage on a generated portfolio, on SQLite and PostgreSQL: placed once, the
same objects on a re-run, a backfill that only previews, PGP files the agency can open."""

from __future__ import annotations

from datetime import date, timedelta

import gnupg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import history, lake, ledger, planning, segmentation
from dunning.config import load_config
from dunning.generate import generate
from dunning.placement import place_to_lake
from dunning.quality import validate_to_lake
from dunning.sources import extract_to_lake

AS_OF = date(2026, 11, 23)


@pytest.fixture
def day(ledger_engine: sa.Engine, tmp_path, agency_gpg):
    """A portfolio taken through validate, load, history, age and score; the keystone agency
    gets a PGP key."""
    generate(tmp_path / "portfolio", debtors=300, as_of=AS_OF, seed=5)
    path = tmp_path / "portfolio" / "config.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["placement"]["agencies"][1]["pgp_public_key"] = str(agency_gpg[0])
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(path)
    root = lake.root((tmp_path / "lake").as_uri())
    extracts = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
    validated = validate_to_lake(cfg, AS_OF, root, extracts, {})
    ledger.load_from_lake(ledger_engine, AS_OF, root, validated)
    history.load_history(cfg, ledger_engine, root, AS_OF)
    aged = segmentation.aging_to_lake(cfg, AS_OF, root, validated, ledger_engine)
    scored = planning.score_to_lake(cfg, AS_OF, root, ledger_engine, aged["debtor_view"])

    def place(publish: bool = True) -> dict:
        return place_to_lake(
            cfg,
            AS_OF,
            root,
            ledger_engine,
            validated=validated,
            view_key=scored["scored_view"],
            out_root=root,
            publish=publish,
        )

    return place, ledger_engine, root, tmp_path, agency_gpg[1]


def _placements(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(ledger.PlacedAccount.__table__), conn)


@pytest.mark.clock
def test_a_backfill_previews_and_a_real_run_places_once(day):
    place, engine, root, tmp_path, _ = day
    preview = place(publish=False)
    assert preview["mode"] == "skipped" and preview["would_place"] > 0
    assert preview["accounts_placed"] == 0 and preview["placement_files"] == []
    assert _placements(engine).empty and not (tmp_path / "lake" / "placements").exists()

    first = place()
    assert first["accounts_placed"] == preview["would_place"]
    placed = _placements(engine)
    assert len(placed) == first["accounts_placed"] and placed["debtor_id"].is_unique
    selection = lake.read_parquet(root / first["selection"])
    past = selection.set_index("debtor_id")
    assert set(placed["debtor_id"]) == set(past.index[past["exclusions"] == ""])
    assert (past.loc[placed["debtor_id"], "max_days_past_due"] >= 90).all()
    # the generated compliance cases are kept home, each with its reason
    assert set(first["excluded"]) & {"dispute", "bankruptcy", "deceased", "breathing_space"}

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "lake" / "placements").rglob("*")}
    again = place()
    assert again["manifest_keys"] == []  # nothing new: the notify DAG tells nobody
    assert again["accounts_placed"] == first["accounts_placed"]
    assert again["excluded"] == first["excluded"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(_placements(engine)) == len(placed)


def test_the_pgp_agency_can_open_its_file_and_it_matches_the_manifest(day):
    place, engine, root, tmp_path, home = day
    result = place()
    folder = tmp_path / "lake" / "placements" / "agency=keystone" / f"as_of={AS_OF}"
    manifest = lake.read_json(root / f"placements/agency=keystone/as_of={AS_OF}/manifest.json")
    (entry,) = manifest["files"]
    assert entry["name"] == "placements.txt.pgp"
    clear = gnupg.GPG(gnupghome=str(home)).decrypt((folder / entry["name"]).read_bytes())
    lines = clear.data.decode("utf-8").splitlines()
    mine = _placements(engine).query("agency == 'keystone'")
    assert len(lines) == entry["rows"] + 1 == len(mine) + 1  # + the control row
    assert lines[-1] == f"T{len(mine):09d}{mine['balance_minor'].sum():015d}"
    assert any(uri.endswith("placements.txt.pgp") for uri in result["placement_files"])


def test_a_delivery_a_failed_run_left_unpublished_goes_out_with_the_next_run(day):
    place, engine, root, _, _ = day
    place()
    # as if yesterday's run had recorded keystone's placements, then died before publishing
    t, f = ledger.PlacedAccount.__table__, ledger.AgencyFile.__table__
    yesterday = AS_OF - timedelta(days=1)
    before, after = f"as_of={AS_OF}", f"as_of={yesterday}"
    with engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.agency == "keystone")
            .values(
                placed_on=yesterday,
                file_key=sa.func.replace(t.c.file_key, before, after),
            )
        )
        conn.execute(f.delete().where(f.c.agency == "keystone"))
    again = place()
    key = f"placements/agency=keystone/{after}/manifest.json"
    assert key in again["manifest_keys"]
    manifest = lake.read_json(root / key)
    assert manifest["files"][0]["rows"] == len(_placements(engine).query("agency == 'keystone'"))
    assert place()["manifest_keys"] == []  # published now: nothing left over
