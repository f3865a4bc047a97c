"""The dashboard's pages through the real app, against what the API answers for the same
model, clock and store: the planted model, a posted customer, withdrawn consent,
recorded deliveries and a conversion. The same pages in a real browser:
test_browser.py."""

from __future__ import annotations

import html
import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import (
    CLOCK,
    DEMO_CATALOG,
    ENTRIES,
    EXPERIMENT,
    KEYS,
    app_for,
    bearer,
    make_nobody_comes_back,
    small_training_config,
)

from nbo.core.apikeys import Role
from nbo.data.mapping import load_mapping
from nbo.service.app import create_app
from nbo.service.auth import KEY_COOKIE
from nbo.settings import Settings
from nbo.store.base import BatchOutput
from training.pipeline import TrainResult, train

CHURN_CLOCK = "2026-07-01T00:00:00Z"  # the day after the churn data ends
BROWSER = {"accept": "text/html,application/xhtml+xml"}
API_CLIENT = {"accept": "application/json"}
READ = KEYS[Role.read][0]


def cells(page: str, attribute: str) -> dict[str, str]:
    """``<td data-ATTRIBUTE="name">text</td>`` cells of a page: name -> text."""
    found = re.findall(rf'<td data-{attribute}="([^"]+)"[^>]*>([^<]*)</td>', page)
    return {name: html.unescape(text) for name, text in found}


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def warning(page: str, element_id: str) -> str:
    """The text of the paragraph ``element_id``, its markup dropped."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</p>', page, re.S)
    assert match, element_id
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))


def by_id(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert match, element_id
    return html.unescape(match.group(1))


def plant(client: TestClient) -> None:
    """A customer only a posted purchase names, one without consent to personalization,
    and one without consent to email."""
    posted = client.post(
        "/v1/events",
        json={
            "event_id": "p-new",
            "type": "purchase",
            "customer_id": "z-posted",
            "timestamp": "2026-06-30T09:00:00Z",
            "items": [{"item_id": "A01", "quantity": 1, "price": 2.5}],
        },
    )
    assert posted.json()["accepted"] == ["p-new"]
    for customer, consent in (
        ("a05", {"personalization": False}),
        ("b07", {"personalization": True, "channels": {"email": False}}),
    ):
        assert client.put(f"/v1/customers/{customer}/consent", json=consent).status_code == 200


def test_the_overview_counts_every_customer_as_the_profile_route_gives_them(
    client: TestClient, current: str
) -> None:
    plant(client)
    page = client.get("/dashboard").text
    everyone = [f"{g}{c:02d}" for g in "ab" for c in range(30)] + ["z-posted"]
    profiles = [client.get(f"/v1/customers/{c}").json() for c in everyone]
    assert by_id(page, "model-version") == current
    assert number(by_id(page, "customers-total")) == len(everyone) == 61
    stages = Counter(p["stage"] for p in profiles)
    assert {s: number(t) for s, t in cells(page, "stage").items()} == {
        s: float(stages.get(s, 0)) for s in ("new", "active", "at_risk", "lapsed", "loyal")
    }
    assert stages["new"] >= 1  # z-posted
    assert number(by_id(page, "unprofiled")) == sum(not p["profiled"] for p in profiles) == 1
    # The planted model has no churn model: nobody has a risk, and the page says so.
    assert all(p["churn_risk"] is None for p in profiles)
    assert "No customer has a churn risk" in page
    model = client.get("/v1/model").json()
    assert number(by_id(page, "model-customers")) == model["customers"]
    # The trainer's figures, as the manifest has them (ranker row, ndcg@10 on all).
    ranker = re.search(
        r'id="quality-all".*?data-method="ranker">.*?data-metric="ndcg@10">([\d.]+)<', page, re.S
    )
    assert ranker and float(ranker.group(1)) == pytest.approx(
        model["metrics"]["all"]["ranker"]["ndcg@10"], abs=5e-5
    )
    assert '<img class="chart" src="data:image/svg+xml;base64,' in page


def test_the_overview_lists_the_live_offers_the_catalogue_route_gives(models_dir: Path) -> None:
    """The demo catalogue at the test clock (2026): the Christmas 2011 offer has ended."""
    with app_for(models_dir, catalog=DEMO_CATALOG) as client:
        page = client.get("/dashboard").text
        catalog = client.get("/v1/catalog").json()
    live = [o["id"] for o in catalog["offers"] if o["live"]]
    section = page.split('id="live-offers"')[1]
    assert re.findall(r'<tr data-offer="([^"]+)"', section) == live
    assert live and "christmas-2011" not in live
    assert catalog["fingerprint"][:12] in section


def test_the_overview_says_a_refused_catalogue_or_experiments_file(
    models_dir: Path, tmp_path: Path, experiment_client: TestClient, experiments_file: Path
) -> None:
    """With ``stages: [loyl]`` saved, ``GET /v1/catalog`` said ``last_error`` while the
    Overview listed the old offers as live without a word; a refused experiments file
    likewise."""
    catalog = tmp_path / "catalog.yaml"
    good = DEMO_CATALOG.read_text(encoding="utf-8")
    catalog.write_text(good, encoding="utf-8")
    with app_for(models_dir, catalog=catalog) as client:
        assert 'id="catalog-refused"' not in client.get("/dashboard").text
        catalog.write_text(good.replace("stages: [loyal]", "stages: [loyl]"), encoding="utf-8")
        client.app.state.catalog.refresh()  # type: ignore[attr-defined]
        problem = client.get("/v1/catalog").json()["last_error"]
        assert "loyl" in problem
        page = client.get("/dashboard").text
    assert problem in warning(page, "catalog-refused")
    assert "The catalogue file was refused" in page

    assert 'id="experiments-refused"' not in experiment_client.get("/dashboard").text
    bad = EXPERIMENT.replace("weight: 20", "weight: -20")
    experiments_file.write_text(bad, encoding="utf-8")
    assert experiment_client.post("/v1/admin/reload").status_code == 200
    problem = experiment_client.get("/v1/experiments").json()["last_error"]
    assert "weight" in problem
    page = experiment_client.get("/dashboard").text
    assert problem in warning(page, "experiments-refused")


def test_a_refused_file_s_problems_are_listed_one_by_one_escaped(
    models_dir: Path, tmp_path: Path
) -> None:
    """The Overview showed a refused file's one line ('N problems: a; b; ...') without
    ``last_error_problems``: each problem now has its own line under it, as text (a value
    quoted from the file is never markup)."""
    catalog = tmp_path / "catalog.yaml"
    good = DEMO_CATALOG.read_text(encoding="utf-8")
    catalog.write_text(good, encoding="utf-8")
    with app_for(models_dir, catalog=catalog) as client:
        bad = good.replace("stages: [loyal]", "stages: [loyl]", 1).replace(
            "stages: [new]\n", 'stages: ["<i>x</i>"]\n', 1
        )
        catalog.write_text(bad, encoding="utf-8")
        client.app.state.catalog.refresh()  # type: ignore[attr-defined]
        problems = client.get("/v1/catalog").json()["last_error_problems"]
        page = client.get("/dashboard").text
    assert len(problems) == 2 and "loyl" in problems[0] and "<i>x</i>" in problems[1]
    listed = re.search(r'<ul class="problems" id="catalog-problems">(.*?)</ul>', page, re.S)
    assert listed, "no list of problems"
    items = re.findall(r"<li>(.*?)</li>", listed.group(1), re.S)
    assert [html.unescape(item) for item in items] == problems
    assert "<i>x</i>" not in page and "&lt;i&gt;x&lt;/i&gt;" in listed.group(1)
    # Under the one line, which still says it all in one.
    assert page.index('id="catalog-refused"') < page.index('id="catalog-problems"')


def test_the_overview_counts_stages_and_churn_risk_on_the_churn_model(
    churn_trained: TrainResult, tmp_path: Path
) -> None:
    """The planted churn data (300 customers, two rhythms): every stage and risk the
    profile route gives, counted per stage and per tenth of risk."""
    assert churn_trained.path is not None
    settings = Settings(models_dir=churn_trained.path.parent, clock=CHURN_CLOCK)
    with TestClient(create_app(settings)) as client:
        page = client.get("/dashboard").text
        known = client.get("/v1/model").json()["customers"]
        ids = [str(c) for c in client.app.state.models.model.customers.ids]
        profiles = [client.get(f"/v1/customers/{c}").json() for c in ids]
    assert number(by_id(page, "customers-total")) == len(profiles) == known
    stages = Counter(p["stage"] for p in profiles)
    assert len(stages) >= 3, stages
    assert {s: number(t) for s, t in cells(page, "stage").items()} == {
        s: float(stages.get(s, 0)) for s in ("new", "active", "at_risk", "lapsed", "loyal")
    }
    risks = np.array([p["churn_risk"] for p in profiles if p["churn_risk"] is not None])
    assert len(risks) == len(profiles)
    histogram, _ = np.histogram(risks, bins=np.linspace(0, 1, 11))
    shown = cells(page, "risk-bin")
    assert [number(shown[str(n)]) for n in range(10)] == histogram.tolist()
    assert number(by_id(page, "mean-risk")) == pytest.approx(risks.mean(), abs=5e-4)


def test_a_customer_shows_what_the_offers_route_answers_on_each_channel(
    client: TestClient,
) -> None:
    plant(client)
    for customer in ("a00", "a05", "b07", "z-posted", "never-seen"):
        page = client.get("/dashboard/customer", params={"customer_id": customer, "k": 5}).text
        profile = client.get(f"/v1/customers/{customer}").json()
        assert by_id(page, "stage") == profile["stage"].replace("_", " ")
        risk = profile["churn_risk"]
        assert by_id(page, "churn-risk").startswith("-" if risk is None else f"{risk:.3f}")
        for channel in ("email", "app"):
            answer = client.get(
                f"/v1/customers/{customer}/offers", params={"k": 5, "channel": channel}
            ).json()
            section = page.split(f'id="channel-{channel}"')[1].split("</section>")[0]
            shown = re.findall(r'data-offer="([^"]+)" data-rank="(\d+)"', section)
            assert shown == [(o["offer_id"], str(o["rank"])) for o in answer["offers"]], customer
            priorities = [number(t) for t in re.findall(r'data-field="priority">([^<]+)<', section)]
            assert priorities == [round(o["priority"], 3) for o in answer["offers"]]
            reasons = [
                html.unescape(t) for t in re.findall(r'data-field="reason">([^<]*)<', section)
            ]
            assert reasons == [o["reason"]["text"] for o in answer["offers"]]
            removed = {
                rule: number(text)
                for rule, text in re.findall(
                    r'data-rule="([^"]+)"><td>[^<]*</td><td class="n">([^<]+)<', section
                )
            }
            assert removed == {rule: float(n) for rule, n in answer["removed"].items()}
            if answer["suppressed_reason"]:
                assert f'data-suppressed="{answer["suppressed_reason"]}"' in section
    page = client.get("/dashboard/customer", params={"customer_id": "b07"}).text
    assert 'data-suppressed="no_channel_consent"' in page.split('id="channel-email"')[1]


def test_a_customer_page_says_when_a_delivery_is_held_by_the_frequency_cap(
    client: TestClient,
) -> None:
    delivered = client.get("/v1/customers/a03/offers", params={"record": "true"}).json()
    assert delivered["recorded"] is True
    capped = client.get("/v1/customers/a03/offers", params={"record": "true"}).json()
    page = client.get("/dashboard/customer", params={"customer_id": "a03"}).text
    email = page.split('id="channel-email"')[1].split("</section>")[0]
    assert 'data-delivery="frequency_cap"' in email
    assert capped["next_allowed_at"][:16].replace("T", " ") in email
    assert 'data-delivery="allowed"' in page.split('id="channel-app"')[1]
    # Looking records nothing: the app channel is still uncapped, no impression added.
    assert client.get("/v1/customers/a03/offers?channel=app&record=true").json()["recorded"]


def test_a_customer_page_says_why_nothing_is_known(client: TestClient) -> None:
    """Without consent to personalization the history is not looked at (not "nothing
    bought"); an erased customer's page says so, as the export does; no churn horizon is
    stated for a risk that is not there."""
    consent = {"personalization": False, "channels": {}}
    assert client.put("/v1/customers/a04/consent", json=consent).status_code == 200
    page = client.get("/dashboard/customer", params={"customer_id": "a04"}).text
    assert by_id(page, "known") == "not looked at: no consent to personalization"
    assert client.delete("/v1/customers/a06").status_code == 200
    page = client.get("/dashboard/customer", params={"customer_id": "a06"}).text
    assert "everything stored before then was deleted" in by_id(page, "erased")
    assert by_id(page, "churn-risk") == "-"


def test_a_fresh_service_does_not_say_its_metrics_are_off(client: TestClient) -> None:
    """Before the first offers answer the counters have no samples: that is not
    NBO_METRICS=false."""
    page = client.get("/dashboard/offers").text
    assert "Metrics are off" not in page


def test_a_bad_customer_id_is_named_on_the_page(client: TestClient) -> None:
    answer = client.get("/dashboard/customer", params={"customer_id": " a00"})
    assert answer.status_code == 422
    assert "customer_id:" in by_id(answer.text, "problem")


def test_offers_going_out_counts_the_recorded_deliveries_and_their_answers(
    client: TestClient,
) -> None:
    answers = [
        client.get(f"/v1/customers/{c}/offers", params={"k": 3, "channel": ch, "record": "true"})
        for c, ch in (("a00", "email"), ("a01", "email"), ("b02", "app"))
    ]
    offers = [
        (a.json()["channel"], a.json()["stage"], o) for a in answers for o in a.json()["offers"]
    ]
    # a00 takes up their first offer: a click and a conversion on it.
    first = answers[0].json()["offers"][0]
    item = first["item_id"] or first["offer_id"]
    for kind, extra in (("offer_click", {}), ("offer_conversion", {"revenue": 7.5})):
        event = {
            "event_id": f"{kind}-1",
            "type": kind,
            "customer_id": "a00",
            "item_id": item,
            "channel": "email",
            "timestamp": CLOCK,
            **extra,
        }
        assert client.post("/v1/events", json=event).json()["accepted"]
    page = client.get("/dashboard/offers", params={"days": 7}).text
    assert number(by_id(page, "impressions")) == len(offers) == 9
    assert number(by_id(page, "clicked")) == 1 and number(by_id(page, "converted")) == 1
    assert number(by_id(page, "revenue")) == 7.5
    for dimension, of in (
        ("channel", lambda row: row[0]),
        ("stage", lambda row: row[1]),
        ("kind", lambda row: row[2]["kind"]),
        ("source", lambda row: row[2]["reason"]["source"]),
    ):
        table = page.split(f'id="by-{dimension}"')[1].split("</table>")[0]
        shown = dict(re.findall(r'data-value="([^"]+)">.*?data-count="impressions">(\d+)<', table))
        assert {k: int(v) for k, v in shown.items()} == Counter(of(row) for row in offers)
    # The counters: every answer's offers by source (these three, recorded or not).
    served = page.split('id="served-by-source"')[1].split("</table>")[0]
    sources = Counter((o["reason"]["source"], ch) for ch, _, o in offers)
    for (source, channel), count in sources.items():
        row = served.split(f'data-source="{source}"')[1].split("</tr>")[0]
        assert f'data-channel="{channel}">{count}<' in row


def test_a_conversion_is_taken_up_once_and_counted_inside_the_clock_tolerance(
    client: TestClient,
) -> None:
    """One conversion after an email and an app delivery of the same offer read "2
    taken up ... of 1 conversions"; and a conversion dated two minutes ahead of the
    clock (POST /v1/events accepts five) was shown nowhere."""
    answer = client.get(
        "/v1/customers/a00/offers", params={"k": 1, "channel": "email", "record": "true"}
    ).json()
    offer = answer["offers"][0]
    item = offer["item_id"] or offer["offer_id"]
    ahead = "2026-06-30T12:02:00Z"  # CLOCK + 2 min, inside NBO_CLOCK_SKEW_SECONDS
    assert CLOCK == "2026-06-30T12:00:00Z"
    events = [
        {"event_id": "app-1", "type": "offer_impression", "channel": "app", "timestamp": CLOCK},
        {"event_id": "buy-1", "type": "offer_conversion", "revenue": 7.5, "timestamp": ahead},
    ]
    for event in events:
        body = {"customer_id": "a00", "item_id": item, **event}
        assert client.post("/v1/events", json=body).json()["accepted"]
    page = client.get("/dashboard/offers", params={"days": 7}).text
    assert number(by_id(page, "impressions")) == 2
    assert number(by_id(page, "converted")) == 1
    assert number(by_id(page, "revenue")) == 7.5
    assert "revenue of 1 conversions" in page
    assert "credited once" in page


def test_the_experiments_pages_show_the_report_of_nbo_report_experiment(
    experiment_client: TestClient,
) -> None:
    client = experiment_client
    for c in range(40):
        client.get(f"/v1/customers/a{c % 30:02d}{'' if c < 30 else 'x'}/offers?record=true")
    listing = client.get("/dashboard/experiments").text
    assert 'data-experiment="ranker-test"' in listing
    # Each variant's share of the traffic as configured (20/40/40), and the run's status.
    assert "control (control, 20.0% of the traffic)" in listing
    assert "candidate (candidate, 40.0% of the traffic)" in listing
    assert "<td>running</td>" in listing
    page = client.get("/dashboard/experiments/ranker-test").text
    report = client.get("/v1/experiments/ranker-test/report").json()
    from nbo.experiments.page import report_sections

    assert report_sections(report) in page
    assert "Sample ratio" in page and "uplift of each variant" in page
    missing = client.get("/dashboard/experiments/nope", headers=BROWSER)
    assert missing.status_code == 404 and "no experiment" in missing.text
    assert client.get("/dashboard/experiments/nope", headers=API_CLIENT).json()["error"] == (
        "not_found"
    )


def test_the_models_page_lists_the_versions_and_their_quality(
    experiment_client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    page = experiment_client.get("/dashboard/models").text
    listed = experiment_client.get("/v1/models").json()
    versions = re.findall(
        r'<tr data-version="([^"]+)"', page.split('id="versions"')[1].split("</table>")[0]
    )
    assert versions == [m["version"] for m in listed["models"]]
    _, with_ranker, without = two_models
    side = page.split('id="side-by-side-all"')[1].split("</table>")[0]
    ranker_row = side.split(f'data-version="{with_ranker}"')[1].split("</tr>")[0]
    assert re.search(r'data-method="ranker">0\.\d{4}<', ranker_row)
    # The version trained without the ranker has no ranker figure.
    assert 'data-method="ranker">-<' in side.split(f'data-version="{without}"')[1]
    # The first version had no current model to be compared with: not "passed".
    table = page.split('id="versions"')[1].split("</table>")[0]
    gates = {
        version: html.unescape(gate)
        for version, gate in re.findall(
            r'<tr data-version="([^"]+)".*?<td data-gate[^>]*>([^<]*)</td>', table, re.S
        )
    }
    first = json.loads((two_models[0] / with_ranker / "manifest.json").read_text())
    gate = first["quality_gate"]
    assert gate["passed"] is None and gate["current"] is None
    assert "not compared with a current model" in gate["message"]
    assert gates[with_ranker] == "not compared"
    # The second was trained on the same data: the first saw its holdout, so it was
    # compared by the figure the first's manifest records, and the page says the verdict.
    gate = json.loads((two_models[0] / without / "manifest.json").read_text())["quality_gate"]
    assert gate["recorded"] is True and gate["current_version"] == with_ranker
    assert gate["current"] == first["metrics"]["all"]["served"]["ndcg@10"]
    assert gates[without] == ("passed" if gate["passed"] else "failed (forced)")


def test_the_models_page_shows_each_versions_data_end(
    experiment_client: TestClient, two_models: tuple[Path, str, str]
) -> None:
    """The last purchase each version learned: what a rollback to it knows."""
    table = experiment_client.get("/dashboard/models").text.split('id="versions"')[1]
    folder, first, second = two_models
    for version in (first, second):
        manifest = json.loads((folder / version / "manifest.json").read_text())
        end = manifest["data"]["last_purchase"][:16].replace("T", " ")
        row = table.split(f'data-version="{version}"')[1].split("</tr>")[0]
        assert f"<td data-data-end>{end}</td>" in row


def test_the_models_page_tells_the_serving_version_from_the_one_current_names(
    two_models: tuple[Path, str, str],
) -> None:
    """Served by NBO_MODEL_VERSION, the older version was marked "current" on the page
    while CURRENT names the newer one (``GET /v1/models`` tells them apart): the page
    says which serves, which CURRENT names, and that a restart goes back to it."""
    models, with_ranker, without = two_models
    with app_for(models, model_version=with_ranker) as client:
        page = client.get("/dashboard/models").text
        listed = client.get("/v1/models").json()
    assert listed["serving"] == with_ranker and listed["current"] == without
    versions = page.split('id="versions"')[1].split("</table>")[0]
    rows = {
        version: (serving, current)
        for version, serving, current in re.findall(
            r'<tr data-version="([^"]+)"[^>]*>.*?<td data-serving>([^<]*)</td>'
            r"<td data-current>([^<]*)</td>",
            versions,
        )
    }
    assert rows == {with_ranker: ("serving", "-"), without: ("-", "named")}
    assert "current" not in re.sub(r"<[^>]+>", "", versions.split("</thead>")[1])
    assert f'<tr data-version="{with_ranker}" class="served">' in versions
    note = by_id(page, "serving-not-current")
    assert "This service answers with " in note
    assert without in page.split('id="serving-not-current"')[1].split("</p>")[0]


def test_a_model_evaluated_on_nobody_shows_no_figures_on_the_dashboard(tmp_path: Path) -> None:
    """A model whose holdout had nobody to score was shown with every figure 0.0000 (and
    bars of nothing) on the overview and the models page, figures the trainer never
    measured: its summary and report say "–" and not evaluated. So does the dashboard."""
    data = tmp_path / "tiny.csv"
    make_nobody_comes_back().to_csv(data, index=False)
    result = train(data, load_mapping("canonical"), tmp_path / "models", small_training_config())
    assert result.manifest["split"]["evaluated_customers"] == 0
    with app_for(tmp_path / "models") as client:
        overview = client.get("/dashboard").text
        models = client.get("/dashboard/models").text
    quality = overview.split('id="quality"')[1].split("</section>")[0]
    figures = re.findall(r'data-metric="[^"]+">([^<]*)<', quality)
    assert figures and set(figures) == {"–"}
    assert "0.0000" not in quality and "<img" not in quality
    assert "Not evaluated: nobody was scored on any truth" in by_id(overview, "not-evaluated")
    assert re.search(
        r'<p class="warn" id="gate">quality gate: served ndcg@10 not evaluated', quality
    )
    assert "0 customers evaluated: not evaluated)" in overview
    side = models.split('id="side-by-side-all"')[1].split("</table>")[0]
    shown = re.findall(r'data-method="[^"]+"[^>]*>([^<]*)<', side)
    assert shown and set(shown) == {"–"}


def test_the_models_page_lists_the_versions_when_aliases_json_is_broken(
    models_dir: Path, tmp_path: Path
) -> None:
    """An ALIASES.json that is not JSON made the models page a 500, where GET
    /v1/models lists the versions without aliases and says why: so does the page."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    (models / "ALIASES.json").write_text("{not json", encoding="utf-8")
    with app_for(models) as client:
        page = client.get("/dashboard/models")
        listed = client.get("/v1/models").json()
    assert page.status_code == 200
    assert listed["aliases_problem"] and listed["aliases_problem"] in html.unescape(
        by_id(page.text, "aliases-problem")
    )
    assert re.findall(r'<tr data-version="([^"]+)"', page.text.split("</table>")[0]) == [
        m["version"] for m in listed["models"]
    ]


def test_pages_need_a_read_key_and_take_it_from_the_sign_in_cookie(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with app_for(models_dir, api_keys=ENTRIES) as client:
        # An API client (asking for JSON) gets the API's 401; a browser the sign-in page.
        assert client.get("/dashboard", headers=API_CLIENT).json()["error"] == "unauthorized"
        page = client.get("/dashboard/offers?days=7", headers=BROWSER)
        assert page.status_code == 401 and 'action="/dashboard/sign-in"' in page.text
        assert 'name="next" value="/dashboard/offers?days=7"' in page.text
        assert client.get("/dashboard", headers=bearer(READ)).status_code == 200
        with caplog.at_level(logging.WARNING):
            wrong = client.post("/dashboard/sign-in", data={"key": READ + "x"}, headers=BROWSER)
        assert wrong.status_code == 401 and KEY_COOKIE not in wrong.cookies
        # The refusal names the key meant (its public id), never the key.
        read_id = READ.split("_")[1]
        refused = [r.getMessage() for r in caplog.records if "sign-in refused" in r.getMessage()]
        assert refused == [f"dashboard sign-in refused: API key {read_id}, wrong secret"]
        assert READ not in caplog.text
        signed = client.post(
            "/dashboard/sign-in",
            data={"key": READ, "next": "/dashboard/models"},
            follow_redirects=False,
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/models"
        cookie = signed.headers["set-cookie"]
        for flag in ("HttpOnly", "Path=/dashboard", "SameSite=strict"):
            assert flag.lower() in cookie.lower(), cookie
        assert client.get("/dashboard/models").status_code == 200
        # The cookie opens the dashboard's pages only, never the API.
        assert client.get("/v1/model").status_code == 401
        client.cookies.set(KEY_COOKIE, READ)
        assert client.get("/v1/model").status_code == 401
        # Signing in never sends the browser elsewhere.
        away = client.post(
            "/dashboard/sign-in",
            data={"key": READ, "next": "//evil.example/"},
            follow_redirects=False,
        )
        assert away.headers["location"] == "/dashboard"
        out = client.post("/dashboard/sign-out", follow_redirects=False)
        assert out.status_code == 303 and f'{KEY_COOKIE}=""' in out.headers["set-cookie"]


def test_figures_are_computed_once_a_minute_per_model_version(client: TestClient) -> None:
    cache = client.app.state.dashboard_cache
    before = cache.computed
    for _ in range(3):
        assert client.get("/dashboard").status_code == 200
    assert cache.computed == before + 1
    client.post("/v1/admin/reload", json={"force": True})
    assert client.get("/dashboard").status_code == 200


def test_the_offers_path_never_loads_the_dashboards_plotting(models_dir: Path) -> None:
    """matplotlib is for the pages that draw: a service that answered offers and events
    (and served the docs) has not imported it."""
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from nbo.service.app import create_app\n"
        "from nbo.settings import Settings\n"
        f"settings = Settings(models_dir={str(models_dir)!r}, clock={CLOCK!r})\n"
        "with TestClient(create_app(settings)) as c:\n"
        "    assert c.get('/v1/customers/a00/offers?record=true').status_code == 200\n"
        "    assert c.get('/v1/customers/a00').status_code == 200\n"
        "    assert c.get('/docs').status_code == 200\n"
        "    before = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
        "    assert c.get('/dashboard').status_code == 200\n"
        "    after = any(m.split('.')[0] == 'matplotlib' for m in sys.modules)\n"
        "print(before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] True", done.stdout


@pytest.mark.parametrize("accept", ["*/*", BROWSER["accept"], ""])
@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("/dashboard/offers?days=abc", 422, "days: Input should be a valid integer"),
        ("/dashboard/experiments/nope", 404, "no experiment &#39;nope&#39; is configured"),
    ],
)
def test_bad_input_to_a_page_is_an_error_page_unless_json_is_asked_for(
    client: TestClient, accept: str, url: str, status: int, says: str
) -> None:
    """A page's errors had been JSON to any client that did not name text/html (curl,
    a link opened by another program); JSON stays for /v1 and for a client asking for it."""
    page = client.get(url, headers={"accept": accept})
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    assert says in page.text and '"error"' not in page.text
    asked = client.get(url, headers=API_CLIENT)
    assert asked.status_code == status and asked.headers["content-type"] == "application/json"
    api = client.get("/v1/items/NOPE/similar", headers={"accept": accept})
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"


def test_a_customer_page_names_the_minimum_hold_back_when_one_is_set(models_dir: Path) -> None:
    """What removed just-bought items names NBO_MIN_HOLD_DAYS beside the window when it is
    set, and only then."""
    pages = {}
    for hold in ({}, {"email": 29.0}):
        with app_for(models_dir, min_hold_days=hold) as client:
            held = next(
                f"a{n:02d}"
                for n in range(10)
                if client.get(f"/v1/customers/a{n:02d}/offers").json()["removed"].get("just_bought")
            )
            page = client.get("/dashboard/customer", params={"customer_id": held}).text
        email = page.split('id="channel-email"')[1].split("</section>")[0]
        pages[bool(hold)] = html.unescape(
            email.split('data-rule="just_bought"')[1].split("</tr>")[0]
        )
    assert "NBO_SUPPRESSION_DAYS: 30" in pages[False] and "NBO_MIN_HOLD_DAYS" not in pages[False]
    assert 'NBO_MIN_HOLD_DAYS: {"email": 29.0}' in pages[True]


def test_the_campaigns_page_lists_each_file_and_the_impressions_its_run_recorded(
    client: TestClient,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_store: Path,
) -> None:
    """A marketer tells the campaign that was sent (--record) from a preview, and sees
    what each run put on the customers' caps, as the store counts it."""
    from nbo.cli import main
    from nbo.store import open_store

    empty = client.get("/dashboard/campaigns", headers=BROWSER)
    assert empty.status_code == 200 and 'id="no-campaigns"' in empty.text
    monkeypatch.setenv("NBO_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("NBO_CLOCK", CLOCK)
    ids = tmp_path / "ids.txt"
    ids.write_text("a00\na01\nb00\n", encoding="utf-8")
    preview, sent = tmp_path / "preview.csv", tmp_path / "sent.parquet"
    # Delivered again at once: every customer capped, nothing recorded, yet no preview.
    capped = tmp_path / "capped.csv"
    for out, extra in ((preview, []), (sent, ["--record"]), (capped, ["--record"])):
        args = ["batch", "--customers", str(ids), "--k", "2", "--out", str(out), *extra]
        assert main(args) == 0
    store = open_store(f"sqlite:///{isolated_store}")
    try:
        outputs = {Path(o.path).name: o for o in store.batch_outputs()}
        recorded = store.count_run_impressions(outputs["sent.parquet"].run_id)
        # A file registered before nbo kept what its run was: read by its impressions.
        old = BatchOutput(str(tmp_path / "old.csv"), 1, "batch-old", 3, "csv")
        store.register_batch_output(old)
    finally:
        store.close()
    assert recorded > 0
    # A page computed earlier in the same minute is cached: a fresh app reads the store.
    with app_for(models_dir) as fresh:
        page = fresh.get("/dashboard/campaigns", headers=BROWSER)
    assert page.status_code == 200
    text = page.text
    assert 'aria-current="page">Campaigns' in text
    sent_run, preview_run = outputs["sent.parquet"].run_id, outputs["preview.csv"].run_id
    capped_run = outputs["capped.csv"].run_id
    assert cells(text, "sent") == {
        sent_run: "delivered (--record): 3 customers recorded, 0 frequency-capped",
        preview_run: "preview (no --record)",
        capped_run: "delivered (--record): 0 customers recorded, 3 frequency-capped",
        "batch-old": "nothing recorded",
    }
    assert cells(text, "impressions") == {
        sent_run: f"{recorded:,}",
        preview_run: "0",
        capped_run: "0",
        "batch-old": "0",
    }
    assert cells(text, "rows") == {
        **{o.run_id: f"{o.rows:,}" for o in outputs.values()},
        "batch-old": "3",
    }
