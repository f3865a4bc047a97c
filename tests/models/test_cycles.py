"""Repurchase cycles: learned on planted data whose answer is known by construction,
cycle-aware suppression at its boundaries, the artifact round trip, and how the trainer
reports them (manifest, metrics, summary line)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from rich.console import Console
from support import END, make_planted_purchases, small_training_config

from nbo.core.errors import ArtifactError
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY
from nbo.data.history import EncodedPurchases, encode_purchases
from nbo.data.mapping import load_mapping
from nbo.models.artifacts import load_artifact, write_artifact
from nbo.models.cycles import (
    cycle_summary,
    repurchase_cycles,
    suppressed_mask,
    suppression_days_per_item,
)
from nbo.models.served import CYCLES_ARRAY, load_serving_model, model_arrays
from nbo.offers.suppression import SuppressionWindow
from training.cli import cycles_line, print_summary
from training.config import TrainingConfig
from training.methods import cycle_suppressed, excluding, popularity_recommender
from training.pipeline import TrainResult, train
from training.split import time_split

START = pd.Timestamp("2024-01-01 00:00")


def _lines(rows: list[tuple[str, str, pd.Timestamp]]) -> EncodedPurchases:
    """(customer, item, timestamp) rows, each line its own order."""
    frame = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])
    return encode_purchases(frame)


def _every(customer: str, item: str, days: float, times: int, hour: int = 9) -> list:
    """``times`` purchases ``days`` apart, starting on START at ``hour`` o'clock."""
    first = START + pd.Timedelta(hours=hour)
    return [(customer, item, first + pd.Timedelta(days=days * n)) for n in range(times)]


def _cycle(encoded: EncodedPurchases, cycles: np.ndarray, item: str) -> float:
    return float(cycles[encoded.items.index[item]])


# --- learning the cycle ---------------------------------------------------------------


def test_every_customer_every_14_days_gives_14() -> None:
    # Six customers, each at a different hour of the day and starting on a different day.
    rows = []
    for c in range(6):
        rows += [
            (f"c{c}", "COFFEE", t + pd.Timedelta(days=c))
            for _, _, t in _every(f"c{c}", "COFFEE", 14, 8, hour=2 + 3 * c)
        ]
    encoded = _lines(rows)

    cycles = repurchase_cycles(encoded, min_repeat_buyers=5)

    assert cycles.dtype == np.float32
    assert cycles.shape == (len(encoded.items),) == (1,)
    assert _cycle(encoded, cycles, "COFFEE") == 14.0


def test_fewer_repeat_buyers_than_the_minimum_gives_nan() -> None:
    rows = []
    for c in range(4):  # four repeat buyers of TEA ...
        rows += _every(f"r{c}", "TEA", 10, 5)
    for c in range(20):  # ... and twenty who bought it once: not repeat buyers
        rows.append((f"o{c}", "TEA", START + pd.Timedelta(days=c)))
    encoded = _lines(rows)

    assert np.isnan(_cycle(encoded, repurchase_cycles(encoded, min_repeat_buyers=5), "TEA"))
    assert _cycle(encoded, repurchase_cycles(encoded, min_repeat_buyers=4), "TEA") == 10.0


def test_items_never_bought_twice_by_anyone_have_no_cycle() -> None:
    rows = [(f"c{c}", "SOFA", START + pd.Timedelta(days=c)) for c in range(50)]
    rows += [(f"c{c}", "LAMP", START + pd.Timedelta(days=c)) for c in range(50)]
    encoded = _lines(rows)

    assert np.isnan(repurchase_cycles(encoded, min_repeat_buyers=1)).all()


def test_a_wholesaler_buying_daily_does_not_move_the_median() -> None:
    rows = []
    for c in range(5):
        rows += _every(f"c{c}", "COFFEE", 14, 8)
    rows += _every("wholesaler", "COFFEE", 1, 120)
    encoded = _lines(rows)

    cycles = repurchase_cycles(encoded, min_repeat_buyers=5)

    assert _cycle(encoded, cycles, "COFFEE") == 14.0
    # Pooling every gap instead would let the wholesaler's 119 one-day gaps decide.
    pooled = [1] * 119 + [14] * 5 * 7
    assert np.median(pooled) == 1.0


