"""The consent history through the API: every PUT appended with its time and source,
shown in the data export (when consent was given and withdrawn: GDPR Art. 7(1)), and
erased with the customer."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_export_shows_every_consent_change_and_erasure_deletes_them(
    client: TestClient,
) -> None:
    given = {"personalization": True, "channels": {"email": True}}
    assert client.put("/v1/customers/a00/consent", json=given).status_code == 200
    withdrawn = {"personalization": False, "channels": {"app": False}}
    last = client.put("/v1/customers/a00/consent", json=withdrawn)
    assert last.status_code == 200
    assert client.put("/v1/customers/a01/consent", json=given).status_code == 200

    history = client.get("/v1/customers/a00/data").json()["consent_history"]

    assert [(c["personalization"], c["channels"], c["source"]) for c in history] == [
        (True, {"email": True}, "api"),
        (False, {"app": False, "email": True}, "api"),
    ]
    assert history[0]["changed_at"] <= history[1]["changed_at"] == last.json()["updated_at"]
    assert client.get("/v1/customers/never-seen/data").json()["consent_history"] == []

    assert client.delete("/v1/customers/a00").status_code == 200
    assert client.get("/v1/customers/a00/data").json()["consent_history"] == []
    assert len(client.get("/v1/customers/a01/data").json()["consent_history"]) == 1
