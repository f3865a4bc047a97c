"""The decision's kernels are compiled when a model loads (``nbo.models.warmup``), not on
a customer's request, and nbo starts where numba cannot cache them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from numba.core.registry import CPUDispatcher

from nbo.catalog.loading import default_catalog
from nbo.models import candidate_kernels as kernels
from nbo.models.served import ServingModel, load_serving_model
from nbo.models.warmup import register_warm_up, warm_up
from nbo.offers.decision import ContactPolicy, DecisionRequest, Occasion, decide
from nbo.offers.state import CustomerState, PostedPurchase
from nbo.offers.suppression import SuppressionWindow

NOW_S = 1_780_000_000


def _compiled(called_from_python: bool = True) -> dict[str, int]:
    """Per kernel (those Python calls, or all), how many versions (argument types) it
    has compiled or loaded. (A helper that only kernels call has none of its own when
    they come from the cache.)"""
    return {
        name: len(value.overloads)
        for name, value in vars(kernels).items()
        if isinstance(value, CPUDispatcher) and not (called_from_python and name[0] == "_")
    }


def _offers(model: ServingModel, customer: str, posted: tuple[PostedPurchase, ...]) -> list:
    decision = decide(
        model,
        default_catalog(),
        ContactPolicy(SuppressionWindow(30)),
        [DecisionRequest(customer, CustomerState(posted=posted))],
        Occasion("email", 5, NOW_S),
    )[0]
    assert decision.ranking is not None
    return [(o.item_id, o.score) for o in decision.ranking.offers]


def test_a_loaded_model_serves_without_compiling(models_dir: Path) -> None:
    """Every kernel a decision calls was compiled, with the model's argument types, when
    the model loaded: known, unknown and refolded customers compile nothing more."""
    model = load_serving_model(models_dir)
    assert model.item_side is not None, "the planted model serves the ranker"
    loaded = _compiled()
    assert all(loaded.values()), loaded
    known = str(model.customers.ids[0])
    bought = PostedPurchase(str(model.items.ids[1]), 1.0, NOW_S - 86_400, "o1", "e1")
    for customer, posted in ((known, ()), (known, (bought,)), ("someone new", (bought,))):
        _offers(model, customer, posted)
    assert _compiled() == loaded


def test_registered_steps_run_with_the_model(served: ServingModel) -> None:
    seen: list[str] = []

    def step(model: ServingModel) -> None:
        seen.append(model.version)

    assert register_warm_up(step) is step
    register_warm_up(step)  # once only
    warm_up(served)
    assert seen == [served.version]


def test_without_a_writable_cache_folder_nbo_compiles_and_says_so(
    models_dir: Path, served: ServingModel
) -> None:
    """A read-only install with no user cache folder (numba refuses ``cache=True`` at
    import there): nbo still loads, compiles in memory, warns once naming
    NUMBA_CACHE_DIR, and decides as it does with the cache."""
    known = str(served.customers.ids[0])
    script = f"""
import json, logging, sys
import numba.core.caching as caching
def refuse(self):
    raise OSError("read-only file system")
caching._CacheLocator.ensure_cache_path = refuse
logging.basicConfig(level=logging.WARNING)
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_warmup import _offers
from nbo.core import compiled
from nbo.models.served import load_serving_model
model = load_serving_model(Path({str(models_dir)!r}))
print(json.dumps([compiled.uncached, _offers(model, {known!r}, ())]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    uncached, offers = json.loads(done.stdout.strip().splitlines()[-1])
    # every kernel of the candidate stage among those compiled in memory
    assert set(_compiled(called_from_python=False)) <= set(uncached)
    assert done.stderr.count("numba cannot cache the compiled kernels") == 1
    assert "NUMBA_CACHE_DIR" in done.stderr
    assert [tuple(o) for o in offers] == _offers(served, known, ())
