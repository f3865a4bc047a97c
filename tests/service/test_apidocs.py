"""The interactive API docs load their scripts from nbo itself, never from a CDN: a
deployment without internet still shows them (the browser test, tests/service/dashboard,
opens them in Chromium)."""

from __future__ import annotations

import io
import re

from fastapi.testclient import TestClient
from support import access_lines

from nbo.service.apidocs import ASSETS, ASSETS_DIR


def test_the_docs_pages_load_only_local_scripts(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        answer = client.get(page)
        assert answer.status_code == 200
        links = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
        assert links, page
        assert all(link.startswith("/") and not link.startswith("//") for link in links), links
        assert "http" not in answer.text.replace("http-equiv", ""), answer.text
        for link in links:
            served = client.get(link)
            assert served.status_code == 200, link
            assert served.content, link


def test_the_scripts_are_the_packaged_files_with_their_licences(client: TestClient) -> None:
    versions = (ASSETS_DIR / "VERSIONS").read_text(encoding="utf-8").split()
    assert versions[0] == "swagger-ui-dist" and versions[1].startswith("5.")
    assert versions[2] == "redoc" and versions[3].startswith("2.")
    for licence in ("swagger-ui-dist.LICENSE", "NOTICE", "redoc.LICENSE"):
        assert (ASSETS_DIR / licence).stat().st_size > 0
    script = client.get(f"{ASSETS}/redoc.standalone.js")
    assert script.content == (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_a_script_is_labelled_by_its_folder(client: TestClient, logs: io.StringIO) -> None:
    assert client.get(f"{ASSETS}/swagger-ui.css").status_code == 200
    assert client.get(f"{ASSETS}/no-such-file.js").status_code == 404
    assert [line["route"] for line in access_lines(logs)] == [ASSETS, ASSETS]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_the_events_body_is_described_by_the_event_models(client: TestClient) -> None:
    """A generated client knows the events it may post: the body is one of the four
    event models or a batch of them (the route itself reads a plain object)."""
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    one, batch = body["schema"]["anyOf"]
    assert set(one["discriminator"]["mapping"]) == {
        "purchase",
        "offer_impression",
        "offer_click",
        "offer_conversion",
    }
    assert batch == {"$ref": "#/components/schemas/EventBatch"}
    schemas = doc["components"]["schemas"]
    purchase = schemas["PurchaseEvent"]
    assert set(purchase["required"]) == {"event_id", "customer_id", "timestamp", "type", "items"}
    assert purchase["additionalProperties"] is False
    assert schemas["ImpressionEvent"]["properties"]["channel"]["anyOf"][0]["enum"] == [
        "email",
        "app",
    ]
    # Every reference in the document names a schema it holds.
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas


# What an operation's description must not hold: the engineering notes of its handler's
# docstring (how it runs, what was measured, which module does what), cut at ``\f``.
ENGINEERING = re.compile(
    r"async def|plain ``def``|thread pool|event loop|req/s|wrk\b|``nbo\.|docs/benchmarks"
    r"|it was a 500|used to name|before, the fields"
)


def test_operation_descriptions_hold_no_engineering_notes(client: TestClient) -> None:
    """The offers operation's description published "``async def`` on purpose ... wrk
    ... 727 req/s"; profile, events, reload and others alike: FastAPI takes the whole
    docstring unless cut with a form feed."""
    document = client.get("/openapi.json").json()
    described = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            text = operation.get("description", "")
            assert not ENGINEERING.search(text), (method, path, text)
            assert "\f" not in text
            described += bool(text)
    assert described >= 12
    offers = document["paths"]["/v1/customers/{customer_id}/offers"]["get"]["description"]
    assert offers.startswith("Ranked offers for a customer") and "write" in offers
