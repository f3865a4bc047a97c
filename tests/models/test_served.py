"""The served model built from an artifact: the same scores as the model in memory,
artifacts it cannot serve refused, and a customer forgotten in place."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from implicit.cpu.topk import topk
from support import small_training_config

from nbo.core.errors import ArtifactError
from nbo.core.vocabulary import DAY
from nbo.data.mapping import load_mapping
from nbo.models import candidates as candidates_module
from nbo.models.artifacts import Artifact, load_artifact, write_artifact
from nbo.models.candidates import FEATURES, ITEM_FEATURES, shortlist_width
from nbo.models.popularity import popular_order
from nbo.models.served import ServingModel, load_serving_model
from nbo.offers.ranking import OfferRequest, rank_offers
from nbo.offers.state import PostedPurchase
from nbo.offers.suppression import SuppressionWindow
from training import publish
from training.pipeline import TrainResult, train


def test_serving_model_scores_equal_the_in_memory_model(
    tmp_path: Path, planted_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture the arrays the trainer hands to write_artifact; the loaded model must score
    exactly the same (save -> load changes nothing)."""
    captured: dict[str, np.ndarray] = {}
    real_write = publish.write_artifact

    def capturing_write(models_dir: Path, version: str, arrays: dict, *rest: Any) -> Path:
        captured.update({name: np.array(value, copy=True) for name, value in arrays.items()})
        return real_write(models_dir, version, arrays, *rest)

    monkeypatch.setattr(publish, "write_artifact", capturing_write)
    models = tmp_path / "models"
    result = train(planted_csv, load_mapping("canonical"), models, small_training_config())

    model = load_serving_model(models)

    assert model.version == result.version
    expected = captured["user_factors"] @ captured["item_factors"].T
    loaded = np.asarray(model.als.user_factors) @ np.asarray(model.als.item_factors).T
    assert expected.shape == (60, 20)
    assert np.array_equal(loaded, expected)
    assert model.customers.ids.tolist() == captured["customer_ids"].tolist()
    assert model.items.ids.tolist() == captured["item_ids"].tolist()
    assert np.array_equal(model.indptr, captured["history_indptr"])
    assert np.array_equal(model.history_items, captured["history_indices"])
    assert np.array_equal(model.history_confidence, captured["history_confidence"])
    assert np.array_equal(model.history_last_purchase, captured["history_last_purchase"])
    assert np.array_equal(model.popularity, captured["popularity"])
    # The recency-weighted orders (per history entry and per customer), the fortnight's
    # buyers and the half-life the ranker's features are decayed by.
    assert model.history_recent is not None and model.customer_recent is not None
    assert np.array_equal(model.history_recent, captured["history_recent"])
    assert np.array_equal(model.customer_recent, captured["customer_recent_orders"])
    assert len(model.history_recent) == len(model.history_items)
    assert (model.history_recent > 0).all()
    assert model.item_side is not None
    recent_rank = model.item_side.item_features[:, ITEM_FEATURES.index("popularity_recent_rank")]
    assert np.array_equal(recent_rank, np.argsort(popular_order(captured["popularity_recent"])))
    assert model.item_side.half_life_days == result.manifest["ranker"]["half_life_days"] == 60.0
    # Hyperparameters come back from the manifest.
    assert model.als.factors == 8
    assert model.als.regularization == pytest.approx(0.1)


def test_serving_model_from_the_trained_fixture(trained: TrainResult, models_dir: Path) -> None:
    model = load_serving_model(models_dir)
    assert trained.path is not None

    assert model.version == trained.version
    assert len(model.customers) == 60
    assert len(model.items) == 20
    user = np.load(trained.path / "user_factors.npy")
    item = np.load(trained.path / "item_factors.npy")
    assert np.array_equal(
        np.asarray(model.als.user_factors) @ np.asarray(model.als.item_factors).T,
        user @ item.T,
    )
    # Popular order: most distinct buyers first, ties by item index.
    popularity = np.asarray(model.popularity)
    order = model.popular_order.tolist()
    assert sorted(order) == list(range(20))
    assert all((popularity[a], -a) >= (popularity[b], -b) for a, b in itertools.pairwise(order))


