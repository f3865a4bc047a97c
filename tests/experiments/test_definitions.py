"""Experiment files: loading YAML and JSON, deterministic assignment, and refusing bad
files with one line naming the file, experiment, variant and field."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from support import ROOT

from nbo.core.errors import MAX_LISTED_PROBLEMS, NboError
from nbo.experiments.definitions import (
    NO_EXPERIMENTS,
    Experiment,
    ExperimentError,
    Experiments,
    Variant,
    _point_of,
    assignment_point,
    load_experiments,
)

IDS = [f"c{i}" for i in range(100_000)]

VALID = """\
version: 1
experiments:
  - name: ranker-vs-als
    salt: "2026-12-campaign"
    start: 2026-12-01T00:00:00Z
    end: 2027-01-01T00:00:00Z
    variants:
      - name: control
        control: true
        weight: 10
      - name: production
        model: production
        weight: 45
      - name: candidate
        model: candidate
        weight: 45
  - name: half_half
    salt: halves
    start: 2027-01-15T08:30:00
    variants:
      - name: a
        model: 20261201T000000Z-abcdef12
        weight: 1
      - name: b
        model: production
        weight: 1
"""


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str = VALID, name: str = "experiments.yaml") -> Experiments:
    return load_experiments(write(tmp_path / name, text))


def refusal(path: Path) -> str:
    with pytest.raises(ExperimentError) as caught:
        load_experiments(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    return message


def split(experiment: Experiment, ids: list[str] = IDS) -> dict[str, float]:
    counts = Counter(experiment.assign(customer).name for customer in ids)
    return {name: count / len(ids) for name, count in counts.items()}


# --- loading ------------------------------------------------------------------------


def test_a_valid_file_loads_with_normalised_weights_and_utc_times(tmp_path: Path) -> None:
    loaded = load(tmp_path)

    assert loaded.source == str(tmp_path / "experiments.yaml")
    assert [e.name for e in loaded.experiments] == ["ranker-vs-als", "half_half"]
    ranker = loaded.get("ranker-vs-als")
    assert ranker is not None
    assert ranker.salt == "2026-12-campaign"
    assert ranker.start_s == at("2026-12-01T00:00:00") == 1_796_083_200
    assert ranker.end_s == at("2027-01-01T00:00:00")
    assert [(v.name, v.model, v.control) for v in ranker.variants] == [
        ("control", None, True),
        ("production", "production", False),
        ("candidate", "candidate", False),
    ]
    assert [v.weight for v in ranker.variants] == pytest.approx([0.10, 0.45, 0.45])
    assert sum(v.weight for v in ranker.variants) == pytest.approx(1.0)
    assert ranker.control == ranker.variants[0]

    halves = loaded.get("half_half")
    assert halves is not None
    # No zone is UTC; no end is open-ended.
    assert halves.start_s == at("2027-01-15T08:30:00")
    assert halves.end_s is None
    assert [v.weight for v in halves.variants] == [0.5, 0.5]
    assert halves.control is None

    assert loaded.get("nope") is None
    assert loaded.models() == {"production", "candidate", "20261201T000000Z-abcdef12"}


@pytest.mark.parametrize(
    ("weights", "warned"),
    [
        ((20, 40, 30), "served as control 22.2%, production 44.4%, candidate 33.3%"),
        ((10, 45, 45), None),
        ((0.2, 0.4, 0.4), None),
        ((1, 1, 1), "sum to 3, not 100 (or 1)"),
    ],
)
def test_weights_not_summing_to_100_or_1_are_served_as_shares_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    weights: tuple[float, float, float],
    warned: str | None,
) -> None:
    """Weights are relative: 20/40/30 serve 22.2/44.4/33.3, which may not be what an
    operator who meant percentages wanted; loading said nothing."""
    text = VALID.split("  - name: half_half")[0]
    for old, new in zip(("10", "45", "45"), weights, strict=True):
        text = text.replace(f"weight: {old}\n", f"weight: {new}\n!", 1)
    loaded = load(tmp_path, text.replace("!", ""))
    ranker = loaded.experiments[0]
    total = sum(weights)
    assert [v.weight for v in ranker.variants] == pytest.approx([w / total for w in weights])
    if warned is None:
        assert loaded.warnings == () and caplog.records == []
        return
    (warning,) = loaded.warnings
    assert warning.startswith(f"{tmp_path / 'experiments.yaml'}: experiment 'ranker-vs-als': ")
    assert warned in warning and "if the weights were meant as percentages" in warning
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]


def test_the_same_file_as_json_loads_to_equal_experiments(tmp_path: Path) -> None:
    from_yaml = load(tmp_path)
    document = yaml.safe_load(VALID)
    for experiment in document["experiments"]:
        for key in ("start", "end"):
            if key in experiment:
                # JSON has no time type: write it the way a person would, in ISO 8601.
                experiment[key] = experiment[key].isoformat().replace("+00:00", "Z")
    assert document["experiments"][1]["start"] == "2027-01-15T08:30:00"  # still no zone
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    from_json = load_experiments(path)

    assert from_json.experiments == from_yaml.experiments
    assert from_json.source == str(path)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-12-01T00:00:00Z", "2026-12-01T00:00:00"),
        ("2026-12-01T02:00:00+02:00", "2026-12-01T00:00:00"),
        ("2026-12-01T00:00:00", "2026-12-01T00:00:00"),
        ("2026-12-01 06:15:00", "2026-12-01T06:15:00"),
        ("2026-12-01", "2026-12-01T00:00:00"),
        ('"2026-11-30T19:00:00-05:00"', "2026-12-01T00:00:00"),
    ],
)
def test_start_times_with_and_without_a_zone(tmp_path: Path, written: str, expected: str) -> None:
    text = VALID.replace("start: 2026-12-01T00:00:00Z", f"start: {written}")
    ranker = load(tmp_path, text).experiments[0]
    assert ranker.start_s == at(expected)


def test_active_at_the_boundaries(tmp_path: Path) -> None:
    loaded = load(tmp_path)
    ranker, halves = loaded.experiments
    start, end = at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00")

    assert not ranker.active(start - 1)
    assert ranker.active(start)
    assert ranker.active(end - 1)
    assert not ranker.active(end)

    assert not halves.active(halves.start_s - 1)
    assert halves.active(halves.start_s)
    assert halves.active(at("2100-01-01T00:00:00"))  # open-ended

    assert loaded.active(start - 1) == []
    assert loaded.active(start) == [ranker]
    assert loaded.active(end - 1) == [ranker]
    assert loaded.active(halves.start_s) == [halves]


OVERLAPPING = """\
version: 1
experiments:
  - name: e1
    salt: s1
    start: 2011-12-01T00:00:00Z
    {end}
    variants: [{{name: a, model: m, weight: 1}}, {{name: b, control: true, weight: 1}}]
  - name: e2
    salt: s2
    start: 2011-12-05T00:00:00Z
    {end2}
    variants: [{{name: a, model: m, weight: 1}}, {{name: b, control: true, weight: 1}}]
