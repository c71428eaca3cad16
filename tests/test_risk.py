"""Risk model on a generated portfolio: beats the best single feature, versioned, safe fallback."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import yaml
from upath import UPath

from dunning import features, history, lake, ledger, risk
from dunning.config import load_config
from dunning.generate import generate
from dunning.schema import BEHAVIOUR_FEATURES

AS_OF = date(2026, 11, 23)
HISTORY = {
    "invoices": "invoice_history.csv",
    "payments": "payments.csv",
    "contacts": "contact_history.csv",
    "compliance_events": "compliance_events.csv",
}


def add_history_section(config_path) -> None:
    """The generator does not write a ``history:`` section yet."""
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["history"] = HISTORY
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("risk")
    generate(folder / "portfolio", debtors=3000, as_of=AS_OF, seed=1)
    add_history_section(folder / "portfolio" / "config.yaml")
    cfg = load_config(folder / "portfolio" / "config.yaml")
    url = f"sqlite:///{folder / 'ledger.sqlite'}"
    ledger.migrate(url)
    with ledger.ledger(url) as engine:
        history.load_history(cfg, engine, UPath(folder / "lake"), AS_OF)
        root = UPath(folder / "lake")
        meta = risk.train(cfg, engine, root, AS_OF)
        yield {"cfg": cfg, "engine": engine, "root": root, "meta": meta, "folder": folder}


def test_backtest_beats_best_single_feature(portfolio):
    meta = portfolio["meta"]
    m = meta["metrics"]
    assert m["auc"] >= 0.85
    assert m["auc"] > m["best_single_feature_auc"] + 0.01, m
    assert m["auc"] > m["rules_auc"]
    assert m["top_decile_lift"] > 1.2
    assert 0 < m["brier"] < 0.15
    assert len(m["calibration"]) >= 5
    for row in m["calibration"]:  # calibrated: predicted within 0.15 of observed where n is large
        if row["n"] >= 200:
            assert abs(row["predicted"] - row["observed"]) < 0.15, row
    # no test-period label trained the backtest model
    assert max(meta["train_dates"]) < min(meta["test_dates"])
    assert len(meta["test_dates"]) == portfolio["cfg"].risk.test_months


def test_model_is_versioned_and_approved(portfolio):
    meta, root = portfolio["meta"], portfolio["root"]
    assert meta["approved"] is True
    assert meta["version"].startswith("2026-11-23-")
    assert meta["model_key"] == f"models/risk/version={meta['version']}/model.joblib"
    stored = lake.read_json(root / meta["meta_key"])
    assert stored["features"] == list(risk.MODEL_FEATURES)
    assert stored["approved"] is True
    latest = lake.read_json(root / risk.LATEST)
    assert latest["version"] == meta["version"]
    # same as-of, same window, same features: the same version id (deterministic, no clock)
    assert (
        risk._version(AS_OF, [date.fromisoformat(d) for d in meta["snapshot_dates"]], 30)
        == (meta["version"])
    )


def test_training_set_labels_and_point_in_time(portfolio):
    engine = portfolio["engine"]
    t = date(2026, 6, 30)
    data = risk.training_set(engine, [t], 30)
    assert set(data["snapshot"]) == {pd.Timestamp(t)}
    assert data["debtor_id"].is_unique
    assert (data["overdue_count"] >= 1).all() and (data["max_days_past_due"] >= 1).all()
    assert 0.1 < data["label"].mean() < 0.9
    # the behaviour part equals behaviour_features at t for the same debtors
    direct = features.behaviour_features(engine, t, data["debtor_id"]).set_index("debtor_id")
    pd.testing.assert_frame_equal(
        data.set_index("debtor_id")[list(BEHAVIOUR_FEATURES)], direct, check_names=False
    )


def daily_view(portfolio) -> pd.DataFrame:
    engine = portfolio["engine"]
    frame = features.behaviour_features(engine, AS_OF).head(200)
    return frame.assign(
        overdue_minor=np.linspace(0, 100_000, len(frame)),
        max_days_past_due=np.arange(len(frame)) % 120,
        overdue_count=1.0,
    )


def test_score_uses_the_approved_model(portfolio):
    view = daily_view(portfolio)
    scored = risk.score(portfolio["cfg"], view, portfolio["root"])
    assert list(scored.columns) == ["debtor_id", "pay_probability", "risk_score", "score_source"]
    assert (scored["score_source"] == f"model:{portfolio['meta']['version']}").all()
    assert scored["pay_probability"].between(0, 1).all()
    np.testing.assert_allclose(scored["risk_score"], 1 - scored["pay_probability"])
    assert list(scored["debtor_id"]) == list(view["debtor_id"])


def test_score_falls_back_to_rules_without_a_model(portfolio, tmp_path):
    view = daily_view(portfolio)
    scored = risk.score(portfolio["cfg"], view, UPath(tmp_path / "empty-lake"))
    assert (scored["score_source"] == "rules").all()
    assert scored["pay_probability"].between(0, 1).all()
    # rules: older debt is riskier, everything else equal
    base = view.iloc[[0, 0]].assign(max_days_past_due=[5, 90])
    p = risk.score(portfolio["cfg"], base, UPath(tmp_path / "empty-lake"))["pay_probability"]
    assert p.iloc[0] > p.iloc[1]


def test_score_falls_back_to_rules_with_a_corrupted_model(portfolio, tmp_path):
    root = UPath(tmp_path / "lake")
    meta = portfolio["meta"]
    lake.write_json(
        root / risk.LATEST, {"version": meta["version"], "model_key": meta["model_key"]}
    )
    lake.write_bytes(root / meta["model_key"], b"not a model")
    scored = risk.score(portfolio["cfg"], daily_view(portfolio), root)
    assert (scored["score_source"] == "rules").all()


def test_unapproved_model_does_not_replace_latest(portfolio, tmp_path):
    cfg = portfolio["cfg"].model_copy(
        update={"risk": portfolio["cfg"].risk.model_copy(update={"min_auc": 1.0})}
    )
    root = UPath(tmp_path / "lake")
    meta = risk.train(cfg, portfolio["engine"], root, AS_OF)
    assert meta["approved"] is False and meta["latest_updated"] is False
    assert (root / meta["meta_key"]).exists()
    assert not (root / risk.LATEST).exists()
    scored = risk.score(cfg, daily_view(portfolio), root)
    assert (scored["score_source"] == "rules").all()
