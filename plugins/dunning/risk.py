"""Risk model: the probability that a debtor pays the overdue balance within the horizon.

Why a model at all: segment rules already see days past due and lateness; a model earns its place
only if it ranks debtors better than the best single feature does, on months it has not seen.
So training is a time-based backtest, a model is *approved* for scoring only when its AUC on the
held-out months beats both ``cfg.risk.min_auc`` and the best single-feature rule, and scoring falls
back to a documented rules score whenever no approved model can be loaded -- the daily run never
depends on a model being there.

Lake layout::

    models/risk/version=<as_of>-<hash>/model.joblib   the fitted pipeline (refit on all dates)
    models/risk/version=<as_of>-<hash>/meta.json      window, features, backtest metrics, approved
    models/risk/latest_approved.json                  {"version", "as_of", ...} newest approved

The model file is a pickle (joblib): only load models from a lake you control.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake
from dunning.config import Config
from dunning.errors import NotEnoughHistory
from dunning.features import (
    AGING_COLUMNS,
    aging_features,
    features_from_facts,
    load_facts,
    overdue_at,
)
from dunning.schema import BEHAVIOUR_FEATURES

# scikit-learn (and joblib) are imported where a model is trained or loaded, not here: importing
# them takes seconds, which the daily score paid for nothing whenever it fell back to the rules.
if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

log = logging.getLogger(__name__)

MODEL_FEATURES: tuple[str, ...] = (*BEHAVIOUR_FEATURES, *AGING_COLUMNS)
MODEL_AREA = "models/risk"
LATEST = f"{MODEL_AREA}/latest_approved.json"
PARALLEL_FIT_ROWS = 200_000
MIN_HISTORY_DAYS = 90  # snapshot dates need this much history before them for useful features
MODEL_PARAMS: dict[str, Any] = {
    "max_iter": 300,
    "learning_rate": 0.05,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}

# Rules score (the fallback): a logistic of a few features a collector would also look at.
# pay_probability = 1 / (1 + exp(-z)),
# z = 1.5 - 0.03 * max_days_past_due - 0.02 * max(avg_days_late, 0) - 0.4 * disputes_12m
#     - 0.5 * promises_broken + 0.2 * promises_kept + 1.0 * share_paid_after_first_reminder
#     - 0.3 * log1p(balance_to_usual_invoice)
# Signs follow collections experience (older debt and habitual lateness pay less; debtors who
# react to reminders pay more); the weights are round numbers, not fitted.
RULE_WEIGHTS: dict[str, float] = {
    "max_days_past_due": -0.03,
    "avg_days_late_pos": -0.02,
    "disputes_12m": -0.4,
    "promises_broken": -0.5,
    "promises_kept": 0.2,
    "share_paid_after_first_reminder": 1.0,
    "log_balance_to_usual_invoice": -0.3,
}
RULE_INTERCEPT = 1.5


# --- training set ------------------------------------------------------------------------------


def snapshot_dates(as_of: date, horizon: int, first_history: date | None) -> list[date]:
    """Month ends whose label window has closed by ``as_of`` and that have some history."""
    last = as_of - timedelta(days=horizon)
    earliest = (first_history or date.min) + timedelta(days=MIN_HISTORY_DAYS)
    ends = pd.date_range(end=pd.Timestamp(last), periods=36, freq="ME")
    return [d.date() for d in ends if d.date() >= earliest and d.date() <= last]


def _training_rows(facts: Any, dates: list[date], horizon: int) -> pd.DataFrame:
    frames = []
    for t in dates:
        overdue = overdue_at(facts, t)
        if overdue.empty:
            continue
        by_horizon = np.datetime64(t + timedelta(days=horizon), "s")
        overdue = overdue.assign(paid_in_time=overdue["paid"] <= by_horizon)
        aging = aging_features(overdue)
        label = overdue.groupby("debtor_id")["paid_in_time"].all().astype("int8")
        behaviour = features_from_facts(facts, t, aging.index).set_index("debtor_id")
        frame = aging.join(behaviour).assign(label=label, snapshot=pd.Timestamp(t))
        frames.append(frame.reset_index())
    if not frames:
        return pd.DataFrame(columns=["snapshot", "debtor_id", *MODEL_FEATURES, "label"])
    out = pd.concat(frames, ignore_index=True)
    return out[["snapshot", "debtor_id", *MODEL_FEATURES, "label"]]


def training_set(engine: sa.Engine, dates: list[date], horizon: int) -> pd.DataFrame:
    """One row per (snapshot date, debtor with an overdue balance then).

    Features are those of the snapshot date (point in time, see ``dunning.features``) plus the
    aging of that date; ``label`` is 1 when every invoice overdue at the date was paid within
    ``horizon`` days after it.  History is read once for all dates.
    """
    dates = sorted(dates)
    if not dates:
        return _training_rows(None, [], horizon)
    facts = load_facts(engine, dates[0], dates[-1] + timedelta(days=horizon + 1))
    return _training_rows(facts, dates, horizon)


# --- metrics -----------------------------------------------------------------------------------


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted vs observed pay rate in equal-width probability bins (empty bins left out)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "n": int(m.sum()),
                    "predicted": round(float(p[m].mean()), 4),
                    "observed": round(float(y[m].mean()), 4),
                }
            )
    return rows


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Non-payment rate in the riskiest 10% (lowest pay probability) over the overall rate."""
    miss = 1 - y
    base = miss.mean()
    k = max(1, round(len(p) * 0.1))
    top = np.argsort(p, kind="stable")[:k]
    return float(miss[top].mean() / base) if base > 0 else float("nan")


