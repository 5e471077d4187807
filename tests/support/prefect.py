"""The session's Prefect test server as a child process sees it, and the `tessera` it runs."""

from __future__ import annotations

from tests.support.paths import REPO

TESSERA = REPO / ".venv" / "bin" / "tessera"


def api_url() -> str:
    """The test server's API URL (conftest's `prefect_server` fixture must be running)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url and url.startswith("http://127.0.0.1"), url
    return str(url)
