"""Helpers the tests share, whatever folder they are in (tests/ is on pytest's path):
planted-answer purchase data, a small training config, one-customer views of the
many-customer functions (an API call is a chunk of one), the churn data, small candidate
sides, catalogue files, the service's keys, metrics and log lines, a real ``nbo serve``
process, and the one-line error check of the commands.

Two groups of customers with disjoint tastes: group "a" buys only items A00..A09, group
"b" only B00..B09. Each customer bought some of their group's items before the holdout
and buys others in it, so a working CF model must rank the customer's own group first.
"""

from __future__ import annotations

import io
import json
import os
import re
import textwrap
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bench.servers import Server
from bench.servers import running_server as serve
from nbo.catalog.terms import Catalog
from nbo.core import columns as col
from nbo.core.apikeys import Role, create_key
from nbo.core.ids import IdMap
from nbo.core.vocabulary import DAY, STAGES
from nbo.data.features import OrderTable, build_order_table
from nbo.models.candidates import STAGE_CODE, ItemSide
from nbo.models.served import ServingModel
from nbo.offers.profiles import CustomerProfile, customer_profiles
from nbo.offers.ranking import OfferRequest, Ranking, rank_offers
from nbo.offers.state import Contact, PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from nbo.service.app import create_app
from nbo.settings import Settings
from training.config import TrainingConfig

# The repository: the bundled sample, the demo catalogue and experiments are in data/.
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
DEMO_CATALOG = DATA / "catalog.yaml"
END = pd.Timestamp("2026-06-30 12:00:00")
# A plain progress line (``nbo.progress``), which commands write to stderr when it is not
# a terminal (as under pytest): "nbo train: fit ALS (before cutoff): done in 0.1 s".
PROGRESS_LINE = re.compile(r"nbo [a-z]+: [^:]+: (done in [\d.]+ s|[^\n]*running for \d+ s)")


def without_progress(err: str) -> str:
    """``err`` less its progress lines: what is left is the command's messages."""
    return "".join(line for line in err.splitlines(keepends=True) if not PROGRESS_LINE.match(line))


GROUP_ITEMS = {"a": [f"A{i:02d}" for i in range(10)], "b": [f"B{i:02d}" for i in range(10)]}
ALL_ITEMS = sorted(GROUP_ITEMS["a"] + GROUP_ITEMS["b"])
CUSTOMERS_PER_GROUP = 30


def make_planted_purchases(seed: int = 7) -> pd.DataFrame:
    """Purchases in canonical columns over 150 days ending at ``END``."""
    rng = np.random.default_rng(seed)
    rows = []
    order = 0
    for group, items in GROUP_ITEMS.items():
        for c in range(CUSTOMERS_PER_GROUP):
            customer = f"{group}{c:02d}"
            basket = rng.choice(items, size=7, replace=False)
            for position, item in enumerate(basket):
                # The last two items of each basket fall in the final 30 days (holdout).
                days_before_end = rng.integers(1, 25) if position >= 5 else rng.integers(35, 150)
                order += 1
                rows.append(
                    {
                        "customer_id": customer,
                        "item_id": str(item),
                        "timestamp": END - pd.Timedelta(days=int(days_before_end)),
                        "quantity": int(rng.integers(1, 4)),
                        "price": 2.5,
                        "order_id": f"o{order}",
                    }
                )
    return pd.DataFrame(rows).sort_values("timestamp").reset_index(drop=True)


def expected_popularity(planted: pd.DataFrame, days: int) -> pd.Series:
    """Distinct buyers per item in the ``days`` before the last purchase, by pandas."""
    as_of = planted["timestamp"].max()
    recent = planted[planted["timestamp"] > as_of - pd.Timedelta(days=days)]
    buyers = recent.groupby("item_id")["customer_id"].nunique()
    return buyers.reindex(ALL_ITEMS, fill_value=0).astype(np.float32)