"""


SHARED = "(from 2011-12-05T00:00:00+00:00 {})"


@pytest.mark.parametrize(
    ("end", "end2", "shared"),
    [
        ("", "", SHARED.format("with no end")),
        ("", "end: 2011-12-20T00:00:00Z", SHARED.format("to 2011-12-20T00:00:00+00:00")),
        ("end: 2011-12-06T00:00:00Z", "", SHARED.format("to 2011-12-06T00:00:00+00:00")),
    ],
)
def test_experiments_running_at_the_same_time_are_refused_naming_both(
    tmp_path: Path, end: str, end2: str, shared: str
) -> None:
    """A customer is in one experiment at a time (the first running in the file): a
    second one running beside the first got nobody, silently, while listed as active."""
    text = OVERLAPPING.format(end=end, end2=end2)
    message = refusal(write(tmp_path / "experiments.yaml", text))
    assert "experiment 'e2': start: runs at the same time as experiment 'e1' " + shared in message


def test_experiments_one_after_the_other_load(tmp_path: Path) -> None:
    loaded = load(tmp_path, OVERLAPPING.format(end="end: 2011-12-05T00:00:00Z", end2=""))
    e1, e2 = loaded.experiments
    assert loaded.active(e2.start_s - 1) == [e1] and loaded.active(e2.start_s) == [e2]


def test_no_experiments_is_empty() -> None:
    assert NO_EXPERIMENTS.experiments == ()
    assert NO_EXPERIMENTS.source is None
    assert NO_EXPERIMENTS.active(0) == []
    assert NO_EXPERIMENTS.models() == set()
    assert NO_EXPERIMENTS.get("ranker-vs-als") is None


def test_an_empty_list_of_experiments_is_allowed(tmp_path: Path) -> None:
    loaded = load(tmp_path, "version: 1\nexperiments: []\n")
    assert loaded.experiments == ()


# --- assignment ---------------------------------------------------------------------


def test_assignment_point_is_the_first_8_bytes_of_sha256() -> None:
    digest = hashlib.sha256(b"2026-12-campaign:c1").digest()
    expected = int.from_bytes(digest[:8], byteorder="big", signed=False) / 2**64

    assert assignment_point("2026-12-campaign", "c1") == expected
    # Pinned as a number too, so a change to the recipe (separator, encoding, byte
    # order, bytes taken) shows here even if this test's own recipe changed with it.
    assert assignment_point("2026-12-campaign", "c1") == pytest.approx(0.5653645687606647)
    assert assignment_point("2026-12-campaign", "c2") != expected
    assert assignment_point("2026-12-campaign-2", "c1") != expected


def test_assignment_point_stays_below_one() -> None:
    assert _point_of(b"\x00" * 8) == 0.0
    assert _point_of(b"\x80" + b"\x00" * 7) == 0.5
    # (2**64 - 1) / 2**64 rounds to 1.0 in floats: it is kept just below.
    assert _point_of(b"\xff" * 8) < 1.0
    assert _point_of(b"\xff" * 8) == math.nextafter(1.0, 0.0)
    points = [assignment_point("s", customer) for customer in IDS[:10_000]]
    assert all(0.0 <= point < 1.0 for point in points)


def test_assignment_is_stable_across_calls(tmp_path: Path) -> None:
    ranker = load(tmp_path).experiments[0]
    first = [ranker.assign(customer).name for customer in IDS[:1000]]
    again = [ranker.assign(customer).name for customer in IDS[:1000]]
    assert first == again
    assert set(first) == {"control", "production", "candidate"}


def test_assignment_is_stable_across_processes(tmp_path: Path) -> None:
    path = write(tmp_path / "experiments.yaml", VALID)
    customers = [f"c{i}" for i in range(50)] + ["", "émilie", "42", "c 1"]
    in_process = {
        e.name: [e.assign(customer).name for customer in customers]
        for e in load_experiments(path).experiments
    }
    code = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from nbo.experiments.definitions import load_experiments
        path, customers = sys.argv[1], json.loads(sys.argv[2])
        print(json.dumps({
            e.name: [e.assign(c).name for c in customers]
            for e in load_experiments(Path(path)).experiments
        }))
        """
    )
    for seed in ("0", "12345"):
        # A different string-hash seed in each child: hash() would give other variants.
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(
            [sys.executable, "-c", code, str(path), json.dumps(customers)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=120,
        )
        assert json.loads(done.stdout) == in_process


def test_the_split_follows_the_weights(tmp_path: Path) -> None:
    ranker, halves = load(tmp_path).experiments

    shares = split(ranker)
    assert shares.keys() == {"control", "production", "candidate"}
    assert shares["control"] == pytest.approx(0.10, abs=0.01)
    assert shares["production"] == pytest.approx(0.45, abs=0.01)
    assert shares["candidate"] == pytest.approx(0.45, abs=0.01)

    halves_shares = split(halves)
    assert halves_shares["a"] == pytest.approx(0.5, abs=0.01)
    assert halves_shares["b"] == pytest.approx(0.5, abs=0.01)


def test_a_new_salt_reshuffles_about_half_of_a_50_50_split(tmp_path: Path) -> None:
    halves = load(tmp_path).experiments[1]
    resalted = Experiment(
        name=halves.name,
        salt="halves-2",
        start_s=halves.start_s,
        end_s=halves.end_s,
        variants=halves.variants,
    )
    moved = sum(halves.assign(c).name != resalted.assign(c).name for c in IDS) / len(IDS)
    assert 0.45 <= moved <= 0.55


def test_assign_walks_the_variants_in_file_order() -> None:
    variants = (
        Variant(name="low", weight=0.25, model="m1", control=False),
        Variant(name="high", weight=0.75, model="m2", control=False),
    )
    experiment = Experiment("e", "salt", 0, None, variants)
    for customer in IDS[:2000]:
        point = assignment_point("salt", customer)
        expected = "low" if point < 0.25 else "high"
        assert experiment.assign(customer).name == expected


def test_a_point_past_float_rounding_falls_to_the_last_variant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variants = tuple(Variant(f"v{i}", 0.1, f"m{i}", False) for i in range(10))
    top = math.nextafter(1.0, 0.0)
    assert sum(v.weight for v in variants) == top  # ten shares of 0.1 round under 1
    experiment = Experiment("e", "salt", 0, None, variants)
    monkeypatch.setattr("nbo.experiments.definitions.assignment_point", lambda salt, c: top)
    assert experiment.assign("anyone").name == "v9"


@pytest.mark.parametrize(
    "variants",
    [
        (),
        (Variant("a", 1.0, "m", False), Variant("b", 1.0, "m", False)),
        (Variant("a", 0.1, "m", False), Variant("b", 0.2, "m", False)),
    ],
    ids=["none", "raw weights", "short of 1"],
)
def test_a_hand_built_experiment_needs_shares_summing_to_one(
    variants: tuple[Variant, ...],
) -> None:
    with pytest.raises(ValueError):
        Experiment("e", "salt", 0, None, variants)


# --- refusals -----------------------------------------------------------------------


def test_the_baseline_is_the_control_else_the_first_variant_or_the_named_one(
    tmp_path: Path,
) -> None:
    experiments = load(tmp_path)
    with_control, two_models = experiments.experiments
    assert with_control.baseline is None and with_control.compared_against.name == "control"
    assert two_models.baseline is None and two_models.compared_against.name == "a"
    named = load(
        tmp_path, VALID.replace("    salt: halves\n", "    salt: halves\n    baseline: b\n")
    )
    assert named.experiments[1].baseline == "b"
    assert named.experiments[1].compared_against.name == "b"


def variant_edit(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


CANDIDATE = "      - name: candidate\n        model: candidate\n        weight: 45\n"
PRODUCTION = "      - name: production\n        model: production\n        weight: 45\n"

BAD_FILES = {
    "duplicate experiment": (
        VALID.replace("  - name: half_half", "  - name: ranker-vs-als"),
        ["experiment 'ranker-vs-als'", ": name: ", "unique"],
    ),
    "duplicate variant": (
        variant_edit("- name: candidate", "- name: production"),
        ["experiment 'ranker-vs-als'", "variant 'production'", ": name: ", "unique"],
    ),
    "two controls": (
        variant_edit(
            CANDIDATE, "      - name: candidate\n        control: true\n        weight: 45\n"
        ),
        ["experiment 'ranker-vs-als'", "variant 'candidate'", ": control: ", "one control"],
    ),
    "control with a model": (
        variant_edit(
            "        control: true\n", "        control: true\n        model: production\n"
        ),
        ["experiment 'ranker-vs-als'", "variant 'control'", ": model: ", "has no model"],
    ),
    "neither control nor model": (
        variant_edit(CANDIDATE, "      - name: candidate\n        weight: 45\n"),
        ["experiment 'ranker-vs-als'", "variant 'candidate'", ": model: ", "needs a model"],
    ),
    "control false and no model": (
        variant_edit(
            CANDIDATE, "      - name: candidate\n        control: false\n        weight: 45\n"
        ),
        ["variant 'candidate'", ": model: ", "needs a model"],
    ),
    "empty model": (
        variant_edit("model: candidate", 'model: ""'),
        ["variant 'candidate'", ": model: ", "at least 1 character"],
    ),
    "weight 0": (
        variant_edit("weight: 10", "weight: 0"),
        ["experiment 'ranker-vs-als'", "variant 'control'", ": weight: ", "greater than 0"],
    ),
    "negative weight": (
        variant_edit(CANDIDATE, CANDIDATE.replace("45", "-5")),
        ["variant 'candidate'", ": weight: ", "greater than 0"],
    ),
    "weight as text": (
        variant_edit("weight: 10", 'weight: "10"'),
        ["variant 'control'", ": weight: ", "valid number"],
    ),
    "missing weight": (
        variant_edit(PRODUCTION, "      - name: production\n        model: production\n"),
        ["variant 'production'", ": weight: ", "required"],
    ),
    "end before start": (
        VALID.replace("end: 2027-01-01T00:00:00Z", "end: 2026-11-01T00:00:00Z"),
        ["experiment 'ranker-vs-als'", ": end: ", "after start"],
    ),
    "end equal to start": (
        VALID.replace("end: 2027-01-01T00:00:00Z", "end: 2026-12-01T01:00:00+01:00"),
        ["experiment 'ranker-vs-als'", ": end: ", "after start"],
    ),
    "not a time": (
        VALID.replace("start: 2026-12-01T00:00:00Z", "start: next monday"),
        ["experiment 'ranker-vs-als'", ": start: ", "ISO 8601", "next monday"],
    ),
    "a number as a time": (
        VALID.replace("start: 2026-12-01T00:00:00Z", "start: 20261201"),
        ["experiment 'ranker-vs-als'", ": start: ", "ISO 8601"],
    ),
    "an impossible date": (
        VALID.replace("start: 2026-12-01T00:00:00Z", "start: 2011-12-32"),
        ["experiment 'ranker-vs-als'", ": start: ", "ISO 8601", "'2011-12-32': day is out of"],
    ),
    "a key written twice": (
        VALID.replace("    salt: halves\n", "    salt: halves\n    salt: thirds\n"),
        ["not valid YAML (line ", "duplicate key 'salt' (first at line "],
    ),
    "unknown variant key": (
        variant_edit("weight: 10", "weight: 10\n        colour: red"),
        ["experiment 'ranker-vs-als'", "variant 'control'", ": colour: ", "not a known field"],
    ),
    "unknown experiment key": (
        VALID.replace("    salt: halves", "    salt: halves\n    owner: me"),
        ["experiment 'half_half'", ": owner: ", "not a known field"],
    ),
    "unknown top-level key": (
        VALID.replace("version: 1", "version: 1\nexperiment: []"),
        [": experiment: ", "not a known field"],
    ),
    "bad experiment name": (
        VALID.replace("name: ranker-vs-als", "name: Ranker vs ALS"),
        ["experiment 'Ranker vs ALS'", ": name: ", "lowercase"],
    ),
    "bad variant name": (
        variant_edit("- name: candidate", "- name: -candidate"),
        ["experiment 'ranker-vs-als'", "variant '-candidate'", ": name: ", "lowercase"],
    ),
    "name too long": (
        VALID.replace("name: half_half", "name: " + "h" * 65),
        ["experiment '" + "h" * 65 + "'", ": name: ", "64"],
    ),
    "one variant only": (
        VALID.split("      - name: b\n")[0],
        ["experiment 'half_half'", ": variants: ", "at least two", "got 1"],
    ),
    "empty salt": (
        VALID.replace('salt: "2026-12-campaign"', 'salt: ""'),
        ["experiment 'ranker-vs-als'", ": salt: ", "at least 1 character"],
    ),
    "missing salt": (
        VALID.replace("    salt: halves\n", ""),
        ["experiment 'half_half'", ": salt: ", "required"],
    ),
    "version 2": (
        VALID.replace("version: 1", "version: 2"),
        [": version: ", "must be 1", "got 2"],
    ),
    "no version": (
        VALID.replace("version: 1\n", ""),
        [": version: ", "required"],
    ),
    "a baseline that is not a variant": (
        VALID.replace("    salt: halves\n", "    salt: halves\n    baseline: c\n"),
        ["experiment 'half_half'", ": baseline: ", "'c' is not a variant", "variants: a, b"],
    ),
    "a weight with an exponent, which YAML reads as text": (
        variant_edit(CANDIDATE, CANDIDATE.replace("weight: 45", "weight: 4.5e1")),
        [
            "variant 'candidate': weight: must be a number, and YAML reads 4.5e1 as text",
            "needs a dot and a sign: 1.0e+2): write 45",
        ],
    ),
    "a variant that is not a mapping": (
        VALID.replace(CANDIDATE, "      - candidate\n"),
        ["experiment 'ranker-vs-als'", "variant #3", "mapping"],
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_broken_rule_is_refused_naming_where(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    message = refusal(write(tmp_path / "experiments.yaml", text))
    for part in expected:
        assert part in message


def test_the_error_reads_file_experiment_variant_field_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path / "experiments.yaml", variant_edit(CANDIDATE, CANDIDATE.replace("45", "0"))
    )
    with pytest.raises(ExperimentError) as caught:
        load_experiments(path)
    error = caught.value
    assert isinstance(error, NboError)
    assert str(error) == (
        f"{path}: experiment 'ranker-vs-als': variant 'candidate': weight: "
        "must be greater than 0 (got 0)"
    )
    assert (error.source, error.experiment, error.variant, error.field) == (
        str(path),
        "ranker-vs-als",
        "candidate",
        "weight",
    )


def test_the_same_rules_hold_for_json(tmp_path: Path) -> None:
    document = {
        "version": 1,
        "experiments": [
            {
                "name": "e",
                "salt": "s",
                "start": "2026-12-01T00:00:00Z",
                "variants": [
                    {"name": "a", "model": "production", "weight": 1},
                    {"name": "b", "model": "candidate", "control": True, "weight": 1},
                ],
            }
        ],
    }
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    message = refusal(path)
    assert "experiment 'e': variant 'b': model: " in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "experiments.yaml",
            b"version: 1\nexperiments:\n  - name: [unclosed\n    salt: s\n",
            ["not valid YAML", "line 4"],
        ),
        ("experiments.json", b'{"version": 1,\n "experiments": [}\n', ["not valid JSON", "line 2"]),
        ("experiments.yaml", b"", ["empty"]),
        ("experiments.yml", b"  \n\n", ["empty"]),
        ("experiments.yaml", b"# only a comment\n", ["empty"]),
        ("experiments.json", b"", ["empty"]),
        ("experiments.yaml", b"version: 1\nsalt: \xff\xfe\n", ["not UTF-8"]),
        ("experiments.yaml", b"- version: 1\n", ["mapping", "not a list"]),
        ("experiments.txt", b"version: 1\nexperiments: []\n", [".yaml, .yml or .json"]),
    ],
)
def test_an_unreadable_file_is_refused_in_one_line(
    tmp_path: Path, name: str, content: bytes, expected: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    message = refusal(path)
    for part in expected:
        assert part in message


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path / "nope.yaml")
    assert "no such file" in message


def test_every_problem_is_listed_one_line_each(tmp_path: Path) -> None:
    """A file with three mistakes said the first and "(and 2 more problems)": a round
    of edits per mistake. Each is listed on its own line, as the offer catalogue does."""
    text = """\
    version: 1
    experiments:
      - name: e
        salt: s
        strat: 2026-12-01T00:00:00Z
        variants:
          - {name: a, model: production, weight: -1}
          - {name: b, model: candidate, wieght: 1}
    """
    with pytest.raises(ExperimentError) as caught:
        load_experiments(write(tmp_path / "experiments.yaml", text))
    lines = str(caught.value).split("\n")
    assert all(line.startswith(f"{tmp_path / 'experiments.yaml'}: ") for line in lines)
    assert [line.split(": ")[1:-1] for line in lines] == [
        ["experiment 'e'", "start"],
        ["experiment 'e'", "variant 'a'", "weight"],
        ["experiment 'e'", "variant 'b'", "weight"],
        ["experiment 'e'", "variant 'b'", "wieght"],
        ["experiment 'e'", "strat"],
    ]
    assert "more problem" not in str(caught.value)
    assert len(caught.value.problems) == len(lines)


def test_a_long_list_of_problems_is_capped(tmp_path: Path) -> None:
    variants = "".join(f"      - {{name: v{n}, model: m, weight: 1, x: 1}}\n" for n in range(30))
    text = (
        "version: 1\nexperiments:\n  - name: e\n    salt: s\n    start: 2026-12-01\n"
        f"    variants:\n{variants}"
    )
    with pytest.raises(ExperimentError) as caught:
        load_experiments(write(tmp_path / "experiments.yaml", text))
    lines = str(caught.value).split("\n")
    assert len(lines) == MAX_LISTED_PROBLEMS + 1
    assert lines[-1].endswith(f"and {30 - MAX_LISTED_PROBLEMS} more problems")


def test_a_weight_in_base_60_is_refused_a_fraction_too(tmp_path: Path) -> None:
    """``weight: 1:30`` (90) was refused; ``1:30.5`` (90.5) was taken: refused alike."""
    for written, read in (("1:30", "90"), ("1:30.5", "90.5")):
        text = VALID.replace("weight: 1\n", f"weight: {written}\n", 1)
        message = refusal(write(tmp_path / "experiments.yaml", text))
        assert message.endswith(
            f"weight: '{written}' is {read} to YAML (base 60, as a time): write the number in "
            "plain decimal digits, without a leading 0"
        )


def test_a_weight_with_a_leading_zero_is_refused_not_read_as_yaml_octal(tmp_path: Path) -> None:
    """``weight: 010`` was YAML 1.1's octal 8: a split of 8 to 90, not 10 to 90."""
    path = write(tmp_path / "experiments.yaml", VALID.replace("weight: 1\n", "weight: 010\n", 1))
    message = refusal(path)
    assert message.endswith(
        "weight: '010' is 8 to YAML (octal, as it starts with 0): write the number in plain "
        "decimal digits, without a leading 0"
    )


@pytest.mark.parametrize(
    ("written", "read_as"),
    [
        ("0123", "the number 83 ('0123': octal, as it starts with 0)"),
        ("1_000", "the number 1000 ('1_000': its '_' dropped)"),
        ("0x1F", "the number 31 ('0x1F': hexadecimal)"),
        ("1:30", "the number 90 ('1:30': base 60, as a time)"),
        ("yes", "the boolean true"),
        ("no", "the boolean false"),
        ("1.0e+3", "the number 1000.0"),
        ("2026", "the number 2026"),
    ],
)
def test_a_salt_yaml_reads_as_anything_but_text_is_refused_not_turned_to_text(
    tmp_path: Path, written: str, read_as: str
) -> None:
    """An unquoted ``salt: 0123`` was YAML 1.1's octal 83, taken as the salt '83': every
    customer silently reshuffled against the salt written. Refused, naming the field and
    what YAML read, until quoted."""
    text = VALID.replace('salt: "2026-12-campaign"', f"salt: {written}")
    message = refusal(write(tmp_path / "experiments.yaml", text))
    said = "experiment 'ranker-vs-als': salt: must be text, and YAML read it as "
    assert f"{said}{read_as}" in message and message.endswith(": quote it")
    quoted = VALID.replace('salt: "2026-12-campaign"', f'salt: "{written}"')
    loaded = load_experiments(write(tmp_path / "experiments.yaml", quoted))
    assert loaded.experiments[0].salt == written


def test_a_json_files_value_that_is_not_text_is_named_as_json_wrote_it(tmp_path: Path) -> None:
    """A JSON experiments file's ``"salt": 123`` was refused as "YAML read it as the
    number 123", sending its author to look for YAML in a JSON file."""
    document = yaml.safe_load(VALID)
    for experiment in document["experiments"]:
        for key in ("start", "end"):
            if key in experiment:
                experiment[key] = experiment[key].isoformat()
    path = tmp_path / "experiments.json"
    for salt, named in [(123, "the number 123"), (True, "the boolean true")]:
        document["experiments"][0]["salt"] = salt
        path.write_text(json.dumps(document), encoding="utf-8")
        message = refusal(path)
        assert message.endswith(f"salt: must be text, not {named}: write it in quotes")
        assert "YAML" not in message


def test_names_and_models_yaml_reads_as_numbers_are_refused_naming_each(tmp_path: Path) -> None:
    text = VALID.replace("name: half_half", "name: 0123").replace(
        "model: 20261201T000000Z-abcdef12", "model: 0x1F"
    )
    with pytest.raises(ExperimentError) as caught:
        load_experiments(write(tmp_path / "experiments.yaml", text))
    assert [line.split(": ", 1)[1] for line in str(caught.value).split("\n")] == [
        "experiment '0123': name: must be text, and YAML read it as the number 83 "
        "('0123': octal, as it starts with 0): quote it",
        "experiment '0123': variant 'a': model: must be text, and YAML read it as "
        "the number 31 ('0x1F': hexadecimal): quote it",
    ]


def test_model_variants_resolving_to_one_version_are_said_at_load(tmp_path: Path) -> None:
    """production and a candidate alias pointed at the version a retraining just made
    CURRENT: the experiment would compare a model with itself, said before any send."""
    from nbo.experiments.assignment import same_model_warnings
    from nbo.experiments.definitions import load_experiments

    path = tmp_path / "exp.yaml"
    path.write_text(
        "version: 1\nexperiments:\n  - name: ab\n    salt: s\n"
        "    start: 2026-06-01T00:00:00Z\n    variants:\n"
        "      - {name: control, control: true, weight: 20}\n"
        "      - {name: current, model: production, weight: 40}\n"
        "      - {name: retrained, model: candidate, weight: 40}\n",
        encoding="utf-8",
    )
    experiments = load_experiments(path)
    assert same_model_warnings(experiments, {"production": "v1", "candidate": "v2"}) == []
    (line,) = same_model_warnings(experiments, {"production": "v2", "candidate": "v2"})
    assert line == (
        f"{path}: experiment 'ab': variants current (production) and retrained (candidate) "
        "are both served by model version v2: the experiment would compare a model with "
        "itself; point each alias at its own version (nbo models --alias)"
    )
