"""Trainer vs its floor: a bare implicit ALS fit on the same full confidence matrix.

The floor is the one step no trainer can skip: fitting ALS with the trainer's default
parameters on all the data. The trainer also reads and cleans the file, splits it,
fits a second model for evaluation, evaluates three methods, refits and publishes;
the ratio says how much all of that costs on top of the floor.

Both are run several times, interleaved (floor, trainer, floor, trainer, ...), and the
best run of each counts: on a shared machine other work only ever adds time.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nbo.data.history import build_history
from nbo.data.mapping import ColumnMapping
from nbo.data.purchases import read_purchases
from nbo.models.cf import AlsParams, confidence_matrix, new_als
from training.config import TrainingConfig
from training.pipeline import TrainResult, train


@dataclass
class TrainBench:
    floor_runs: list[float] = field(default_factory=list)
    trainer_runs: list[float] = field(default_factory=list)
    best_trainer: TrainResult | None = None
    customers: int = 0
    items: int = 0
    interactions: int = 0
    models_dir: Path | None = None

    @property
    def floor(self) -> float:
        return min(self.floor_runs)

    @property
    def trainer(self) -> float:
        return min(self.trainer_runs)


def full_confidence(data_path: Path, mapping: ColumnMapping, params: AlsParams) -> sp.csr_matrix:
    """The confidence matrix the trainer's final fit sees: all purchases, same weighting."""
    purchases, _ = read_purchases(data_path, mapping)
    return confidence_matrix(build_history(purchases).counts, params)


def bare_als_fit(confidence: sp.csr_matrix, params: AlsParams) -> float:
    """Seconds of ``new_als(params).fit`` alone, BLAS pinned to one thread."""
    gc.collect()
    with threadpool_limits(limits=1, user_api="blas"):
        model = new_als(params)
        start = time.perf_counter()
        model.fit(confidence, show_progress=False)
        return time.perf_counter() - start


def full_trainer(
    data_path: Path, mapping: ColumnMapping, models_dir: Path, config: TrainingConfig
) -> tuple[float, TrainResult]:
    """Wall seconds of ``training.pipeline.train`` end to end (force=True: speed, not quality)."""
    gc.collect()
    start = time.perf_counter()
    result = train(data_path, mapping, models_dir, config, force=True)
    return time.perf_counter() - start, result


def bench_training(
    data_path: Path, mapping: ColumnMapping, work_dir: Path, config: TrainingConfig, repeats: int
) -> TrainBench:
    """Interleaved floor and trainer runs; each trainer run publishes into its own folder."""
    params = config.als.params()
    confidence = full_confidence(data_path, mapping, params)
    bench = TrainBench(
        customers=confidence.shape[0], items=confidence.shape[1], interactions=confidence.nnz
    )
    for run in range(repeats):
        bench.floor_runs.append(bare_als_fit(confidence, params))
        seconds, result = full_trainer(data_path, mapping, work_dir / f"models-{run}", config)
        bench.trainer_runs.append(seconds)
        if seconds == bench.trainer:
            bench.best_trainer = result
            bench.models_dir = work_dir / f"models-{run}"
    return bench