REPEAT_CUSTOMERS = 12


def make_refill_purchases() -> pd.DataFrame:
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


def worse_than_before(purchases: pd.DataFrame, holdout_days: int = 30) -> pd.DataFrame:
    """``purchases`` with every line before the holdout's cutoff moved to the other
    group's item of the same number (A03 <-> B03): a model learns the wrong tastes from
    it, while one trained on the lines before the cutoff as they were serves the holdout
    well (the quality gate's comparison with the current model)."""
    cutoff = purchases["timestamp"].max() - pd.Timedelta(days=holdout_days)
    swapped = purchases.copy()
    early = swapped["timestamp"] < cutoff
    other = {"A": "B", "B": "A"}
    swapped.loc[early, "item_id"] = [other[i[0]] + i[1:] for i in swapped.loc[early, "item_id"]]
    return swapped


def make_nobody_comes_back() -> pd.DataFrame:
    """Ten customers, one purchase each: six before the last 30 days, four new ones in
    them. Nobody who bought before the cutoff bought after it: no one to evaluate (a
    model published "not evaluated")."""
    return pd.DataFrame(
        {
            "customer_id": [f"c{n}" for n in range(10)],
            "item_id": [f"I{n % 4}" for n in range(10)],
            "timestamp": [END - pd.Timedelta(days=days) for days in (120, 100, 90, 70, 60, 45)]
            + [END - pd.Timedelta(days=days) for days in (20, 10, 5, 0)],
        }
    )


def small_training_config() -> TrainingConfig:
    """Enough factors for two tastes, few iterations: seconds, not minutes."""
    return TrainingConfig.model_validate(
        {"als": {"factors": 8, "iterations": 10, "regularization": 0.1, "refit_iterations": 5}}
    )


def rank_one(
    model: ServingModel,
    customer_id: str,
    k: int,
    now_s: int,
    window: SuppressionWindow,
    posted: Sequence[PostedPurchase] = (),
    fatigued: Collection[str] = (),
    personalize: bool = True,
    *,
    catalog: Catalog | None = None,
    stage: str = "active",
    channel: str = "email",
    impressions: Sequence[Contact] = (),
    churn_risk: float | None = None,
    monetary: float | None = None,
) -> Ranking:
    """One customer's ``rank_offers``, as an API call ranks them."""
    request = OfferRequest(
        customer_id,
        k,
        posted,
        fatigued,
        personalize,
        stage,
        channel,
        impressions,
        churn_risk,
        monetary,
    )
    return rank_offers(model, [request], now_s, window, catalog)[0]


def profile_one(
    model: ServingModel, customer_id: str, posted: Sequence[PostedPurchase], now_s: int
) -> CustomerProfile:
    """One customer's ``customer_profiles``."""
    return customer_profiles(model, [(customer_id, posted)], now_s)[0]


def posted(item_id: str, at: int, order: str, quantity: float = 1.0) -> PostedPurchase:
    """A posted purchase line of ``order`` (its event id is the order's)."""
    return PostedPurchase(item_id, quantity, at, order, order)


def assert_one_error_line(err: str, *fragments: str, command: str = "train") -> str:
    """``err`` is one line, ``nbo COMMAND: error: ...``, holding every fragment (after
    the progress lines of the steps done before the error, if any)."""
    assert "Traceback" not in err
    lines = without_progress(err).splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"nbo {command}: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# -- the churn data ---------------------------------------------------------------------

CHURN_SPAN_DAYS = 540