def test_same_day_repeats_collapse() -> None:
    rows = []
    for c in range(5):
        for _, item, t in _every(f"c{c}", "COFFEE", 14, 6, hour=8):
            # Three orders of the item on each purchase day: 08:00, 12:00 and 20:00.
            rows += [(f"c{c}", item, t + pd.Timedelta(hours=h)) for h in (0, 4, 12)]
    # Customers who only ever bought BAGS in two orders on one day are not repeat buyers.
    for c in range(5):
        day = START + pd.Timedelta(days=c)
        rows += [(f"c{c}", "BAGS", day + pd.Timedelta(hours=9)), (f"c{c}", "BAGS", day)]
    encoded = _lines(rows)

    cycles = repurchase_cycles(encoded, min_repeat_buyers=5)

    assert _cycle(encoded, cycles, "COFFEE") == 14.0
    assert np.isnan(_cycle(encoded, cycles, "BAGS"))


def test_gaps_count_calendar_days() -> None:
    # 23:00 one day and 01:00 the next are two purchase days one day apart.
    rows = []
    for c in range(5):
        day = START + pd.Timedelta(days=3 * c)
        rows += [(f"c{c}", "MILK", day + pd.Timedelta(hours=23)), (f"c{c}", "MILK", day)]
        rows.append((f"c{c}", "MILK", day + pd.Timedelta(days=1, hours=1)))
    encoded = _lines(rows)

    assert _cycle(encoded, repurchase_cycles(encoded, min_repeat_buyers=5), "MILK") == 1.0


def test_median_of_each_buyers_median_gap() -> None:
    # Gaps per buyer (days) and that buyer's median: 7, 10, 10, 20, 21.
    gaps = {"b0": [7, 7, 40], "b1": [10], "b2": [3, 10, 30], "b3": [20, 20], "b4": [21, 60, 2]}
    rows = []
    for customer, between in gaps.items():
        days = np.concatenate([[0], np.cumsum(between)])
        rows += [(customer, "OIL", START + pd.Timedelta(days=int(d))) for d in days]
    encoded = _lines(rows)

    assert _cycle(encoded, repurchase_cycles(encoded, min_repeat_buyers=5), "OIL") == 10.0
    # Without b2 (7, 10, 20, 21) it is the mean of the two middle buyers, 10 and 20.
    four = _lines([row for row in rows if row[0] != "b2"])
    assert _cycle(four, repurchase_cycles(four, min_repeat_buyers=4), "OIL") == 15.0
    # A buyer with two gaps has the mean of the two as median: 7 and 8 -> 7.5.
    rows = []
    for c in range(5):
        rows += [(f"c{c}", "SOAP", START + pd.Timedelta(days=d)) for d in (0, 7, 15)]
    soap = _lines(rows)
    assert _cycle(soap, repurchase_cycles(soap, min_repeat_buyers=5), "SOAP") == 7.5


def test_max_days_caps_a_learned_cycle() -> None:
    rows = []
    for c in range(5):
        rows += _every(f"c{c}", "RUG", 100, 3)
        rows += _every(f"c{c}", "COFFEE", 14, 3)
    encoded = _lines(rows)

    cycles = repurchase_cycles(encoded, min_repeat_buyers=5, max_days=60)

    assert _cycle(encoded, cycles, "RUG") == 60.0
    assert _cycle(encoded, cycles, "COFFEE") == 14.0
    assert _cycle(encoded, repurchase_cycles(encoded, min_repeat_buyers=5), "RUG") == 100.0