def test_serving_model_refuses_an_artifact_without_the_model_arrays(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_artifact(models, "v1", {"counts": np.array([1, 2, 3])}, {}, {"note": "x"})

    with pytest.raises(ArtifactError, match="model v1: missing arrays"):
        load_serving_model(models)


def test_serving_model_refuses_inconsistent_arrays(tmp_path: Path, trained: TrainResult) -> None:
    """A checksum-valid artifact whose customer ids do not match the factor rows."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    arrays = dict(source.arrays)
    arrays["customer_ids"] = arrays["customer_ids"][:-1]
    models = tmp_path / "models"
    manifest = {"config": source.manifest["config"]}
    write_artifact(models, "bad", arrays, {}, manifest)

    with pytest.raises(ArtifactError) as caught:
        load_serving_model(models)

    assert "inconsistent arrays" in str(caught.value)
    assert "user_factors rows = customers" in str(caught.value)
    assert "history rows = customers" in str(caught.value)


def test_serving_model_refuses_item_factors_that_are_not_finite(
    tmp_path: Path, trained: TrainResult
) -> None:
    """NaN item factors passed every check and served offers without collaborative
    filtering (the ranker reads NaN as missing) and no similar items, without an error."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    arrays = dict(source.arrays)
    arrays["item_factors"] = np.full_like(arrays["item_factors"], np.nan)
    arrays.pop("item_factors_column_major", None)
    models = tmp_path / "models"
    write_artifact(models, "nan", arrays, {}, {"config": source.manifest["config"]})

    with pytest.raises(ArtifactError, match=r"inconsistent arrays.*item factors finite"):
        load_serving_model(models)


def test_serving_model_refuses_recent_orders_that_do_not_fit(
    tmp_path: Path, trained: TrainResult
) -> None:
    """The recency-weighted orders come both or none, one per history entry and one per
    customer."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    for name, change in (
        ("history_recent", lambda a: a[:-1]),
        ("customer_recent_orders", lambda a: a[:-1]),
        ("customer_recent_orders", None),
    ):
        models = tmp_path / f"models-{name}-{change is None}"
        write_artifact(models, "bad", _changed(source, name, change), {}, source.manifest, {})

        with pytest.raises(ArtifactError, match=r"inconsistent arrays .*history_recent"):
            load_serving_model(models)


def test_forget_makes_a_customer_unknown_and_leaves_the_others(models_dir: Path) -> None:
    model = load_serving_model(models_dir)
    rows = len(model.customers)
    b00 = model.customers.get("b00")
    assert model.forget("a01") is True
    assert model.customers.get("a01") is None
    assert model.customers.to_index(["a01", "b00"]).tolist() == [-1, b00]
    assert model.forget("a01") is False and model.forget("nobody") is False
    assert len(model.customers) == rows  # rows stay in place (unreachable), nothing moves


def test_a_booster_of_other_features_is_refused_with_the_reason(
    tmp_path: Path, trained: TrainResult
) -> None:
    """An artifact whose booster reads the features of an older nbo (here: without the
    recency-weighted ones) and none of their arrays is refused by the feature names,
    with what to do, not served with features in the wrong columns."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    older = [name for name in FEATURES if "recent" not in name]
    rng = np.random.default_rng(0)
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 2},
        lgb.Dataset(
            rng.normal(size=(40, len(older))),
            label=rng.integers(0, 2, 40),
            group=[10] * 4,
            feature_name=older,
        ),
        num_boost_round=2,
    )
    arrays = {
        name: array
        for name, array in source.arrays.items()
        if name not in ("history_recent", "customer_recent_orders", "popularity_recent")
    }
    files = _side_files(source)
    files["ranker.txt"] = booster.model_to_string().encode("utf-8")
    models = tmp_path / "models"
    write_artifact(models, "older", arrays, source.documents, source.manifest, files)

    with pytest.raises(ArtifactError, match="retrain with this version of nbo") as caught:
        load_serving_model(models)

    assert "recent_orders" in str(caught.value) and "expects features" in str(caught.value)


