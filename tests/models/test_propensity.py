"""Propensity curves: scores become probabilities of purchase; malformed curves and
artifacts without them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nbo.core.checksums import sha256_file
from nbo.core.errors import ArtifactError
from nbo.models.artifacts import MANIFEST
from nbo.models.propensity import Curve, Propensity
from nbo.models.served import load_serving_model
from training.pipeline import TrainResult


def test_a_curve_interpolates_between_breakpoints_and_clips_outside() -> None:
    curve = Curve(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.2, 0.6]))
    assert curve(np.array([-5.0, 0.5, 1.5, 9.0])).tolist() == pytest.approx([0, 0.1, 0.4, 0.6])


@pytest.mark.parametrize(
    "document",
    [
        {"horizon_days": 30, "cf": {"x": [0, 1], "y": [0, 0.5]}},  # no popular curve
        {"horizon_days": 30, "cf": {"x": [1, 0], "y": [0, 0.5]}, "popular": {"x": [1], "y": [0.1]}},
        {"horizon_days": 30, "cf": {"x": [0, 1], "y": [0, 1.5]}, "popular": {"x": [1], "y": [0.1]}},
        {"horizon_days": 30, "cf": {"x": [], "y": []}, "popular": {"x": [1], "y": [0.1]}},
    ],
)
def test_a_malformed_document_is_refused(document: dict) -> None:
    with pytest.raises(ArtifactError, match="propensity"):
        Propensity.from_document(document)


def test_an_artifact_without_curves_serves_uncalibrated(
    trained: TrainResult, tmp_path: Path
) -> None:
    """Older artifacts (before calibration) still load, marked uncalibrated."""
    assert trained.path is not None and trained.version is not None
    copy = tmp_path / trained.version
    shutil.copytree(trained.path, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["files"]["propensity.json"]
    (copy / "propensity.json").unlink()
    manifest["ranker"] = {"enabled": False}  # older artifacts had no ranker either
    del manifest["policy"]  # nor a declared policy
    (copy / MANIFEST).write_text(json.dumps(manifest))
    model = load_serving_model(tmp_path, trained.version)
    assert not model.propensity.calibrated
    assert 0 <= float(model.propensity.of_scores(np.array([0.7]))[0]) <= 1


def test_a_broken_curve_refuses_the_model(trained: TrainResult, tmp_path: Path) -> None:
    assert trained.path is not None and trained.version is not None
    copy = tmp_path / trained.version
    shutil.copytree(trained.path, copy)
    (copy / "propensity.json").write_text(json.dumps({"horizon_days": 30}))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["propensity.json"] = sha256_file(copy / "propensity.json")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="propensity"):
        load_serving_model(tmp_path, trained.version)


def test_the_buying_curve_round_trips_and_older_documents_load_without_it() -> None:
    """propensity.json's ``buying`` curve (churn risk -> bought anything) is saved and
    read back; a document from before it loads as before, every factor 1; a malformed
    one refuses the model, naming the curve."""
    older = {
        "horizon_days": 30,
        "cf": {"x": [0, 1], "y": [0, 0.5]},
        "popular": {"x": [1], "y": [0.1]},
    }
    loaded = Propensity.from_document(older)
    assert loaded.buying is None
    assert loaded.of_buying(np.array([0.1, 0.99, np.nan])).tolist() == [1.0, 1.0, 1.0]

    buying = Curve(np.array([0.0, 0.5, 1.0]), np.array([0.9, 0.3, 0.02]))
    document = {**older, "buying": buying.to_dict()}
    again = Propensity.from_document(document)
    assert again.to_document() == document
    assert again.of_buying(np.array([0.25, 1.0, np.nan])).tolist() == pytest.approx(
        [0.6, 0.02, 1.0]
    )
    with pytest.raises(ArtifactError, match="'buying'"):
        Propensity.from_document({**older, "buying": {"x": [0, 1], "y": [0.5, 2.0]}})


# --- a simple rule's lists (buy_again, itemknn) ---------------------------------------

_CURVES = {
    "horizon_days": 30,
    "cf": {"x": [0, 1], "y": [0, 0.5]},
    "popular": {"x": [1], "y": [0.1]},
}
# Order count -> probability (own items); place in the list -> probability (the fill).
_BY_SCORE = {
    "rule_score": {"x": [1.0, 2.0, 10.0], "y": [0.07, 0.2, 0.96]},
    "rule_fill": {"x": [1.0, 50.0], "y": [0.1, 0.01]},
}


def test_a_rule_reads_its_items_by_their_score_and_the_fill_by_its_place() -> None:
    """The box (ordered 10 times) gets 0.96; with the box suppressed, the mug (once)
    moves up to the first place and keeps the mug's 0.07, not the first place's."""
    propensity = Propensity.from_document({**_CURVES, **_BY_SCORE})
    assert propensity.rule_basis == "score"
    with_box = propensity.of_rule_lists(
        np.array([[10.0, 1.0, 500.0]]), np.array([[False, False, True]])
    )
    box_suppressed = propensity.of_rule_lists(
        np.array([[1.0, 500.0, 400.0]]), np.array([[False, True, True]])
    )
    assert with_box[0].tolist() == pytest.approx([0.96, 0.07, 0.07])
    assert box_suppressed[0, 0] == pytest.approx(0.07)  # the mug's own, not the box's
    # The fill by its place: 0.1 at the second place, clipped to the mug's 0.07 above.
    assert box_suppressed[0].tolist() == pytest.approx([0.07, 0.07, 0.07])


def test_a_rules_propensities_never_rise_down_its_list() -> None:
    """The running minimum: the fill after a customer's rarely ordered items, and an own
    item whose curve would say more than the one above it, get the least above them;
    lists that already fall are unchanged."""
    propensity = Propensity.from_document({**_CURVES, **_BY_SCORE})
    scores = np.array([[2.0, 1.0, 7.0, 5.0], [10.0, 2.0, 1.0, 3.0]])
    filled = np.array([[False, False, True, True], [False, False, False, True]])
    chances = propensity.of_rule_lists(scores, filled)
    own_first = propensity.of_rule_lists(scores[:, :1], filled[:, :1])
    assert np.all(np.diff(chances, axis=1) <= 0)
    assert chances[:, 0].tolist() == own_first[:, 0].tolist()  # the first is its own
    assert chances[0].tolist() == pytest.approx([0.2, 0.07, 0.07, 0.07])
    assert chances[1].tolist() == pytest.approx([0.96, 0.2, 0.07, 0.07])


def test_an_older_position_curve_loads_and_serves_as_before() -> None:
    """A propensity.json from before the score curves (``rule``: the place in the list
    alone) loads and gives each place the curve's value, whatever the item; the new
    curves round-trip; one without the other is refused."""
    older = {**_CURVES, "rule": {"x": [1.0, 50.0], "y": [0.5, 0.01]}}
    loaded = Propensity.from_document(older)
    assert loaded.rule_basis == "position" and loaded.serves_rules
    chances = loaded.of_rule_lists(np.array([[1.0, 9.0, 3.0]]), np.array([[False, False, True]]))
    assert chances[0].tolist() == pytest.approx([0.5, 0.49, 0.48])
    assert loaded.to_document() == older

    document = {**_CURVES, **_BY_SCORE}
    assert Propensity.from_document(document).to_document() == document
    assert Propensity.from_document(_CURVES).rule_basis is None
    with pytest.raises(ArtifactError, match="rule_fill goes with rule_score or rule_place"):
        Propensity.from_document({**_CURVES, "rule_score": _BY_SCORE["rule_score"]})


# The place before suppression -> probability (own items); the fill as above.
_BY_PLACE = {
    "rule_place": {"x": [1.0, 2.0, 10.0], "y": [0.8, 0.3, 0.05]},
    "rule_fill": {"x": [1.0, 50.0], "y": [0.1, 0.01]},
}


def test_a_rule_read_by_the_place_before_suppression_keeps_the_mugs_place() -> None:
    """With the box (first) suppressed, the mug served first is read at its place
    before suppression, the second's 0.3, not the first's 0.8; without ``places`` (as
    when nothing was suppressed) the list's own places. The fill by its served place."""
    propensity = Propensity.from_document({**_CURVES, **_BY_PLACE})
    assert propensity.rule_basis == "place" and propensity.serves_rules
    scores, filled = np.array([[1.0, 500.0]]), np.array([[False, True]])

    box_suppressed = propensity.of_rule_lists(scores, filled, np.array([[2.0, 2.0]]))
    nothing_suppressed = propensity.of_rule_lists(scores, filled)

    assert box_suppressed[0, 0] == pytest.approx(0.3)
    assert nothing_suppressed[0, 0] == pytest.approx(0.8)
    assert box_suppressed[0, 1] == nothing_suppressed[0, 1] == pytest.approx(0.098, abs=0.001)


def test_the_place_basis_round_trips_and_one_basis_is_served() -> None:
    """An artifact with ``rule_place`` loads and writes back the same; one with both own
    curves, or the place curve without the fill's, is refused."""
    document = {**_CURVES, **_BY_PLACE}
    assert Propensity.from_document(document).to_document() == document
    with pytest.raises(ArtifactError, match="rule_score or rule_place, not both"):
        Propensity.from_document({**document, "rule_score": _BY_SCORE["rule_score"]})
    with pytest.raises(ArtifactError, match="rule_fill goes with"):
        Propensity.from_document({**_CURVES, "rule_place": _BY_PLACE["rule_place"]})
