"""End to end: train the bundled Online Retail sample with the command line, serve it,
and check the offers against the purchases read independently with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from nbo.cli import main
from nbo.models.artifacts import CURRENT, MANIFEST
from nbo.service.app import create_app
from nbo.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "online_retail_sample.parquet"
WINDOW = pd.Timedelta(days=30)
K = 100


def real_purchases(raw: pd.DataFrame) -> pd.DataFrame:
    """Lines that are purchases: a customer, a positive quantity and price, not cancelled,
    and not taken back whole by a later return or cancellation of the item by the
    customer (``kept_units``)."""
    raw = raw[raw["CustomerID"].notna()].drop_duplicates()
    cancelled = raw["InvoiceNo"].astype(str).str.startswith("C")
    keep = (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0) & ~cancelled
    returns = raw[cancelled | (raw["Quantity"] <= 0)]
    kept = kept_units(raw[keep], returns)
    out = raw.loc[keep, ["CustomerID", "StockCode", "InvoiceDate", "InvoiceNo"]][kept > 0].copy()
    out["customer"] = out["CustomerID"].astype("int64").astype(str)
    out["item"] = out["StockCode"].astype(str).str.strip()
    return out


def kept_units(purchases: pd.DataFrame, returns: pd.DataFrame) -> np.ndarray:
    """The units of each purchase line left once each return, in time order, has taken
    back the customer's newest units of its item bought at or before it."""
    left = purchases["Quantity"].to_numpy(dtype=float).copy()
    position = pd.Series(np.arange(len(purchases)), index=purchases.index)
    lines = purchases.groupby(["CustomerID", "StockCode"]).groups
    for _, ret in returns.sort_values("InvoiceDate", kind="stable").iterrows():
        units = abs(float(ret["Quantity"]))
        mine = lines.get((ret["CustomerID"], ret["StockCode"]), [])
        bought = purchases.loc[mine]
        bought = bought[bought["InvoiceDate"] <= ret["InvoiceDate"]]
        for line in bought.sort_values("InvoiceDate", kind="stable").index[::-1]:
            at = position[line]
            taken = min(units, left[at])
            left[at] -= taken
            units -= taken
    return left


def test_train_the_sample_then_serve_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    models_dir = tmp_path / "models"
    code = main(
        [
            "train",
            "--data",
            str(SAMPLE),
            "--mapping",
            "online-retail",
            "--models-dir",
            str(models_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    version = (models_dir / CURRENT).read_text(encoding="utf-8").strip()
    manifest = json.loads((models_dir / version / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["version"] == version
    assert manifest["data"]["mapping"] == "online-retail"
    metrics = manifest["metrics"]["all"]
    assert metrics["als"]["ndcg@10"] > metrics["popularity"]["ndcg@10"]
    assert manifest["quality_gate"]["passed"] is None  # the first: nothing to compare with
    model_items = set(np.load(models_dir / version / "item_ids.npy").tolist())

    purchases = real_purchases(pd.read_parquet(SAMPLE))
    last = purchases["InvoiceDate"].max()
    assert last == pd.Timestamp("2011-12-09 12:21:00")
    clock = last.tz_localize("UTC").isoformat()
    recent = purchases[purchases["InvoiceDate"] >= last - WINDOW]
    window_items = recent.groupby("customer")["item"].agg(set)
    # An item rebought by enough customers comes back after its learned dead time, and so
    # does any item a customer bought in two or more orders; a one-off purchase keeps the
    # window (the artifact's arrays, read here without nbo).
    item_ids = np.load(models_dir / version / "item_ids.npy").tolist()
    dead = np.load(models_dir / version / "repurchase_dead_days.npy").tolist()
    rebought = np.load(models_dir / version / "repurchase_rebought.npy").tolist()
    window = WINDOW.days
    dead_days = {item: min(d, window) for item, d in zip(item_ids, dead, strict=True)}
    once_days = {
        item: min(d, window) if again else window
        for item, d, again in zip(item_ids, dead, rebought, strict=True)
    }
    orders = purchases.groupby(["customer", "item"])["InvoiceNo"].nunique()
    latest = recent.groupby(["customer", "item"])["InvoiceDate"].max().reset_index()
    age_days = (last - latest["InvoiceDate"]).dt.total_seconds() / 86_400
    twice = orders.reindex(pd.MultiIndex.from_frame(latest[["customer", "item"]])).to_numpy() >= 2
    window_days = np.where(
        twice, latest["item"].map(dead_days), latest["item"].map(once_days)
    ).astype(float)
    still_due = latest[age_days <= np.nan_to_num(window_days, nan=window)]
    suppressed_now = still_due.groupby("customer")["item"].agg(set)
    due_counts = still_due.groupby("customer").size().reindex(window_items.index, fill_value=0)
    assert (due_counts < window_items.map(len)).any(), (
        "some items should come back before 30 days thanks to a short dead time"
    )

    # The busiest recent buyers (suppression has the most to do), one who bought only
    # long ago (nothing to suppress) and one the model has never seen.
    busiest = window_items.map(len).sort_values(ascending=False, kind="stable")
    customers = busiest.index[:4].tolist()
    dormant = sorted(set(purchases["customer"]) - set(window_items.index))[0]

    settings = Settings(models_dir=models_dir, clock=clock, suppression_days="30")
    with TestClient(create_app(settings)) as client:
        model = client.get("/v1/model")
        assert model.status_code == 200
        assert model.json()["version"] == version
        assert model.json()["metrics"] == manifest["metrics"]
        assert client.get("/health/ready").json()["model_version"] == version

        for customer in [*customers, dormant]:
            response = client.get(f"/v1/customers/{customer}/offers", params={"k": K})
            assert response.status_code == 200
            body = response.json()
            assert body["model_version"] == version
            assert body["personalized"] is True
            assert pd.Timestamp(body["as_of"]) == last.tz_localize("UTC")
            offered = [offer["item_id"] for offer in body["offers"]]
            assert len(offered) == K
            assert len(set(offered)) == K
            assert set(offered) <= model_items
            just_bought = suppressed_now.get(customer, set())
            assert not set(offered) & just_bought, (customer, set(offered) & just_bought)
            assert body["suppressed_items"] == len(just_bought & model_items)
            assert [offer["rank"] for offer in body["offers"]] == list(range(1, K + 1))

        unknown = client.get("/v1/customers/99999999/offers", params={"k": 10})
        assert unknown.status_code == 200
        assert unknown.json()["personalized"] is False
        assert {o["reason"]["source"] for o in unknown.json()["offers"]} == {"popular"}

    # Not vacuous: without suppression the same customers are offered what they just bought.
    unsuppressed = Settings(models_dir=models_dir, clock=clock, suppression_days="0")
    with TestClient(create_app(unsuppressed)) as client:
        overlap = 0
        for customer in customers:
            body = client.get(f"/v1/customers/{customer}/offers", params={"k": K}).json()
            assert body["suppressed_items"] == 0
            overlap += len({o["item_id"] for o in body["offers"]} & window_items[customer])
        assert overlap > 0