def test_a_ranker_whose_trees_are_not_where_its_header_says_is_refused(
    tmp_path: Path, trained: TrainResult
) -> None:
    """One digit dropped from a tree (its checksum made after the edit): LightGBM, cutting
    the text by ``tree_sizes``, would parse it on its OpenMP threads and abort the
    process (``std::terminate``), not raise; nbo refuses it first."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    files = _side_files(source)
    text = (trained.path / "ranker.txt").read_text(encoding="utf-8")
    at = text.index("leaf_value=") + len("leaf_value=")
    files["ranker.txt"] = (text[:at] + text[at + 1 :]).encode("utf-8")
    models = tmp_path / "models"
    write_artifact(models, "edited", dict(source.arrays), source.documents, source.manifest, files)

    with pytest.raises(ArtifactError, match="tree 1 is not where tree_sizes puts it"):
        load_serving_model(models)


def _memory_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (shared by every process that
    maps it) rather than memory of this process's own."""
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap) or type(base).__name__ == "mmap":
            return True
        base = getattr(base, "base", None)
    return False


def test_the_similarity_views_are_mapped_from_the_artifact_as_built(
    tmp_path: Path, trained: TrainResult, models_dir: Path
) -> None:
    """The similarity by column and its padded rows come from the artifact's files
    (memory maps every worker shares, not a copy each builds at load), hold what
    building them from the similarity gives, and an artifact from before them still
    loads, building the same."""
    served = load_serving_model(models_dir)
    side = served.item_side
    assert side is not None
    for array in (side.similar_to.data, side.similar_to.indices):
        assert _memory_mapped(array)
    for array in (side.neighbour_ids, side.neighbour_weights):
        assert _memory_mapped(array)
    # The item factors too, writable for implicit's refolds (copy-on-write), and the
    # explanations read them, not a float64 copy.
    factors = served.als.item_factors
    assert _memory_mapped(factors) and factors.flags.writeable
    assert np.shares_memory(served.explainer._factors, factors)
    # And their column-major layout, for ALS's top-k: the same numbers.
    column_major = side.item_factors_column_major
    assert _memory_mapped(column_major) and column_major.flags.f_contiguous
    np.testing.assert_array_equal(column_major, factors)

    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    derived = [
        name
        for name in source.arrays
        if name.startswith(("knn_by_", "knn_padded", "item_factors_column"))
    ]
    assert len(derived) == 6
    arrays = {name: a for name, a in source.arrays.items() if name not in derived}
    files = _side_files(source)
    models = tmp_path / "models"
    write_artifact(models, "older", arrays, source.documents, source.manifest, files)
    built = load_serving_model(models).item_side
    assert built is not None
    assert not _memory_mapped(built.similar_to.data)
    assert (built.similar_to != side.similar_to).nnz == 0
    assert built.similar_to.dtype == side.similar_to.dtype
    np.testing.assert_array_equal(built.similar_to.indptr, side.similar_to.indptr)
    np.testing.assert_array_equal(built.similar_to.indices, side.similar_to.indices)
    assert built.item_factors_column_major.flags.f_contiguous
    for name in ("neighbour_ids", "neighbour_weights", "item_factors_column_major"):
        ours, theirs = getattr(side, name), getattr(built, name)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


def test_similarity_views_and_factors_that_do_not_fit_are_refused(
    tmp_path: Path, trained: TrainResult
) -> None:
    """A view of the similarity that does not fit it, or one of them missing,
    column-major item factors of another shape or layout, and ALS shortlists not one
    per customer, narrower than a source proposes or not item ids, refuse the artifact
    rather than serving explanations, neighbours, scores or candidates of other items."""
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    files = _side_files(source)
    for n, (name, change, reason) in enumerate(
        (
            ("knn_padded_ids", lambda a: a[:-1], "do not fit"),
            ("knn_by_column_data", lambda a: a[:-1], "do not fit"),
            ("knn_by_column_indptr", None, "missing"),
            ("item_factors_column_major", lambda a: a[:-1], "the item factors, column-major"),
            ("item_factors_column_major", np.ascontiguousarray, "the item factors, column-major"),
            ("als_shortlist", lambda a: a[:-1], "als_shortlist per customer"),
            ("als_shortlist", lambda a: a[:, :3], "als_shortlist per customer"),
            ("als_shortlist", lambda a: a.astype(np.float32), "als_shortlist per customer"),
        )
    ):
        models = tmp_path / f"models-{n}"
        arrays = _changed(source, name, change)
        write_artifact(models, "bad", arrays, source.documents, source.manifest, files)

        with pytest.raises(ArtifactError, match=reason):
            load_serving_model(models)


