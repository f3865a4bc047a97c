"""Repurchase cycles and dead times: learned on data whose answer is known by
construction, suppression at its boundaries, and both in the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbo.core.errors import ArtifactError
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY
from nbo.data.history import EncodedPurchases, encode_purchases
from nbo.models.artifacts import load_artifact, write_artifact
from nbo.models.cycles import (
    ItemWindows,
    Repurchase,
    cycle_summary,
    dead_time_summary,
    learn_repurchase,
    repurchase_cycles,
    suppressed_mask,
    suppression_days_per_item,
)
from nbo.models.served import (
    CYCLES_ARRAY,
    DEAD_DAYS_ARRAY,
    REBOUGHT_ARRAY,
    REPEAT_RATE_ARRAY,
    load_serving_model,
    model_arrays,
)
from nbo.offers.suppression import SuppressionWindow
from training.pipeline import TrainResult

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


# --- dead times -----------------------------------------------------------------------


def _gaps(customer: str, item: str, gaps: list[int]) -> list:
    """Purchases of ``item`` on START and then after each of ``gaps`` days."""
    days = np.concatenate([[0], np.cumsum(gaps)])
    return [(customer, item, START + pd.Timedelta(days=int(d), hours=9)) for d in days]


def _item(encoded: EncodedPurchases, values: np.ndarray, item: str) -> float:
    return float(values[encoded.items.index[item]])


def test_the_dead_time_is_a_low_quantile_of_the_gaps_not_the_cycle() -> None:
    # Six customers buy coffee every 14 days, but one gap in ten is 3 days.
    rows = [r for c in range(6) for r in _gaps(f"c{c}", "COFFEE", [3] + [14] * 9)]
    encoded = _lines(rows)

    low = learn_repurchase(encoded, min_repeat_buyers=5, quantile=0.1)
    median = learn_repurchase(encoded, min_repeat_buyers=5, quantile=0.5)

    assert _item(encoded, low.cycle_days, "COFFEE") == 14.0
    assert _item(encoded, low.dead_days, "COFFEE") == 3.0
    assert _item(encoded, median.dead_days, "COFFEE") == 14.0
    assert low.rebought.tolist() == [True]
    assert low.shop_dead_days == 3.0


def test_an_offers_horizon_shortens_the_dead_time_down_to_the_floor() -> None:
    # Weekly tea will be bought again within any 30-day horizon: held back for the floor
    # alone. A yearly diary is not, until 30 days before its 10%-quantile gap (300 days).
    rows = [r for c in range(6) for r in _gaps(f"t{c}", "TEA", [7] * 10)]
    rows += [r for c in range(6) for r in _gaps(f"d{c}", "DIARY", [300, 365])]
    encoded = _lines(rows)
    tea, diary = encoded.items.index["TEA"], encoded.items.index["DIARY"]

    learned = learn_repurchase(encoded, min_repeat_buyers=5, horizon_days=30)

    assert learned.dead_days[tea] == 1.0  # the floor
    assert learned.dead_days[diary] == 270.0
    assert learned.windows(30).once[[tea, diary]].tolist() == [1.0, 30.0]
    assert learned.windows(None).once[diary] == 270.0
    no_horizon = learn_repurchase(encoded, min_repeat_buyers=5)
    assert no_horizon.dead_days[[tea, diary]].tolist() == [7.0, 300.0]
    # Without a floor, tea is never held back.
    unfloored = learn_repurchase(encoded, min_repeat_buyers=5, horizon_days=30, floor_days=0)
    assert unfloored.dead_days[tea] == 0.0
    assert (
        not unfloored.windows(30)
        .suppressed(np.array([tea]), np.array([NOW - 60]), np.array([5.0]), NOW)
        .any()
    )


def test_each_repeat_buyer_counts_once_in_the_dead_time() -> None:
    # Ten customers wait 10 days; one wholesaler buys daily (99 gaps of a day). Counted
    # per gap, the 10% quantile would be a day; counted per buyer it is 10 days.
    rows = [r for c in range(10) for r in _gaps(f"c{c}", "TEA", [10])]
    rows += _gaps("wholesaler", "TEA", [1] * 99)

    learned = learn_repurchase(_lines(rows), min_repeat_buyers=5, quantile=0.1)

    assert learned.dead_days.tolist() == [10.0]


def test_the_floor_holds_whatever_the_data_says() -> None:
    rows = [r for c in range(6) for r in _gaps(f"c{c}", "MILK", [1, 1, 1])]
    encoded = _lines(rows)

    assert learn_repurchase(encoded, min_repeat_buyers=5, floor_days=0).dead_days[0] == 1.0
    floored = learn_repurchase(encoded, min_repeat_buyers=5, floor_days=2.5)
    assert floored.dead_days[0] == 2.5
    assert floored.shop_dead_days == 2.5


def test_items_nobody_rebuys_keep_the_window_and_few_repeaters_take_the_shops() -> None:
    rows = [r for c in range(6) for r in _gaps(f"c{c}", "COFFEE", [5, 5, 5])]
    # A flight: twenty customers, one each. A sofa: bought twice by two customers of
    # twenty (too few repeat buyers for a dead time of its own).
    rows += [(f"f{c}", "FLIGHT", START + pd.Timedelta(days=c)) for c in range(20)]
    rows += [(f"s{c}", "SOFA", START + pd.Timedelta(days=c)) for c in range(20)]
    rows += _gaps("s0", "SOFA", [40]) + _gaps("s1", "SOFA", [60])
    encoded = _lines(rows)

    learned = learn_repurchase(encoded, min_repeat_buyers=5)
    windows = learned.windows(30)

    flight, sofa, coffee = (encoded.items.index[i] for i in ("FLIGHT", "SOFA", "COFFEE"))
    assert learned.rebought[[flight, sofa, coffee]].tolist() == [False, False, True]
    assert learned.repeat_rate[flight] == 0.0
    assert learned.repeat_rate[sofa] == pytest.approx(2 / 20)
    assert learned.repeat_rate[coffee] == 1.0
    assert np.isnan(learned.cycle_days[sofa])
    # The shop's dead time (every repeat buyer's gaps, each buyer once) for the sofa.
    assert learned.dead_days[sofa] == learned.shop_dead_days == 5.0
    # Bought in one order: the flight and the sofa keep the window, coffee its dead time.
    assert windows.once[[flight, sofa, coffee]].tolist() == [30.0, 30.0, 5.0]
    # A customer who bought the sofa in two orders rebuys it: the shop's dead time.
    assert windows.again[[sofa, coffee]].tolist() == [5.0, 5.0]


def test_windows_never_exceed_the_configured_one() -> None:
    learned = Repurchase(
        cycle_days=np.array([14.0, np.nan, 60.0]),
        dead_days=np.array([7.0, 5.0, 45.0]),
        rebought=np.array([True, False, True]),
        repeat_rate=np.array([0.5, 0.0, 0.4]),
    )

    assert learned.windows(30).once.tolist() == [7.0, 30.0, 30.0]
    assert learned.windows(30).again.tolist() == [7.0, 5.0, 30.0]
    assert learned.windows(3).once.tolist() == [3.0, 3.0, 3.0]
    assert learned.windows(0).once.tolist() == [0.0, 0.0, 0.0]
    # 'all': a one-off purchase is suppressed for ever, a rebought item for its dead time.
    assert learned.windows(None).once.tolist() == [7.0, np.inf, 45.0]


def test_suppression_by_dead_time_reads_the_customers_orders() -> None:
    windows = ItemWindows(once=np.array([30.0, 30.0]), again=np.array([4.0, 4.0]))
    items = np.array([0, 1])
    five_days_ago = np.full(2, NOW - 5 * DAY)

    # Item 0 bought in one order, item 1 in three: only item 1 is past its dead time.
    got = windows.suppressed(items, five_days_ago, np.array([1.0, 3.0]), NOW)

    assert got.tolist() == [True, False]
    assert windows.suppressed(items, np.full(2, NOW - 4 * DAY), np.array([3.0, 3.0]), NOW).all()


def test_dead_time_summary() -> None:
    learned = Repurchase(
        cycle_days=np.full(4, np.nan),
        dead_days=np.array([2.0, 4.0, 6.0, 3.0], dtype=np.float32),
        rebought=np.array([True, True, True, False]),
        repeat_rate=np.array([0.5, 0.5, 0.5, 0.0]),
        shop_dead_days=3.0,
    )

    summary = dead_time_summary(learned, floor_days=2.0)

    assert summary["rebought_items"] == 3
    assert summary["rebought_share"] == pytest.approx(0.75)
    assert summary["floor_items"] == 1
    assert summary["days"] == {"p10": 2.4, "median": 4.0, "p90": 5.6}
    assert summary["shop_days"] == 3.0


# --- in the artifact ------------------------------------------------------------------


REPURCHASE_ARRAYS = (CYCLES_ARRAY, DEAD_DAYS_ARRAY, REBOUGHT_ARRAY, REPEAT_RATE_ARRAY)


def test_an_artifact_without_cycles_still_loads(tmp_path: Path, with_cycles: TrainResult) -> None:
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    arrays = {name: a for name, a in source.arrays.items() if name not in REPURCHASE_ARRAYS}
    models = tmp_path / "models"
    write_artifact(models, "old", arrays, {}, {"config": source.manifest["config"]})

    model = load_serving_model(models)

    assert model.repurchase_cycle_days is None
    assert model.repurchase is None
    assert model.suppression_windows(None) is None
    assert len(model.items) == 22


def test_an_artifact_with_cycles_and_no_dead_times_suppresses_by_cycle(
    tmp_path: Path, with_cycles: TrainResult
) -> None:
    # Artifacts from before dead times: the cycle, where shorter than the window.
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    arrays = {name: a for name, a in source.arrays.items() if name not in REPURCHASE_ARRAYS[1:]}
    models = tmp_path / "models"
    write_artifact(models, "old", arrays, {}, {"config": source.manifest["config"]})

    model = load_serving_model(models)
    windows = model.suppression_windows(30)

    assert model.repurchase is None and windows is not None
    refill = model.items.index["REFILL"]
    assert windows.once[refill] == windows.again[refill] == 14.0
    assert model.suppression_windows(30) is windows  # computed once per window


def test_an_artifact_with_a_negative_dead_time_is_refused(
    tmp_path: Path, with_cycles: TrainResult
) -> None:
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    dead = np.zeros(22, dtype=np.float32)  # 0: never held back, allowed
    models = tmp_path / "models"
    write_artifact(models, "zero", {**source.arrays, DEAD_DAYS_ARRAY: dead}, {}, {"config": {}})
    assert load_serving_model(models).repurchase is not None
    dead[3] = -1.0
    write_artifact(models, "bad", {**source.arrays, DEAD_DAYS_ARRAY: dead}, {}, {"config": {}})

    with pytest.raises(ArtifactError, match="repurchase_dead_days not negative"):
        load_serving_model(models, "bad")


def test_an_artifact_with_dead_times_and_no_cycles_is_refused(
    tmp_path: Path, with_cycles: TrainResult
) -> None:
    assert with_cycles.path is not None
    source = load_artifact(with_cycles.path.parent, with_cycles.version, mmap=False)
    arrays = {name: a for name, a in source.arrays.items() if name != CYCLES_ARRAY}
    models = tmp_path / "models"
    write_artifact(models, "bad", arrays, {}, {"config": source.manifest["config"]})

    with pytest.raises(ArtifactError, match="repurchase arrays all there with the cycles"):
        load_serving_model(models)


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
    learned = learn_repurchase(encoded, min_repeat_buyers=1)

    arrays = model_arrays(factors[:1], factors, history, history.counts, popularity, learned)
    assert arrays[CYCLES_ARRAY].dtype == arrays[DEAD_DAYS_ARRAY].dtype == np.float32
    assert arrays[REBOUGHT_ARRAY].dtype == bool
    assert arrays[REPEAT_RATE_ARRAY].tolist() == [1.0, 1.0]
    assert not set(REPURCHASE_ARRAYS) & set(
        model_arrays(factors[:1], factors, history, history.counts, popularity)
    )
    three = Repurchase(np.ones(3), np.ones(3), np.ones(3, bool), np.ones(3))
    with pytest.raises(ValueError, match="3 values for 2 items"):
        model_arrays(factors[:1], factors, history, history.counts, popularity, three)