def best_single_feature(frame: pd.DataFrame, y: np.ndarray) -> tuple[str, float]:
    """The feature whose ranking alone (either direction) separates payers best."""
    best = ("", 0.5)
    for col in MODEL_FEATURES:
        auc = _auc(y, frame[col].to_numpy())
        if np.isnan(auc):
            continue
        auc = max(auc, 1 - auc)
        if auc > best[1]:
            best = (col, auc)
    return best[0], float(best[1])


def _metrics(y: np.ndarray, p: np.ndarray, frame: pd.DataFrame) -> dict:
    from sklearn.metrics import brier_score_loss

    feature, feature_auc = best_single_feature(frame, y)
    rules = rules_probability(frame)
    return {
        "rows": len(y),
        "pay_rate": round(float(y.mean()), 4),
        "auc": round(_auc(y, p), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "top_decile_lift": round(top_decile_lift(y, p), 3),
        "calibration": calibration_table(y, p),
        "best_single_feature": feature,
        "best_single_feature_auc": round(feature_auc, 4),
        "rules_auc": round(_auc(y, rules), 4),
    }


# --- training ------------------------------------------------------------------------------------


def _model() -> HistGradientBoostingClassifier:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**MODEL_PARAMS)


def _fit(rows: pd.DataFrame) -> HistGradientBoostingClassifier:
    """Small fits run on one thread: OpenMP threads spinning on a busy worker made them 3-30x
    slower (measured); large fits gain from every core."""
    from threadpoolctl import threadpool_limits

    model = _model()
    if len(rows) >= PARALLEL_FIT_ROWS:
        return model.fit(rows[list(MODEL_FEATURES)], rows["label"])
    with threadpool_limits(limits=1):
        return model.fit(rows[list(MODEL_FEATURES)], rows["label"])


def _version(as_of: date, dates: list[date], horizon: int) -> str:
    spec = {
        "dates": [d.isoformat() for d in dates],
        "horizon": horizon,
        "features": list(MODEL_FEATURES),
        "model": "HistGradientBoostingClassifier",
        "params": MODEL_PARAMS,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{as_of.isoformat()}-{digest}"


def _first_history(engine: sa.Engine) -> date | None:
    from dunning.ledger import InvoiceHistory

    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.min(InvoiceHistory.issue_date))).scalar()
    return date.fromisoformat(str(value)[:10]) if value else None


