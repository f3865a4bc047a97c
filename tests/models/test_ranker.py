"""The ranker's scorer: the service's C-API scores and the compiled trees' are LightGBM's own."""

from __future__ import annotations

import gc
import threading
import weakref
from types import SimpleNamespace

import lightgbm as lgb
import lleaves
import numpy as np
import pytest

from nbo.core.vocabulary import STAGES
from nbo.models import compiled
from nbo.models.candidates import FEATURES
from nbo.models.compiled import compile_trees, probe_rows
from nbo.models.ranker import RankerScorer


def _booster_and_features() -> tuple[lgb.Booster, np.ndarray]:
    """A small lambdarank booster on random features with missing values and the
    categorical stage, and those features."""
    rng = np.random.default_rng(0)
    n_rows, width = 600, len(FEATURES)
    features = rng.normal(size=(n_rows, width)).astype(np.float32)
    stage = FEATURES.index("customer_stage")
    features[:, stage] = rng.integers(0, len(STAGES), n_rows)
    features[rng.random((n_rows, width)) < 0.1] = np.nan
    labels = (np.nan_to_num(features[:, 0]) + rng.normal(size=n_rows) > 0.5).astype(int)
    booster = lgb.train(
        {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(
            features,
            label=labels,
            group=[20] * (n_rows // 20),
            feature_name=list(FEATURES),
            categorical_feature=["customer_stage"],
        ),
        num_boost_round=20,
    )
    return booster, features


def test_the_scorer_gives_the_boosters_own_scores() -> None:
    """The service's C-API scorer and LightGBM's Booster.predict agree on features in
    either memory layout, with missing values and the categorical stage."""
    booster, features = _booster_and_features()
    scorer = RankerScorer(booster, compiled=False)
    assert not scorer.compiled
    expected = booster.predict(features)
    np.testing.assert_allclose(scorer.predict(features), expected, rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(np.asfortranarray(features)), expected, rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(features[::2]), expected[::2], rtol=1e-6)
    assert scorer.predict(features[:0]).shape == (0,)
    with pytest.raises(ValueError, match=f"expected {len(FEATURES)} features"):
        scorer.predict(features[:, :-1])


def test_the_compiled_trees_give_the_boosters_own_scores() -> None:
    """By default the trees are compiled (lleaves), and score every call within float
    rounding of LightGBM: missing values and the categorical stage included, in either
    memory layout."""
    booster, features = _booster_and_features()
    scorer = RankerScorer(booster)
    assert scorer.compiled
    expected = booster.predict(features)
    for layout in (features, np.asfortranarray(features), features[::2]):
        got = scorer.predict(layout)
        np.testing.assert_allclose(got, scorer.predict_lightgbm(layout), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scorer.predict(features), expected, rtol=1e-6)
    assert scorer.predict(features[:0]).shape == (0,)
    # The probe rows (thresholds and their neighbours, NaN) within rounding too: this
    # booster's rows with a value within 1e-35 of zero, which LightGBM takes for zero and
    # lleaves alone does not, scored 0.41 apart before the scorer flushed them to zero.
    rows = probe_rows(booster.model_to_string(), booster.num_feature())
    np.testing.assert_allclose(
        scorer.predict(rows), scorer.predict_lightgbm(rows), rtol=1e-12, atol=1e-12
    )


def test_compiled_trees_that_disagree_with_lightgbm_are_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Trees compiled from a model one leaf away from the booster are caught by the
    probe rows at load and refused, with a warning: the scorer stays on LightGBM."""
    booster, _ = _booster_and_features()
    reference = RankerScorer(booster, compiled=False)
    text = booster.model_to_string()
    lines = text.splitlines()
    # One leaf of the middle tree, changed by far more than rounding.
    tree = [n for n, line in enumerate(lines) if line.startswith("Tree=")][10]
    at = next(n for n in range(tree, len(lines)) if lines[n].startswith("leaf_value="))
    values = lines[at].split("=", 1)[1].split()
    values[1] = repr(float(values[1]) + 0.25)
    lines[at] = "leaf_value=" + " ".join(values)
    changed = "\n".join(lines) + "\n"
    n = booster.num_feature()
    assert compile_trees(text, reference.predict_lightgbm, n) is not None
    with caplog.at_level("WARNING", logger="nbo.models.compiled"):
        assert compile_trees(changed, reference.predict_lightgbm, n) is None
    assert "disagree with LightGBM" in caplog.text


def test_without_lleaves_the_scorer_uses_lightgbm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where lleaves cannot be imported (Python 3.14: no llvmlite it can use), the
    scorer says so and scores through LightGBM's C API."""
    monkeypatch.setattr(compiled, "lleaves", None)
    booster, features = _booster_and_features()
    with caplog.at_level("WARNING", logger="nbo.models.compiled"):
        scorer = RankerScorer(booster)
    assert not scorer.compiled
    assert "not compiled" in caplog.text
    np.testing.assert_allclose(scorer.predict(features), booster.predict(features), rtol=1e-6)


def test_the_probe_rows_reach_almost_every_leaf() -> None:
    """The rows the compiled trees are checked on take both sides of the splits: they
    reach at least 95% of the booster's leaves (LightGBM's own leaf indices), every
    category of the stage, and missing values in every feature."""
    booster, _ = _booster_and_features()
    rows = probe_rows(booster.model_to_string(), booster.num_feature())
    leaves = booster.predict(rows, pred_leaf=True)
    trees = booster.dump_model()["tree_info"]
    reached = sum(len(set(leaves[:, t])) for t in range(len(trees)))
    assert reached >= 0.95 * sum(tree["num_leaves"] for tree in trees)
    stage = FEATURES.index("customer_stage")
    assert set(range(len(STAGES))) <= set(rows[:, stage].tolist())
    assert np.isnan(rows).any(axis=0).all()


def test_a_model_compiled_before_in_this_process_is_not_compiled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload back to a version served before (a rollback) takes its compiled trees
    from the process's last few, by the model text's digest; another model compiles."""
    booster, features = _booster_and_features()
    first = RankerScorer(booster)
    calls = []
    real = compiled._compile
    monkeypatch.setattr(compiled, "_compile", lambda *a: calls.append(1) or real(*a))
    again = RankerScorer(booster)
    assert again.compiled and calls == []
    np.testing.assert_array_equal(again.predict(features), first.predict(features))
    other = lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1},
        lgb.Dataset(features, label=np.arange(len(features)) % 3, feature_name=list(FEATURES)),
        num_boost_round=3,
    )
    assert RankerScorer(other).compiled and calls == [1]


def _distinct_boosters(n: int) -> list[lgb.Booster]:
    """``n`` small boosters whose trees differ (each fitted on other labels)."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, len(FEATURES))).astype(np.float32)
    return [
        lgb.train(
            {"objective": "regression", "verbose": -1, "num_threads": 1, "seed": seed},
            lgb.Dataset(features, label=rng.normal(size=200), feature_name=list(FEATURES)),
            num_boost_round=3,
        )
        for seed in range(n)
    ]


def _record_compiles(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], weakref.WeakSet]:
    """Count compilations, and the lleaves models made from here on that are alive."""
    calls: list[int] = []
    real = compiled._compile
    monkeypatch.setattr(compiled, "_compile", lambda *a: calls.append(1) or real(*a))
    made: weakref.WeakSet = weakref.WeakSet()

    class Recorded(lleaves.Model):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.add(self)

    monkeypatch.setattr(compiled, "lleaves", SimpleNamespace(Model=Recorded))
    return calls, made


def test_compiled_trees_no_model_holds_any_more_are_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reloads to eight new rankers, each dropping the one before (as the service drops
    the model it replaced): the process keeps the one served and the last one retired
    (a rollback to it compiles nothing), not the last four compiled, which grew a
    service's memory by 4-20 MB a version until it held four."""
    calls, made = _record_compiles(monkeypatch)
    boosters = _distinct_boosters(8)
    scorer = None
    for booster in boosters:
        scorer = RankerScorer(booster)
        assert scorer.compiled
    gc.collect()
    assert len(calls) == 8
    assert len(made) == 1 + compiled.KEEP_RETIRED == 2
    rollback = RankerScorer(boosters[-2])
    assert rollback.compiled and len(calls) == 8
    del scorer, rollback
    gc.collect()
    assert len(made) <= 2


def test_compiled_trees_in_use_are_never_compiled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service serving six rankers (a current model and five experiment arms) loads
    them all again on each reload while the old ones serve: every one is found among
    those in use and shared, however many there are (the last four compiled were kept,
    and with five or more in use each reload compiled every one again)."""
    calls, made = _record_compiles(monkeypatch)
    boosters = _distinct_boosters(6)
    serving = [RankerScorer(booster) for booster in boosters]
    assert len(calls) == 6
    features = np.random.default_rng(2).normal(size=(5, len(FEATURES))).astype(np.float32)
    for _ in range(3):  # three reloads, each swapping in the new scorers
        reloaded = [RankerScorer(booster) for booster in boosters]
        assert all(s.compiled for s in reloaded) and len(calls) == 6
        for old, new in zip(serving, reloaded, strict=True):
            np.testing.assert_array_equal(new.predict(features), old.predict(features))
        serving = reloaded
    gc.collect()
    assert len(made) == 6


def test_each_compiled_model_has_an_llvm_context_of_its_own_freed_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LLVM keeps a module's constants (every leaf value and threshold) in its context
    until the context goes: parsed into the process's global one, as lleaves does, each
    new ranker grew the process for good (0.16 MB at 30 trees). Each compiled model's
    module is in a context of its own, disposed of once the model is freed."""
    _, made = _record_compiles(monkeypatch)
    contexts: list = []
    real = compiled.llvm.create_context
    monkeypatch.setattr(
        compiled.llvm, "create_context", lambda: contexts.append(real()) or contexts[-1]
    )
    scorer = None
    for booster in _distinct_boosters(4):
        scorer = RankerScorer(booster)
        assert scorer.compiled
    gc.collect()
    assert len(contexts) == 4 and None not in contexts
    # The first two freed (neither served nor the last retired), with their contexts.
    assert [context.closed for context in contexts] == [True, True, False, False]
    served = list(made)
    assert len(served) == 2
    for model in served:
        (module,) = model._execution_engine._modules
        assert module._context in contexts[2:]
    del scorer


def test_compilations_take_turns_each_in_its_own_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While one ranker compiles, lleaves' compiler parses into that ranker's context:
    a second compilation started meanwhile waits for its turn, or it would parse into the
    first one's context and be freed with the first one's model."""
    steps: list[str] = []
    first_compiling, go_on = threading.Event(), threading.Event()
    real_compile = lleaves.Model.compile

    def compile_slowly(self: lleaves.Model, *args: object, **kwargs: object) -> object:
        steps.append("compile")
        if not first_compiling.is_set():
            first_compiling.set()
            go_on.wait(30)
        return real_compile(self, *args, **kwargs)

    real_context = compiled.llvm.create_context
    monkeypatch.setattr(lleaves.Model, "compile", compile_slowly)
    monkeypatch.setattr(
        compiled.llvm, "create_context", lambda: steps.append("context") or real_context()
    )
    scorers: list[RankerScorer] = []
    first, second = (
        threading.Thread(target=lambda b=booster: scorers.append(RankerScorer(b)))
        for booster in _distinct_boosters(2)
    )
    first.start()
    assert first_compiling.wait(30)
    second.start()
    second.join(0.5)  # it must still be waiting for its turn
    assert steps == ["context", "compile"]
    go_on.set()
    first.join(30)
    second.join(30)
    assert steps == ["context", "compile", "context", "compile"]
    assert len(scorers) == 2 and all(scorer.compiled for scorer in scorers)
