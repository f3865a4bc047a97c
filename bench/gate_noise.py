"""How much a healthy nightly retrain's served NDCG@10 moves, for the quality gate's
tolerance (``training.gate``, ``TrainingConfig.gate_tolerance``).

A nightly retrain is compared with the figure the current model's manifest records for
its own holdout, a window one night earlier: the gate must let that night-to-night
movement pass and refuse a broken model. This replays nightly retrains: the purchase
file cut to end ``--days`` before its last day D (by default D-3, D-2, D-1, D; a
weekly replay: 21,14,7,0), each trained in order into one models folder with the
default config and ``force`` (so every night is published and the next one is
compared with it), and records each model's served NDCG@10 (truths ``all`` and
``new``) and what the gate compared it with. Then a deliberately broken config (one
ALS factor and iteration, no ranker) on the full file, gated against the healthy D
model, shows where a bad model lands.

    .venv/bin/python -m bench.gate_noise --data FILE --mapping online-retail --broken

About 6-8 minutes a model on Online Retail on a busy two-core machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from nbo.data.mapping import load_mapping
from training.config import TrainingConfig
from training.pipeline import train

BROKEN = {"als": {"factors": 1, "iterations": 1}, "ranker": {"enabled": False}}


def cut(path: Path, column: str, days_back: int, out: Path) -> Path:
    """The file without its last ``days_back`` days (calendar days of ``column``)."""
    frame = pd.read_parquet(path)
    stamps = pd.to_datetime(frame[column])
    end = stamps.max().normalize() - pd.Timedelta(days=days_back - 1)
    kept = frame[stamps < end] if days_back else frame
    target = out / f"{path.stem}-minus{days_back}.parquet"
    kept.to_parquet(target, index=False)
    return target


def night(path: Path, mapping_name: str, models: Path, config: TrainingConfig) -> dict:
    """Train and publish (force) one night; what was served and what the gate said."""
    started = time.perf_counter()
    result = train(path, load_mapping(mapping_name), models, config, force=True)
    gate = result.manifest["quality_gate"]
    served = {truth: result.metrics[truth]["served"]["ndcg@10"] for truth in ("all", "new")}
    current = gate.get("current")
    relative = None if not current else (gate["served"] - current) / current
    return {
        "file": path.name,
        "version": result.version,
        "ndcg_all": served["all"],
        "ndcg_new": served["new"],
        "policy": gate["policy"],
        "gate_current": current,
        "gate_recorded": gate.get("recorded"),
        "gate_passed": gate.get("passed"),
        "relative": relative,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--mapping", default="online-retail")
    parser.add_argument("--time-column", default="InvoiceDate")
    parser.add_argument("--days", default="3,2,1,0", help="days cut, in order")
    parser.add_argument("--broken", action="store_true", help="then a broken config on D")
    parser.add_argument("--out", type=Path, help="JSON lines of the nights")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gate-noise-") as scratch:
        work = Path(scratch)
        models = work / "models"
        for days in (int(d) for d in args.days.split(",")):
            path = cut(args.data, args.time_column, days, work)
            rows.append({"days_back": days, **night(path, args.mapping, models, TrainingConfig())})
            print(json.dumps(rows[-1]), flush=True)
        if args.broken:
            path = cut(args.data, args.time_column, 0, work)
            broken = TrainingConfig.model_validate(BROKEN)
            rows.append(
                {"days_back": 0, "broken": True, **night(path, args.mapping, models, broken)}
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