def train(cfg: Config, engine: sa.Engine, root: Any, as_of: date) -> dict:
    """Backtest, refit on all dates, write model + meta to the lake; return the meta.

    Snapshot dates are the month ends whose horizon closed by ``as_of``; the last
    ``cfg.risk.test_months`` of them are the test months, and only earlier dates whose labels were
    known by the first test date train the backtest model (no label from the test period leaks).
    """
    import joblib
    import sklearn

    started = time.perf_counter()
    horizon = cfg.risk.horizon_days
    dates = snapshot_dates(as_of, horizon, _first_history(engine))
    if len(dates) <= cfg.risk.test_months:
        raise NotEnoughHistory(
            f"only {len(dates)} snapshot month(s) with a closed {horizon}-day horizon before "
            f"{as_of}; need more than test_months={cfg.risk.test_months} (load more history)"
        )
    data = training_set(engine, dates, horizon)
    seconds = {"training_set": round(time.perf_counter() - started, 2)}
    test_dates = dates[-cfg.risk.test_months :]
    train_dates = [d for d in dates if d + timedelta(days=horizon) <= test_dates[0]]
    is_test = data["snapshot"].isin(pd.to_datetime(test_dates))
    is_train = data["snapshot"].isin(pd.to_datetime(train_dates))
    train_rows, test_rows = data[is_train], data[is_test]
    if train_rows["label"].nunique() < 2 or test_rows["label"].nunique() < 2:
        raise NotEnoughHistory(
            "the backtest needs payers and non-payers in both train and test months"
        )

    t0 = time.perf_counter()
    backtest = _fit(train_rows)
    p_test = backtest.predict_proba(test_rows[list(MODEL_FEATURES)])[:, 1]
    metrics = _metrics(test_rows["label"].to_numpy(), p_test, test_rows)
    final = _fit(data)
    seconds["fit"] = round(time.perf_counter() - t0, 2)

    approved = bool(
        metrics["auc"] >= cfg.risk.min_auc and metrics["auc"] > metrics["best_single_feature_auc"]
    )
    version = _version(as_of, dates, horizon)
    folder = f"{MODEL_AREA}/version={version}"
    meta = {
        "version": version,
        "as_of": as_of.isoformat(),
        "horizon_days": horizon,
        "target": f"all invoices overdue at the snapshot paid within {horizon} days",
        "snapshot_dates": [d.isoformat() for d in dates],
        "train_dates": [d.isoformat() for d in train_dates],
        "test_dates": [d.isoformat() for d in test_dates],
        "rows": {"all": len(data), "train": len(train_rows), "test": len(test_rows)},
        "features": list(MODEL_FEATURES),
        "model": {"class": "HistGradientBoostingClassifier", "params": MODEL_PARAMS},
        "sklearn_version": sklearn.__version__,
        "metrics": metrics,
        "min_auc": cfg.risk.min_auc,
        "approved": approved,
        "model_key": f"{folder}/model.joblib",
        "meta_key": f"{folder}/meta.json",
    }
    buf = io.BytesIO()
    joblib.dump(final, buf)
    lake.write_bytes(root / meta["model_key"], buf.getvalue())
    meta["seconds"] = {**seconds, "total": round(time.perf_counter() - started, 2)}
    lake.write_json(root / meta["meta_key"], meta)
    meta["latest_updated"] = approved and _promote(root, meta)
    log.info(
        "risk model %s: test AUC %.3f vs best single feature %s %.3f; approved=%s",
        version,
        metrics["auc"],
        metrics["best_single_feature"],
        metrics["best_single_feature_auc"],
        approved,
    )
    return meta