def make_churn_purchases(seed: int = 1, customers: int = 300) -> pd.DataFrame:
    """Two rhythms, same recency at any moment: half the customers buy every ~20 days
    until they stop for good (an exponential lifetime), half every ~150 days.

    A slow buyer who bought recently will not buy within 90 days (their next order is
    ~150 days after the last): recent means churn for them, the opposite of what recency
    says for everyone else. Only the gap between orders tells the two apart (the churn
    model tells a fast buyer who stopped from a slow one between orders, and by design
    not a slow buyer who just bought from one halfway to the next order).
    """
    rng = np.random.default_rng(seed)
    start = END - pd.Timedelta(days=CHURN_SPAN_DAYS)
    rows = []
    order = 0
    for c in range(customers):
        slow = c % 2 == 1
        gap = 150.0 if slow else 20.0
        dies = np.inf if slow else float(rng.exponential(300.0))
        t = float(rng.uniform(0, gap))
        while t < CHURN_SPAN_DAYS and t < dies:
            order += 1
            when = start + pd.Timedelta(days=t) + pd.Timedelta(hours=int(rng.integers(8, 20)))
            for item in rng.choice(12, size=int(rng.integers(1, 3)), replace=False):
                rows.append(
                    {
                        col.CUSTOMER_ID: f"{'s' if slow else 'f'}{c:03d}",
                        col.ITEM_ID: f"I{item:02d}",
                        col.TIMESTAMP: when,
                        col.QUANTITY: 1.0,
                        col.PRICE: 4.0,
                        col.ORDER_ID: f"o{order}",
                    }
                )
            t += gap * float(rng.uniform(0.8, 1.2))
    frame = pd.DataFrame(rows)
    return frame[frame[col.TIMESTAMP] <= END].reset_index(drop=True)


def orders_of(purchases: pd.DataFrame) -> tuple[OrderTable, IdMap]:
    """Every customer's orders, customers in id order."""
    ids = IdMap(sorted(purchases[col.CUSTOMER_ID].unique()))
    return build_order_table(purchases, ids), ids


def data_end(orders: OrderTable) -> int:
    """The second after the last order."""
    return int(orders.time.max()) + 1


# -- candidate sources on six items -----------------------------------------------------


def tiny_items(n_items: int = 6, **extra: Any) -> ItemSide:
    """Six items; 0..2 similar to each other, 3..5 to each other; item 5 most popular.
    ``extra``: more of ``ItemSide.build``'s arguments (prices, repeat rates and the like),
    or ``similarity`` in place of the two groups."""
    factors = np.zeros((n_items, 2), np.float32)
    factors[:3, 0] = 1.0
    factors[3:, 1] = 1.0
    similarity = np.zeros((n_items, n_items), np.float32)
    for group in ((0, 1, 2), (3, 4, 5)):
        for a in group:
            for b in group:
                if a != b:
                    similarity[a, b] = 1.0
    popularity = np.arange(n_items, dtype=np.float64)
    return ItemSide.build(
        100 * DAY,
        factors,
        extra.pop("similarity", sp.csr_matrix(similarity)),
        popularity,
        popularity / 2,
        np.array([10.0, np.nan, np.nan, np.nan, np.nan, np.nan]),
        **extra,
    )


def staged_items() -> ItemSide:
    """tiny_items plus prices and a stage popularity where loyal customers favour item 2
    and lapsed ones item 4."""
    by_stage = np.zeros((len(STAGES), 6))
    by_stage[STAGE_CODE["loyal"], 2] = 0.9
    by_stage[STAGE_CODE["lapsed"], 4] = 0.7
    return tiny_items(price=np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), stage_popularity=by_stage)


# -- small files a test writes (catalogues, experiments) --------------------------------


def at(text: str) -> int:
    """An ISO time (a naive one is UTC) in Unix seconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rewrite(path: Path, text: str) -> None:
    """Write in place and move mtime on, as an editor's save a second later would."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    later = before + 2_000_000_000
    os.utime(path, ns=(later, later))