def test_no_purchases_gives_all_nan() -> None:
    empty = np.empty(0, dtype=np.int64)
    encoded = EncodedPurchases(IdMap(["c"]), IdMap(["x", "y"]), empty, empty, empty, empty)

    cycles = repurchase_cycles(encoded)

    assert cycles.shape == (2,)
    assert np.isnan(cycles).all()


def test_matches_a_plain_loop_on_random_data() -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    frame = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 40, n).astype(str),
            "item_id": rng.integers(0, 15, n).astype(str),
            "timestamp": START + pd.to_timedelta(rng.integers(0, 200 * DAY, n), unit="s"),
        }
    )
    encoded = encode_purchases(frame)

    cycles = repurchase_cycles(encoded, min_repeat_buyers=3, max_days=50)

    expected = {}
    frame["day"] = frame["timestamp"].dt.floor("D")
    for item, lines in frame.groupby("item_id"):
        buyer_medians = []
        for _, own in lines.groupby("customer_id"):
            days = np.sort(own["day"].unique())
            if len(days) >= 2:
                buyer_medians.append(np.median(np.diff(days) / np.timedelta64(1, "D")))
        if len(buyer_medians) >= 3:
            expected[item] = min(float(np.median(buyer_medians)), 50.0)
    for position, item in enumerate(encoded.items.ids.tolist()):
        if item in expected:
            assert cycles[position] == pytest.approx(expected[item]), item
        else:
            assert np.isnan(cycles[position]), item
    assert expected  # the random data does produce cycles


def test_min_repeat_buyers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_repeat_buyers"):
        repurchase_cycles(_lines(_every("c", "X", 1, 2)), min_repeat_buyers=0)


# --- suppression with cycles ----------------------------------------------------------

NOW = 1_700_000_000
CYCLES = np.array([14.0, np.nan, 3.5], dtype=np.float32)  # item 1 has no learned cycle


def test_suppression_days_per_item() -> None:
    assert suppression_days_per_item(CYCLES, 30).tolist() == [14.0, 30.0, 3.5]
    # A cycle only shortens the window: never longer than the default.
    assert suppression_days_per_item(CYCLES, 10).tolist() == [10.0, 10.0, 3.5]
    assert suppression_days_per_item(CYCLES, 0).tolist() == [0.0, 0.0, 0.0]
    assert suppression_days_per_item(CYCLES, None).tolist() == [14.0, np.inf, 3.5]


@pytest.mark.parametrize(
    ("item", "days", "offset", "suppressed"),
    [
        (0, 14, -1, True),  # one second before the cycle ends
        (0, 14, 0, True),  # exactly one cycle ago: still suppressed, as SuppressionWindow
        (0, 14, 1, False),  # one second later: due again
        (2, 3.5, 0, True),  # a fractional cycle ends on its exact second
        (2, 3.5, 1, False),
        (1, 30, 0, True),  # no cycle: the default window, same boundary
        (1, 30, 1, False),
    ],
)
def test_suppressed_at_the_boundaries(
    item: int, days: float, offset: int, suppressed: bool
) -> None:
    window = suppression_days_per_item(CYCLES, 30)
    last = NOW - int(days * DAY) - offset

    got = suppressed_mask(np.array([item]), np.array([last]), NOW, window)

    assert got.tolist() == [suppressed]


def test_default_zero_never_suppresses_even_items_with_a_cycle() -> None:
    window = suppression_days_per_item(CYCLES, 0)
    items = np.array([0, 1, 2])
    last = np.full(3, NOW - 1)  # all bought a second ago

    assert not suppressed_mask(items, last, NOW, window).any()


def test_default_all_suppresses_items_without_a_cycle_forever() -> None:
    window = suppression_days_per_item(CYCLES, None)
    items = np.array([0, 1, 2])
    last = np.full(3, NOW - 5_000 * DAY)

    assert items[suppressed_mask(items, last, NOW, window)].tolist() == [1]


