"""The API's docs at `/docs`: Swagger UI from the copy shipped in the package, so the page loads
with no network. FastAPI's own `/docs` fetches Swagger UI from a CDN, a blank page offline."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_UI_VERSION = "5.36.0"  # swagger-ui-dist on npm; see static/swagger/README.md
SWAGGER_DIR = Path(__file__).parent / "static" / "swagger"
SWAGGER_PREFIX = "/static/swagger"
DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI's files and the `/docs` page over `app.openapi_url`. The app is made
    with `docs_url=None` (and no ReDoc, which would need a CDN too)."""
    app.mount(SWAGGER_PREFIX, StaticFiles(directory=SWAGGER_DIR), name="swagger-ui")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        """Swagger UI over this app's OpenAPI schema, every URL on this server."""
        root = request.scope.get("root_path", "").rstrip("/")
        assets = f"{root}{SWAGGER_PREFIX}"
        version = f"?v={SWAGGER_UI_VERSION}"  # a browser's cached copy is not reused on upgrade
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API docs",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js{version}",
            swagger_css_url=f"{assets}/swagger-ui.css{version}",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
            # Swagger UI would send the schema to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None})

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        """The page an OAuth2 sign-in in Swagger UI returns to."""
        return get_swagger_ui_oauth2_redirect_html()
