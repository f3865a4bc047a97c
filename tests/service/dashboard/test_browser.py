"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package,
found on the PATH or named by NBO_TEST_CHROMIUM) driven by Playwright, against a real
``nbo serve`` on the two published models, the demo catalogue and an experiment. Each
page loads with nothing refused and no console error (the content security policy
allows nothing from elsewhere, so an asset that is not local shows up here), and shows
what the API answers for the same model, clock and store. Without a browser these tests
skip, saying why (``.ci/run`` installs one)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import CLOCK, DEMO_CATALOG, ENTRIES, EXPERIMENT, KEYS, bearer, running_server

from nbo.core.apikeys import Role

CHROMIUM = os.environ.get("NBO_TEST_CHROMIUM") or shutil.which("chromium")
if not CHROMIUM:
    pytest.skip(
        "no Chromium for the dashboard's browser tests: apt-get install chromium "
        "(Debian's package; .ci/run installs it) or set NBO_TEST_CHROMIUM=/path/to/chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright (the dev extra) drives the browser tests"
)

READ = KEYS[Role.read][0]
# The planted model's customers and one only a posted purchase names.
EVERYONE = [f"{g}{c:02d}" for g in "ab" for c in range(30)] + ["z-posted"]
STAGES = ("new", "active", "at_risk", "lapsed", "loyal")


@dataclass
class Visit:
    """A page as the browser got it, and what went wrong on the way: console errors,
    uncaught script errors, refused or failed requests."""

    page: Any
    status: int
    problems: list[str] = field(default_factory=list)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.inner_text()).strip()

    def number(self, selector: str) -> float:
        return float(self.text(selector).replace(",", "").rstrip("%"))