@pytest.mark.parametrize("days", [0, 1, 30, None])
def test_without_cycles_suppression_equals_the_plain_window(days: int | None) -> None:
    rng = np.random.default_rng(days or 0)
    items = rng.permutation(50)[:20]
    last = NOW - rng.integers(0, 60, 20) * DAY  # whole days: many exactly on the edge
    window = suppression_days_per_item(np.full(50, np.nan, dtype=np.float32), days)

    earliest = SuppressionWindow(days).earliest_suppressed(NOW)
    expected = [] if earliest is None else items[last >= earliest].tolist()

    assert items[suppressed_mask(items, last, NOW, window)].tolist() == expected
    assert suppressed_mask(items, last, NOW, window).tolist() == [i in expected for i in items]


def test_cycle_summary() -> None:
    cycles = np.array([np.nan, 10, 20, np.nan, 30, 40, 50], dtype=np.float32)

    summary = cycle_summary(cycles)

    assert summary["items"] == 5
    assert summary["share"] == pytest.approx(5 / 7)
    assert summary["days"] == {
        "min": 10.0,
        "p10": 14.0,
        "p25": 20.0,
        "median": 30.0,
        "p75": 40.0,
        "p90": 46.0,
        "max": 50.0,
    }
    assert cycle_summary(np.full(3, np.nan, dtype=np.float32)) == {
        "items": 0,
        "share": 0.0,
        "days": None,
    }


# --- the trainer, the artifact and the report -----------------------------------------

REPEAT_CUSTOMERS = 12


def _with_refills() -> pd.DataFrame:
    """The planted data plus REFILL, which twelve customers buy every 14 days (known
    cycle 14) and RARE, which four customers buy twice (too few for a cycle)."""
    base = make_planted_purchases()
    rows = []
    for c in range(REPEAT_CUSTOMERS):
        customer = f"{'ab'[c % 2]}{c:02d}"
        for n in range(10):
            when = END - pd.Timedelta(days=3 + c + 14 * n, hours=c)
            rows.append((customer, "REFILL", when, f"r{c}-{n}"))
    for c in range(4):
        for days in (60, 90):
            rows.append((f"a{c + 20:02d}", "RARE", END - pd.Timedelta(days=days), f"s{c}-{days}"))
    extra = pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp", "order_id"])
    extra = extra.assign(quantity=1, price=2.5)
    return pd.concat([base, extra], ignore_index=True).sort_values("timestamp")


@pytest.fixture(scope="module")
def refills_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refills") / "refills.csv"
    _with_refills().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def with_cycles(tmp_path_factory: pytest.TempPathFactory, refills_csv: Path) -> TrainResult:
    models = tmp_path_factory.mktemp("models")
    return train(refills_csv, load_mapping("canonical"), models, small_training_config())