# Catalogue files of one offer each, for reloads and refusals: two good, one refused
# (a negative value).
GOOD_CATALOG = (
    "version: 1\noffers:\n  - {id: one, kind: incentive, incentive: free_shipping, value: 5}\n"
)
GOOD_CATALOG_2 = (
    "version: 1\noffers:\n  - {id: two, kind: incentive, incentive: free_shipping, value: 6}\n"
)
BAD_CATALOG = (
    "version: 1\noffers:\n  - {id: two, kind: incentive, incentive: free_shipping, value: -6}\n"
)


# -- the service ------------------------------------------------------------------------

# The service tests' clock: the planted data ends on 2026-06-29.
CLOCK = "2026-06-30T12:00:00Z"
REQUEST_SECONDS = 10
# One API key per role, as ``nbo keys create`` makes them: the key and its entry.
KEYS = {role: create_key(role) for role in Role}
ENTRIES = [entry for _, entry in KEYS.values()]
# A metric sample as prometheus-client's parser reads it: name, labels, value.
Sample = tuple[str, dict[str, str], float]


def app_for(models_dir: Path, **settings: object) -> TestClient:
    """The app on ``models_dir`` at the test clock, ``settings`` changed."""
    return TestClient(create_app(Settings(models_dir=models_dir, clock=CLOCK, **settings)))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_json_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    """An error answer: ``status`` and a JSON body with its error, message and details."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "message", "details"}
    assert body["message"]
    return body


def scrape(client: TestClient) -> list[Sample]:
    """The samples of ``/metrics``, read with prometheus-client's own parser."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(
        v
        for n, have, v in samples
        if n == name and all(have.get(k) == want for k, want in labels.items())
    )


def log_lines(sink: io.StringIO) -> list[dict]:
    """The JSON lines the ``logs`` fixture captured."""
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def access_lines(sink: io.StringIO) -> list[dict]:
    return [line for line in log_lines(sink) if line["logger"] == "nbo.access"]


# An experiments file: a control and two models (aliases of ``two_models``), 20/40/40.
EXPERIMENT = """
version: 1
experiments:
  - name: ranker-test
    salt: s1
    start: 2026-06-01T00:00:00Z
    end: 2026-08-01T00:00:00Z
    variants:
      - {name: control, control: true, weight: 20}
      - {name: production, model: production, weight: 40}
      - {name: candidate, model: candidate, weight: 40}
"""


@contextmanager
def running_server(
    models_dir: Path, store: Path, log: Path, settings: dict[str, str] | None = None
) -> Iterator[Server]:
    """``nbo serve`` on a free loopback port with the test clock, ready (``bench.servers``:
    stopped on the way out; ``Server.terminate`` stops it and checks the stop was
    graceful). ``settings``: more ``NBO_*`` variables for the server."""
    with serve(models_dir, store, log, {"NBO_CLOCK": CLOCK, **(settings or {})}) as server:
        yield server


# When the service tests' posted purchases happen: after the planted data ends, before
# the clock.
POSTED_AT = "2026-06-30T11:00:00Z"


def purchase_event(event_id: str, customer: str, items: list[str], **extra: object) -> dict:
    """A purchase event of one unit of each item at 2.0, in an order of its own."""
    return {
        "event_id": event_id,
        "type": "purchase",
        "customer_id": customer,
        "timestamp": POSTED_AT,
        "order_id": f"o-{event_id}",
        "items": [{"item_id": item, "quantity": 1, "price": 2.0} for item in items],
        **extra,
    }


def unwritable_folders(tmp_path: Path, name: str) -> list[tuple[Path, str]]:
    """Folders a command cannot write (named ``name`` where one is made), each with what
    its one error line says: a regular file, a folder under a file, and /proc (which
    refuses even root, where permission bits do not)."""
    afile = tmp_path / "afile"
    afile.write_text("a regular file\n", encoding="utf-8")
    cases = [
        (afile, "exists and is not a folder"),
        (afile / name, f"cannot be created ({afile} is not a folder)"),
    ]
    if Path("/proc").is_dir():
        cases.append((Path("/proc") / name, "cannot be written (no file can be created"))
    return cases
