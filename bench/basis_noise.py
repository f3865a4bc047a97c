"""How far apart the held-out Brier scores of a rule's two propensity bases fall by the
luck of the halves alone, for the margin the place basis must win by
(``training.propensity.RULE_BASIS_MARGIN``).

A simple rule's curves are read from its score or from the item's place, whichever
predicts the held-out half of the customers better (``training.propensity.rule_quality``).
This evaluates a file once (``publish=False``), keeps the served rule's pairs, and draws
the fitting half with 20 seeds: the spread of each basis's Brier score, and of the
relative difference place vs score, over the seeds is the noise a choice must clear.

    .venv/bin/python -m bench.basis_noise --data FILE --mapping online-retail
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import training.served
from nbo.data.mapping import load_mapping
from training.config import TrainingConfig
from training.pipeline import train
from training.propensity import rule_quality
from training.served import RulePairs

SEEDS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--mapping", default="online-retail")
    args = parser.parse_args()
    captured: list[RulePairs] = []
    original = training.served.fit_rule_curves

    def capturing(propensity: Any, pairs: RulePairs, fit_half: np.ndarray) -> Any:
        captured.append(pairs)
        return original(propensity, pairs, fit_half)

    training.served.fit_rule_curves = capturing
    with tempfile.TemporaryDirectory(prefix="basis-noise-") as scratch:
        result = train(
            args.data, load_mapping(args.mapping), Path(scratch), TrainingConfig(), publish=False
        )
    rule = result.manifest.get("propensity", {}).get("rule") or {}
    if not captured:
        print(json.dumps({"policy": result.manifest["quality_gate"]["policy"], "rule": None}))
        return
    pairs = captured[-1]  # with_rule_curves: every evaluated customer
    rows = []
    for seed in range(SEEDS):
        halves = np.asarray(np.random.default_rng(seed).random(len(pairs.scores)) < 0.5)
        quality = rule_quality(
            pairs.scores, pairs.places, pairs.filled, pairs.bought, pairs.valid, halves
        )
        score, place = quality["brier_score"], quality["brier_place"]
        rows.append({"seed": seed, "score": score, "place": place, "rel": (place - score) / score})
    rel = np.array([row["rel"] for row in rows])
    print(
        json.dumps(
            {
                "policy": result.manifest["quality_gate"]["policy"],
                "recorded": {key: rule.get(key) for key in ("basis", "brier_score", "brier_place")},
                "rel_place_vs_score": {
                    "min": float(rel.min()),
                    "median": float(np.median(rel)),
                    "max": float(rel.max()),
                    "sd": float(rel.std(ddof=1)),
                    "place_wins": int((rel < 0).sum()),
                },
                "brier_score_spread": float(np.ptp([row["score"] for row in rows])),
                "seeds": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