def test_trainer_stores_the_cycles_in_the_artifact(with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    stored = np.load(with_cycles.path / f"{CYCLES_ARRAY}.npy")
    items = np.load(with_cycles.path / "item_ids.npy").tolist()

    assert stored.dtype == np.float32
    assert len(stored) == len(items) == 22
    assert stored[items.index("REFILL")] == 14.0
    others = [i for i, item in enumerate(items) if item != "REFILL"]
    assert np.isnan(stored[others]).all()

    model = load_serving_model(with_cycles.path.parent, with_cycles.version)
    assert model.repurchase_cycle_days is not None
    assert np.array_equal(model.repurchase_cycle_days, stored, equal_nan=True)
    window = model.suppression_days(30)
    assert window is not None
    assert window[items.index("REFILL")] == 14.0
    assert window[items.index("RARE")] == 30.0
    assert model.suppression_days(30) is window  # computed once per default


def test_manifest_cycles_section(with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    manifest = json.loads((with_cycles.path / "manifest.json").read_text(encoding="utf-8"))
    cycles = manifest["cycles"]

    assert cycles == with_cycles.manifest["cycles"]
    assert cycles["enabled"] is True
    assert cycles["min_repeat_buyers"] == 5
    assert cycles["max_days"] == 365
    assert cycles["items"] == 1
    assert cycles["share"] == pytest.approx(1 / 22)
    assert cycles["days"] == {
        name: 14.0 for name in ("min", "p10", "p25", "median", "p75", "p90", "max")
    }
    # Before the cutoff (30 days before the end) the REFILL buyers already repeat.
    assert cycles["items_before_cutoff"] == 1
    assert manifest["config"]["cycles"] == {
        "enabled": True,
        "min_repeat_buyers": 5,
        "max_days": 365,
    }


def test_als_cycles_is_evaluated_on_both_truths(with_cycles: TrainResult) -> None:
    for truth in ("all", "new"):
        metrics = with_cycles.metrics[truth]
        assert {"als", "als_window", "als_cycles", "buy_again", "popularity"} <= set(metrics)
        assert set(metrics["als_cycles"]) == set(metrics["als"])
        assert metrics["als_cycles"]["customers"] == metrics["als"]["customers"]
    gate = with_cycles.manifest["quality_gate"]
    assert gate[gate["method"]] == with_cycles.metrics["all"][gate["method"]]["ndcg@10"]


def test_report_shows_the_cycles_line(with_cycles: TrainResult) -> None:
    out = io.StringIO()
    print_summary(Console(file=out, width=200, color_system=None), with_cycles)
    text = out.getvalue()

    assert (
        "repurchase cycles: 1 items (4.5%), median 14 days (p10 14 .. p90 14); "
        "1 before the cutoff for als_cycles" in text
    )
    assert "als_cycles" in text.split("truth: all holdout purchases")[1]


def test_cycles_line_formats() -> None:
    days = {"min": 2.0, "p10": 7.0, "p25": 10.0, "median": 21.5, "p75": 30.0, "p90": 45.25}
    line = cycles_line(
        {
            "enabled": True,
            "min_repeat_buyers": 5,
            "items": 1234,
            "share": 0.25,
            "days": {**days, "max": 90.0},
            "items_before_cutoff": 1100,
        }
    )
    assert line == (
        "[bold]repurchase cycles:[/] 1,234 items (25.0%), median 21.5 days "
        "(p10 7 .. p90 45.2); 1,100 before the cutoff for als_cycles"
    )
    none = {"enabled": True, "min_repeat_buyers": 5, "items": 0, "share": 0.0, "days": None}
    assert cycles_line(none).endswith("0 items (0.0%), none learned (fewer than 5 repeat buyers)")
    assert cycles_line({"enabled": False}) == "[bold]repurchase cycles:[/] off"


def test_cycles_can_be_turned_off(tmp_path: Path, refills_csv: Path) -> None:
    config = TrainingConfig.model_validate(
        {**small_training_config().model_dump(), "cycles": {"enabled": False}}
    )

    result = train(refills_csv, load_mapping("canonical"), tmp_path / "models", config)

    assert result.path is not None
    assert not (result.path / f"{CYCLES_ARRAY}.npy").exists()
    assert result.manifest["cycles"] == {"enabled": False}
    assert "als_cycles" not in result.metrics["all"]
    model = load_serving_model(result.path.parent)
    assert model.repurchase_cycle_days is None
    assert model.suppression_days(30) is None


def test_an_artifact_without_cycles_still_loads(tmp_path: Path, with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    arrays = {name: a for name, a in source.arrays.items() if name != CYCLES_ARRAY}
    models = tmp_path / "models"
    write_artifact(models, "old", arrays, {}, {"config": source.manifest["config"]})

    model = load_serving_model(models)

    assert model.repurchase_cycle_days is None
    assert model.suppression_days(None) is None
    assert len(model.items) == 22


@pytest.mark.parametrize(
    ("cycles", "problem"),
    [
        (np.full(21, 14.0, dtype=np.float32), "repurchase_cycle_days per item"),
        (np.zeros(22, dtype=np.float32), "repurchase_cycle_days positive or NaN"),
    ],
)
def test_an_artifact_with_bad_cycles_is_refused(
    tmp_path: Path, with_cycles: TrainResult, cycles: np.ndarray, problem: str
) -> None:
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    arrays = {**source.arrays, CYCLES_ARRAY: cycles}
    models = tmp_path / "models"
    write_artifact(models, "bad", arrays, {}, {"config": source.manifest["config"]})

    with pytest.raises(ArtifactError, match=problem):
        load_serving_model(models)


def test_model_arrays_refuses_cycles_of_the_wrong_length() -> None:
    encoded = _lines(_every("c", "X", 1, 2) + _every("c", "Y", 1, 2))
    history = encoded.history()
    factors = np.ones((2, 3), dtype=np.float32)
    popularity = np.ones(2, dtype=np.float32)

    arrays = model_arrays(
        factors[:1], factors, history, history.counts, popularity, np.array([1.0, np.nan])
    )
    assert arrays[CYCLES_ARRAY].dtype == np.float32
    assert CYCLES_ARRAY not in model_arrays(
        factors[:1], factors, history, history.counts, popularity
    )
    with pytest.raises(ValueError, match="3 values for 2 items"):
        model_arrays(factors[:1], factors, history, history.counts, popularity, np.ones(3))


# --- the evaluation -------------------------------------------------------------------


def _split_rows() -> pd.DataFrame:
    """holdout_days=10: last purchase 2024-03-31, cutoff 2024-03-21 00:00. Five customers
    buy K every 7 days until 2024-03-15 (6 days before the cutoff: due again 1 day after
    it), and L on 2024-03-13 (8 days before the cutoff, L has no cycle)."""
    rows = []
    for c in range(5):
        for day in pd.date_range("2024-02-02", "2024-03-15", freq="7D"):
            rows.append((f"c{c}", "K", day))
        rows.append((f"c{c}", "L", pd.Timestamp("2024-03-13")))
    rows.append(("c0", "K", pd.Timestamp("2024-03-31")))
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])


def _sets(matrix: sp.csr_matrix, items: list[str]) -> list[set[str]]:
    return [
        {items[j] for j in matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]]}
        for r in range(matrix.shape[0])
    ]


