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