def _pointer_as_of(path: Any) -> str:
    """The as-of of the approved-model pointer; an unreadable pointer counts as oldest, so a
    new approval replaces it."""
    try:
        return str(lake.read_json(path).get("as_of", ""))
    except (ValueError, OSError):
        return ""


def _promote(root: Any, meta: dict) -> bool:
    """Point ``latest_approved.json`` here unless a newer as-of is already approved (backfills)."""
    path = root / LATEST
    if path.exists() and _pointer_as_of(path) > meta["as_of"]:
        return False
    lake.write_json(
        path,
        {
            "version": meta["version"],
            "as_of": meta["as_of"],
            "model_key": meta["model_key"],
            "meta_key": meta["meta_key"],
            "auc": meta["metrics"]["auc"],
        },
    )
    return True


# --- scoring -------------------------------------------------------------------------------------


def rules_probability(features: pd.DataFrame) -> np.ndarray:
    """The documented fallback score (see ``RULE_WEIGHTS``); missing inputs count as 0."""

    def col(name: str) -> np.ndarray:
        if name not in features:
            return np.zeros(len(features))
        return pd.to_numeric(features[name], errors="coerce").fillna(0).to_numpy("float64")

    inputs = {
        "max_days_past_due": col("max_days_past_due"),
        "avg_days_late_pos": np.maximum(col("avg_days_late"), 0),
        "disputes_12m": col("disputes_12m"),
        "promises_broken": col("promises_broken"),
        "promises_kept": col("promises_kept"),
        "share_paid_after_first_reminder": col("share_paid_after_first_reminder"),
        "log_balance_to_usual_invoice": np.log1p(np.maximum(col("balance_to_usual_invoice"), 0)),
    }
    z = RULE_INTERCEPT + sum(w * inputs[k] for k, w in RULE_WEIGHTS.items())
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


def load_approved(root: Any) -> tuple[str, Any] | None:
    """The newest approved model as (version, estimator), or None when there is none usable."""
    try:
        pointer = lake.read_json(root / LATEST)
        import joblib  # only when there is a model to load (see the imports at the top)

        with (root / pointer["model_key"]).open("rb") as fh:
            model = joblib.load(fh)
        if not hasattr(model, "predict_proba"):
            raise TypeError(f"{pointer['model_key']} is not a classifier")
        return pointer["version"], model
    except FileNotFoundError:
        return None
    except Exception as exc:  # a corrupt or incompatible model must not stop the daily run
        log.warning("risk model not usable, scoring with rules: %s: %s", type(exc).__name__, exc)
        return None


def score(cfg: Config, features: pd.DataFrame, root: Any) -> pd.DataFrame:
    """debtor_id, pay_probability, risk_score (= 1 - pay_probability), score_source.

    ``features`` has debtor_id, BEHAVIOUR_FEATURES and the aging columns. ``score_source`` is
    ``model:<version>`` or ``rules`` (no approved model, or it failed to load or to predict).
    """
    frame = features.copy()
    for col in MODEL_FEATURES:
        frame[col] = (
            pd.to_numeric(frame[col], errors="coerce").astype("float64") if col in frame else np.nan
        )
    source, prob = "rules", None
    loaded = load_approved(root)
    if loaded is not None and len(frame):
        version, model = loaded
        try:
            prob = model.predict_proba(frame[list(MODEL_FEATURES)])[:, 1]
            source = f"model:{version}"
        except Exception as exc:  # e.g. a model trained on other features
            log.warning("risk model %s failed to predict, scoring with rules: %s", version, exc)
    if prob is None:
        prob = rules_probability(frame)
    return pd.DataFrame(
        {
            "debtor_id": frame["debtor_id"].to_numpy(),
            "pay_probability": np.asarray(prob, dtype="float64"),
            "risk_score": 1 - np.asarray(prob, dtype="float64"),
            "score_source": source,
        }
    )