@pytest.mark.parametrize("days", [0, 5, 8, 30, None])
def test_cycle_suppression_at_the_cutoff(days: int | None) -> None:
    split = time_split(_split_rows(), holdout_days=10, suppression_days=days)
    items = split.train.items.ids.tolist()
    cycles = repurchase_cycles(split.train_lines, min_repeat_buyers=5)
    assert items == ["K", "L"]
    assert cycles[0] == 7.0 and np.isnan(cycles[1])

    suppressed = cycle_suppressed(split, suppression_days_per_item(cycles, days))
    without = cycle_suppressed(split, suppression_days_per_item(np.full(2, np.nan), days))

    # K (bought 6 days before the cutoff, 7-day cycle) is suppressed when the window,
    # capped by its cycle, reaches 6 days; L (8 days before, no cycle) only by a default
    # window of 8 days or more.
    k_suppressed = days is None or days >= 6
    l_suppressed = days is None or days >= 8
    expected = {name for name, on in (("K", k_suppressed), ("L", l_suppressed)) if on}
    assert _sets(suppressed, items) == [expected] * 5
    # Without cycles it is exactly the split's own suppression window.
    assert _sets(without, items) == _sets(split.suppressed, items)


def test_excluding_adds_to_what_the_evaluation_excludes() -> None:
    recommend = popularity_recommender(np.array([4.0, 3.0, 2.0, 1.0]), 4)
    always = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    window = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    wrapped = excluding(recommend, always)
    customers = np.array([0, 1])

    assert wrapped(customers, None).tolist() == [[1, 2, 3, -1], [0, 1, 2, 3]]
    assert wrapped(customers, window).tolist() == [[2, 3, -1, -1], [0, 1, 3, -1]]
    # Rows follow the customers asked for.
    assert wrapped(np.array([1]), None).tolist() == [[0, 1, 2, 3]]
