"""`/docs` with the network cut off: Swagger UI's files come from the package, served by the
app itself, so the page renders with no request leaving loopback (Debian's Chromium through
Playwright; skips only where no Chromium is installed)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from tessera.core.settings import load_settings
from tessera.service.app import create_app
from tessera.service.docs import SWAGGER_DIR, SWAGGER_UI_VERSION
from tests.support.browser import CHROMIUM, needs_chromium, screenshot
from tests.support.servers import Served


@pytest.fixture
def served(make_config: Callable[..., Path]) -> Iterator[Served]:
    """The API with keys on, over an empty home (the docs need no index)."""
    settings = load_settings(make_config())
    api = settings.api.model_copy(update={"keys": SecretStr("tk-docs-test-key-0123456789")})
    server = Served(create_app(settings.model_copy(update={"api": api})))
    try:
        yield server
    finally:
        server.stop()


def test_docs_page_names_only_this_server(served: Served) -> None:
    """Every URL the page loads is a path on this server, and each answers without a key."""
    with served.client(key=None) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:href|src)="([^"]+)"|url: '([^']+)'""", page.text)
        paths = [u for pair in urls for u in pair if u]
        assert len(paths) == 4, paths  # css, favicon, js, the schema
        assert all(p.startswith("/") and not p.startswith("//") for p in paths), paths
        answers = {p: client.get(p) for p in paths}
    assert {p: r.status_code for p, r in answers.items()} == dict.fromkeys(paths, 200)
    (bundle,) = [r for p, r in answers.items() if p.startswith("/static/swagger/swagger-ui-bundle")]
    assert bundle.text.startswith("/*!")
    assert '"validatorUrl": null' in page.text  # no schema sent to validator.swagger.io


def test_the_vendored_copy_carries_its_licence_and_version() -> None:
    readme = (SWAGGER_DIR / "README.md").read_text(encoding="utf-8")
    assert f"**{SWAGGER_UI_VERSION}**" in readme
    assert "Apache License" in (SWAGGER_DIR / "LICENSE").read_text(encoding="utf-8")
    assert (SWAGGER_DIR / "swagger-ui-bundle.js.LICENSE.txt").is_file()


@needs_chromium
def test_docs_render_offline_in_chromium(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    left: list[str] = []
    failed: list[str] = []
    requested: list[str] = []

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.route("**/*", loopback_only)
            page.on("request", lambda r: requested.append(r.url))
            page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
            page.goto(served.url + "/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            title = page.locator(".info .title").inner_text()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            screenshot(page, tmp_path, "api-docs.png")
        finally:
            browser.close()
    assert left == [] and failed == [], (left, failed)
    assert any("/static/swagger/swagger-ui-bundle.js?v=" in u for u in requested)
    assert title.startswith("Tessera search")
    assert "/v1/search" in [p.replace("\u200b", "") for p in paths]

