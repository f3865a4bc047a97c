"""The interactive API docs (``/docs``, ``/redoc``) with their scripts served by nbo.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN, so they are blank on a
deployment without internet. The same pages are built here with FastAPI's page
functions, pointing at copies of the official npm packages (``swagger-ui-dist`` 5 and
``redoc`` 2, the versions FastAPI's defaults follow) kept in ``static/apidocs`` with
their licences; ``make api-docs-assets`` refreshes them (versions in ``VERSIONS``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS = "/docs"
REDOC = "/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Where the scripts are served: open like the pages (they hold no data).
ASSETS = "/static/apidocs"
ASSETS_DIR = Path(__file__).parent / "static" / "apidocs"


def install_api_docs(app: FastAPI) -> None:
    """``/docs``, its OAuth2 redirect and ``/redoc`` on local scripts. The app must be
    built with ``docs_url=None, redoc_url=None`` (else FastAPI adds its CDN pages)."""
    app.mount(ASSETS, StaticFiles(directory=ASSETS_DIR), name="apidocs")
    title = app.title

    def url(request: Request, path: str) -> str:
        # Behind a proxy that serves nbo under a prefix (``root_path``), links keep it.
        return f"{request.scope.get('root_path', '')}{path}"

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=url(request, OAUTH2_REDIRECT),
            swagger_js_url=url(request, f"{ASSETS}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{ASSETS}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{ASSETS}/favicon-32x32.png"),
            # No badge from the online validator: it would be a request to the internet.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    async def redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{title} - ReDoc",
            redoc_js_url=url(request, f"{ASSETS}/redoc.standalone.js"),
            redoc_favicon_url=url(request, f"{ASSETS}/favicon-32x32.png"),
            with_google_fonts=False,
        )

    app.add_route(DOCS, swagger, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, redirect, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
