"""Step 7, publish: the manifest that records a training, and the version it writes.

The manifest is built whether or not the model is published (``nbo evaluate`` reports
from it); ``publish`` turns the final model into the artifact's arrays, documents and
side files and writes them as a new version, flipping CURRENT to it last
(``nbo.models.artifacts``), so the service never sees half a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nbo.catalog.terms import Catalog
from nbo.core import columns as col
from nbo.core.vocabulary import iso_utc
from nbo.data.features import item_prices
from nbo.models.artifacts import unique_version, write_artifact
from nbo.models.cycles import Repurchase, cycle_summary, dead_time_summary
from nbo.models.policy import SECTION as POLICY_SECTION
from training.config import TrainingConfig
from training.evaluate import Evaluation
from training.fit import Fitted
from training.gate import QualityGate
from training.lifecycle import CALIBRATION_PLOT, CUSTOMERS_FILE, calibration_png, customers_parquet
from training.load import TrainingData
from training.progress import Steps
from training.refit import FinalModel
from training.served import SERVED, ServedParts, served_section
from training.split import TimeSplit


def build_manifest(
    data: TrainingData,
    split: TimeSplit,
    fitted: Fitted,
    evaluation: Evaluation,
    model: FinalModel,
    gate: QualityGate,
    config: TrainingConfig,
    catalog: Catalog,
) -> dict[str, Any]:
    """What ``manifest.json`` records besides the version, time, libraries and file
    checksums (which ``write_artifact`` adds): a section per step."""
    return {
        "data": data.section(),
        "config": config.model_dump(),
        "split": {
            "cutoff": iso_utc(split.cutoff),
            "holdout_days": config.holdout_days,
            "suppression_days": config.suppression_days,
            "holdout_rows": split.holdout_rows,
            "evaluated_customers": len(evaluation.customers),
            "cold_start_customers_in_holdout": split.cold_start_customers,
        },
        "model": model.section(),
        "cycles": cycles_section(config, model.repurchase, fitted.repurchase),
        "propensity": evaluation.propensity_report,
        "ranker": evaluation.ranker.section(),
        "churn": fitted.churn.section,
        "lifecycle": model.lifecycle.section,
        "metrics": evaluation.metrics,
        POLICY_SECTION: evaluation.policy.section(),
        SERVED: served_section(evaluation.metrics, config, evaluation.policy.name, catalog),
        "quality_gate": gate.section(),
    }


def publish_model(
    models_dir: Path,
    data: TrainingData,
    model: FinalModel,
    manifest: dict[str, Any],
    steps: Steps,
) -> Path:
    """Write ``model`` as a new version under ``models_dir`` and make it CURRENT."""
    with steps.step("publish"):
        parts = ServedParts(
            history=model.history,
            confidence=model.confidence,
            als=model.als,
            popularity=model.popularity,
            repurchase=model.repurchase,
            item_price=item_prices(data.purchases, model.history.items) if data.priced else None,
            ranker=model.ranker,
            propensity=model.propensity,
            policy=model.policy,
            recent=model.recent,
        )
        arrays, documents, files = parts.contents(
            orders=data.orders, send_hour_prior=model.lifecycle.send_hour_prior
        )
        files[CUSTOMERS_FILE] = customers_parquet(model.history.customers, model.lifecycle)
        if model.churn.model is not None:
            files.update(model.churn.files())
            files[CALIBRATION_PLOT] = calibration_png(model.churn)
        names = item_names(data.purchases)
        if names:
            documents["item_names"] = names
        version = unique_version(models_dir, data.sha256)
        return write_artifact(models_dir, version, arrays, documents, manifest, files)


def cycles_section(
    config: TrainingConfig, full: Repurchase | None, before_cutoff: Repurchase | None
) -> dict[str, Any]:
    """The manifest's view of the learned cycles: how many items (of the published model)
    have one, their share, the distribution in days, and the count the evaluation used;
    and of the dead times suppression holds items back for (``dead_time``)."""
    if full is None:
        return {"enabled": False}
    cycles = config.cycles
    return {
        "enabled": True,
        "min_repeat_buyers": cycles.min_repeat_buyers,
        "max_days": cycles.max_days,
        **cycle_summary(full.cycle_days),
        "items_before_cutoff": cycle_summary(
            None if before_cutoff is None else before_cutoff.cycle_days
        )["items"],
        "dead_time": {
            "quantile": cycles.dead_time_quantile,
            "min_repeat_rate": cycles.min_repeat_rate,
            "floor_days": cycles.floor_days,
            "horizon_days": config.holdout_days
            if cycles.horizon_days is None
            else cycles.horizon_days,
            **dead_time_summary(full, cycles.floor_days),
        },
    }


def item_names(purchases: pd.DataFrame) -> dict[str, str]:
    """Each item's most common name, when the data has names (display only)."""
    if col.ITEM_NAME not in purchases:
        return {}
    named = purchases[[col.ITEM_ID, col.ITEM_NAME]].dropna()
    if named.empty:
        return {}
    # observed=True: ids and names are categoricals; never the cross product of the two.
    counts = named.groupby([col.ITEM_ID, col.ITEM_NAME], observed=True).size()
    ranked = counts.rename("n").reset_index().astype({col.ITEM_ID: str, col.ITEM_NAME: str})
    ranked = ranked.sort_values(["n", col.ITEM_NAME], ascending=[False, True], kind="stable")
    first = ranked.drop_duplicates(col.ITEM_ID)
    return dict(zip(first[col.ITEM_ID], first[col.ITEM_NAME], strict=True))