class Browser:
    """Pages of one browser context (its own cookies), each visit watched."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def open(self, url: str) -> Visit:
        page = self.context.new_page()
        visit = Visit(page, 0)
        page.on("console", lambda m: m.type == "error" and visit.problems.append(m.text))
        page.on("pageerror", lambda e: visit.problems.append(f"script error: {e}"))
        page.on("requestfailed", lambda r: visit.problems.append(f"{r.url}: {r.failure}"))
        answer = page.goto(url)
        visit.status = answer.status if answer is not None else 0
        return visit

    def follow(self, visit: Visit, action: Any) -> Visit:
        """Do ``action`` (a click, a submit) on the page and wait for the page it loads
        (whose problems are its own)."""
        visit.problems.clear()
        with visit.page.expect_navigation() as navigation:
            action()
        visit.status = navigation.value.status
        visit.page.wait_for_load_state()
        return visit


def assert_clean(visit: Visit) -> None:
    """Loaded, nothing refused or failed, every chart drawn."""
    assert visit.status == 200, visit.page.content()[:2000]
    assert visit.problems == []
    broken = visit.page.eval_on_selector_all(
        "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).length"
    )
    assert broken == 0


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    (folder / "experiments.yaml").write_text(EXPERIMENT, encoding="utf-8")
    return folder


def plant(api: httpx.Client) -> None:
    """A purchase of a new customer, a withdrawn email consent, three recorded
    deliveries and a conversion on one of them: what the pages count."""
    posted = api.post(
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
    consent = {"personalization": True, "channels": {"email": False}}
    assert api.put("/v1/customers/b07/consent", json=consent).status_code == 200
    for customer, channel in (("a00", "email"), ("a01", "email"), ("b02", "app")):
        answer = api.get(
            f"/v1/customers/{customer}/offers", params={"channel": channel, "record": "true"}
        ).json()
        assert answer["recorded"], answer
        if customer == "a00":
            first = answer["offers"][0]
            event = {
                "event_id": "v-1",
                "type": "offer_conversion",
                "customer_id": "a00",
                "item_id": first["item_id"] or first["offer_id"],
                "channel": "email",
                "timestamp": CLOCK,
                "revenue": 7.5,
            }
            assert api.post("/v1/events", json=event).json()["accepted"] == ["v-1"]


@pytest.fixture(scope="module")
def server(two_models: tuple[Path, str, str], folder: Path) -> Iterator[str]:
    """``nbo serve`` without keys (loopback), the planted data posted through the API."""
    settings = {
        "NBO_CLOCK": CLOCK,
        "NBO_CATALOG": str(DEMO_CATALOG),
        "NBO_EXPERIMENTS": str(folder / "experiments.yaml"),
    }
    with running_server(two_models[0], folder / "open.db", folder / "open.log", settings) as run:
        with httpx.Client(base_url=run.base, timeout=30) as api:
            plant(api)
        yield run.base


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Browser(context)
    finally:
        context.close()


def test_the_overview_shows_the_model_customers_and_offers_the_api_gives(
    server: str, browser: Browser
) -> None:
    visit = browser.open(f"{server}/dashboard")
    assert_clean(visit)
    with httpx.Client(base_url=server, timeout=30) as api:
        model = api.get("/v1/model").json()
        profiles = [api.get(f"/v1/customers/{c}").json() for c in EVERYONE]
        catalog = api.get("/v1/catalog").json()
    assert visit.text("#model-version") == model["version"]
    assert visit.number("#model-customers") == model["customers"]
    assert visit.number("#customers-total") == len(EVERYONE)
    stages = Counter(p["stage"] for p in profiles)
    for stage in STAGES:
        assert visit.number(f'td[data-stage="{stage}"]') == stages.get(stage, 0), stage
    live = [o["id"] for o in catalog["offers"] if o["live"]]
    shown = visit.page.eval_on_selector_all(
        "#live-offers tr[data-offer]", "rows => rows.map(r => r.dataset.offer)"
    )
    assert shown == live and "christmas-2011" not in live  # ended in 2011


def test_offers_going_out_counts_what_the_api_recorded(server: str, browser: Browser) -> None:
    visit = browser.open(f"{server}/dashboard/offers?days=7")
    assert_clean(visit)
    with httpx.Client(base_url=server, timeout=30) as api:
        recorded = [
            e
            for c in ("a00", "a01", "b02")
            for e in api.get(f"/v1/customers/{c}/data").json()["events"]
            if e["type"] == "offer_impression"
        ]
    assert len(recorded) > 0
    assert visit.number("#impressions") == len(recorded)
    assert visit.number("#converted") == 1 and visit.number("#revenue") == 7.5
    channels = Counter(e["payload"]["channel"] for e in recorded)
    for channel, count in channels.items():
        assert visit.number(f'#by-channel tr[data-value="{channel}"] td[data-count]') == count
    # Another period through the page's own form.
    visit.page.select_option("#days", "1")
    browser.follow(visit, lambda: visit.page.click("form button[type=submit]"))
    assert_clean(visit)
    assert visit.page.url.endswith("/dashboard/offers?days=1")
    assert visit.number("#impressions") == len(recorded)  # all recorded today


def test_a_customer_lookup_shows_the_offers_the_api_returns(server: str, browser: Browser) -> None:
    visit = browser.open(f"{server}/dashboard/customer")
    assert_clean(visit)
    with httpx.Client(base_url=server, timeout=30) as api:
        for customer in ("a03", "z-posted", "b07"):
            visit.page.fill("#customer_id", customer)
            visit.page.fill("#k", "5")
            browser.follow(visit, lambda: visit.page.press("#customer_id", "Enter"))
            assert_clean(visit)
            profile = api.get(f"/v1/customers/{customer}").json()
            assert visit.text("#stage") == profile["stage"].replace("_", " ")
            for channel in ("email", "app"):
                answer = api.get(
                    f"/v1/customers/{customer}/offers", params={"k": 5, "channel": channel}
                ).json()
                rows = visit.page.eval_on_selector_all(
                    f"#channel-{channel} tr[data-offer]",
                    "rows => rows.map(r => [r.dataset.offer, Number(r.dataset.rank),"
                    " r.querySelector('[data-field=reason]').innerText])",
                )
                expected = [
                    [o["offer_id"], o["rank"], o["reason"]["text"]] for o in answer["offers"]
                ]
                assert rows == expected, (customer, channel)
                if answer["suppressed_reason"]:
                    marked = f'#channel-{channel} [data-suppressed="{answer["suppressed_reason"]}"]'
                    assert visit.page.locator(marked).count() == 1
    # b07 withdrew email consent: nothing on email, offers on the app.
    assert visit.page.locator('#channel-email [data-suppressed="no_channel_consent"]').count() == 1
    assert visit.page.locator("#channel-app tr[data-offer]").count() > 0


def test_the_experiment_and_models_pages_load_from_their_links(
    server: str, browser: Browser, two_models: tuple[Path, str, str]
) -> None:
    visit = browser.open(f"{server}/dashboard")
    browser.follow(visit, lambda: visit.page.click("nav >> text=Experiments"))
    assert_clean(visit)
    browser.follow(visit, lambda: visit.page.click('tr[data-experiment="ranker-test"] a'))
    assert_clean(visit)
    assert visit.page.url.endswith("/dashboard/experiments/ranker-test")
    assert "Sample ratio" in visit.text("#report")
    browser.follow(visit, lambda: visit.page.click("nav >> text=Models"))
    assert_clean(visit)
    with httpx.Client(base_url=server, timeout=30) as api:
        listed = [m["version"] for m in api.get("/v1/models").json()["models"]]
    shown = visit.page.eval_on_selector_all(
        "#versions tr[data-version]", "rows => rows.map(r => r.dataset.version)"
    )
    assert shown == listed and set(listed) >= set(two_models[1:])


def test_the_api_docs_load_their_scripts_from_nbo(server: str, browser: Browser) -> None:
    for path, ready in (("/docs", ".swagger-ui .info"), ("/redoc", "redoc-wrapper, .api-content")):
        visit = browser.open(f"{server}{path}")
        visit.page.wait_for_selector(ready, timeout=20_000)
        assert visit.status == 200 and visit.problems == [], path


@pytest.fixture(scope="module")
def locked_server(models_dir: Path, folder: Path) -> Iterator[str]:
    """``nbo serve`` with API keys."""
    import json

    keys = json.dumps([e.model_dump(mode="json") for e in ENTRIES])
    settings = {"NBO_CLOCK": CLOCK, "NBO_API_KEYS": keys}
    with running_server(models_dir, folder / "locked.db", folder / "locked.log", settings) as run:
        yield run.base


def test_with_keys_the_pages_refuse_a_browser_without_one_and_take_a_read_key(
    locked_server: str, chromium: Any
) -> None:
    anonymous = Browser(chromium.new_context())
    try:
        visit = anonymous.open(f"{locked_server}/dashboard/models")
        assert visit.status == 401
        assert visit.page.locator("#versions").count() == 0
        assert visit.page.locator("form.sign-in").count() == 1
        # A wrong key is refused again; the read key signs in and returns to the page.
        visit.page.fill("#key", READ + "x")
        anonymous.follow(visit, lambda: visit.page.press("#key", "Enter"))
        assert visit.status == 401 and "not recognised" in visit.text("#error-message")
        visit.page.fill("#key", READ)
        anonymous.follow(visit, lambda: visit.page.press("#key", "Enter"))
        assert_clean(visit)
        assert visit.page.url == f"{locked_server}/dashboard/models"
        assert visit.page.locator("#versions tr[data-version]").count() >= 1
        # The cookie opens the other pages, never the API.
        other = anonymous.open(f"{locked_server}/dashboard")
        assert_clean(other)
        assert anonymous.open(f"{locked_server}/v1/model").status == 401
        # Signing out closes the pages again.
        anonymous.follow(other, lambda: other.page.click("text=Sign out"))
        assert other.status == 401 and other.page.locator("form.sign-in").count() == 1
    finally:
        anonymous.context.close()
    # A read key in the header, as a proxy in front of the dashboard would send it.
    with_header = Browser(chromium.new_context(extra_http_headers=bearer(READ)))
    try:
        visit = with_header.open(f"{locked_server}/dashboard")
        assert_clean(visit)
        with httpx.Client(base_url=locked_server, headers=bearer(READ), timeout=30) as api:
            assert visit.text("#model-version") == api.get("/v1/model").json()["version"]
    finally:
        with_header.context.close()