def test_the_als_shortlists_serve_what_als_top_k_gives(
    tmp_path: Path, trained: TrainResult, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact's ALS shortlists (memory maps, one row per customer) give every
    customer the offers implicit's top-k over the whole catalogue gives. Trained
    customers read theirs; implicit scores only the customer with a purchase posted
    since training, and, where a shortlist is narrower than the catalogue, the one tired
    of so many of their best items that it runs short. An artifact from before the
    shortlists serves the same."""
    model = load_serving_model(models_dir)
    shortlist = model.als_shortlist
    assert shortlist is not None and _memory_mapped(shortlist)
    n_items = len(model.items)
    assert shortlist.shape == (len(model.customers), shortlist_width(model.ranker_per_source))
    assert (shortlist[:, :n_items] >= 0).all() and (shortlist[:, n_items:] == -1).all()
    assert trained.path is not None
    source = load_artifact(trained.path.parent, trained.version, mmap=False)
    files = _side_files(source)
    # Five per source, from shortlists seven wide.
    narrow = tmp_path / "narrow"
    arrays = {**source.arrays, "als_shortlist": source.arrays["als_shortlist"][:, :7]}
    manifest = {**source.manifest, "ranker": {**source.manifest["ranker"], "per_source": 5}}
    write_artifact(narrow, "narrow", arrays, source.documents, manifest, files)
    older = tmp_path / "older"
    arrays = {name: a for name, a in source.arrays.items() if name != "als_shortlist"}
    write_artifact(older, "older", arrays, source.documents, source.manifest, files)

    ids = [str(i) for i in model.customers.ids][::-1]
    now = model.trained_until_s + DAY
    tired = [model.item_ids[int(i)] for i in shortlist[1, :3]]
    posted = PostedPurchase(model.item_ids[int(shortlist[2, 0])], 1.0, now - 60, None, "e1")
    requests = [OfferRequest(i, 50) for i in ids] + [
        OfferRequest(str(model.customers.ids[1]), 50, fatigued=tired),
        OfferRequest(str(model.customers.ids[2]), 50, recent=(posted,)),
    ]
    scored: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        scored.append(len(args[1]))
        return topk(*args, **kwargs)

    monkeypatch.setattr(candidates_module, "topk", counted)

    def offers(served: ServingModel) -> list[list[tuple[str, float]]]:
        scored.clear()
        rankings = rank_offers(served, requests, now, SuppressionWindow(30))
        return [[(o.item_id, o.score) for o in r.offers] for r in rankings]

    for served, live in (
        (model, [1]),
        (load_serving_model(narrow), [2]),
        (load_serving_model(older), [len(requests)]),
    ):
        got = offers(served)
        assert scored == live
        assert got == offers(dataclasses.replace(served, als_shortlist=None))
        assert scored == [len(requests)]
        assert got[-2] != got[1] and got[-1] != got[2]
    assert load_serving_model(older).als_shortlist is None


def _side_files(source: Artifact) -> dict[str, bytes]:
    """The artifact's files other than its arrays and JSON documents (the ranker, the
    churn model, the plots), to write into a changed copy."""
    return {
        path.name: path.read_bytes()
        for path in source.files.values()
        if path.suffix not in (".npy", ".json")
    }


def _changed(
    source: Artifact, name: str, change: Callable[[np.ndarray], np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The artifact's arrays with ``name`` changed by ``change``, or left out (None)."""
    arrays = dict(source.arrays)
    if change is None:
        del arrays[name]
    else:
        arrays[name] = change(np.asarray(arrays[name]))
    return arrays
