"""Nothing unauthenticated on the network: the report page's host check and keys, the API's key
check before any body is read and its budget of body bytes in flight, and source-relative uris."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tessera.core.settings import Settings, load_settings
from tessera.service.app import create_app
from tessera.service.schemas import SearchRequest
from tessera.service.search import SearchQuery, run_search
from tessera.service.service import SearchService
from tessera.service.web import thumbnail_of
from tests.support.config import write_config
from tests.support.paths import EXAMPLES
from tests.support.servers import Served

KEY = "tk-guard-3c0ffee4b1d5"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The sample corpus ingested (torch runtime: the session's model), and an image source
    declared but not ingested (its file is there for the thumbnail check)."""
    from PIL import Image

    from tessera.ingest.run import run_ingest

    base = tmp_path_factory.mktemp("guards")
    shutil.copytree(EXAMPLES, base / "corpus")
    (base / "pics").mkdir()
    Image.new("RGB", (40, 30), "red").save(base / "pics" / "red.png")
    (base / "secret.png").write_bytes((base / "pics" / "red.png").read_bytes())
    config = write_config(base / "tessera.toml", {"home": str(base / "home"), "collection": "g"},
                          {"embedding": {"runtime": "torch", "device": "cpu"}},
                          [{"name": "docs", "path": str(base / "corpus")},
                           {"name": "pics", "kind": "images", "modality": "image",
                            "path": str(base / "pics")}])
    settings = load_settings(config)
    run_ingest(settings, sources=["docs"])
    return settings


def _with(settings: Settings, **api: Any) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


# ------------------------------------------------------------ 1. the report page on a network


def test_report_serves_a_network_host_only_with_keys_and_then_requires_them(
        indexed: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tessera.cli.main import main

    config = tmp_path / "c.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\ncollection = "g"\n')
    with socket.socket() as busy:  # were the host let through, the bind would fail, not hang
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["report", "--config", str(config), "--serve", "--host", "0.0.0.0",
                     "--port", port]) == 2
        refused = capsys.readouterr().err
        assert main(["api", "--config", str(config), "--no-auth", "--host", "0.0.0.0",
                     "--port", port]) == 2
        assert capsys.readouterr().err == refused  # one rule, one message
        monkeypatch.setenv("TESSERA_API__KEYS", KEY)
        assert main(["report", "--config", str(config), "--serve", "--host", "0.0.0.0",
                     "--port", port]) == 2
        keyed = capsys.readouterr().err
    assert "loopback" in refused and "TESSERA_API__KEYS" in refused
    assert len(refused.strip().splitlines()) == 1
    assert not (tmp_path / "home").exists()  # refused before anything was opened
    assert "loopback" not in keyed and "--port" in keyed and KEY not in keyed

    server = Served(create_app(_with(indexed, keys=SecretStr(KEY))))  # what --serve runs
    basic = "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()
    try:
        with server.client(key=None) as client:
            missing = client.get("/", params={"q": "tides"})
            wrong = client.get("/", params={"q": "tides"}, headers={"Authorization": "Bearer no"})
            bearer = client.get("/", params={"q": "tides"},
                                headers={"Authorization": f"Bearer {KEY}"})
            browser = client.get("/", params={"q": "tides"}, headers={"Authorization": basic})
            # The page's sign-in opens the page only: the API still takes Bearer keys alone.
            api = client.post("/v1/search", json={"query": "tides"},
                              headers={"Authorization": basic})
    finally:
        server.stop()
    assert missing.status_code == wrong.status_code == api.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert api.headers["www-authenticate"] == "Bearer"
    assert "tides.txt" not in missing.text and KEY not in missing.text
    assert bearer.status_code == browser.status_code == 200
    assert 'data-doc-id="docs/tides.txt"' in bearer.text


# -------------------------------------------------------- 2. keys before bodies, bytes in flight


class _Call:
    """One HTTP request straight into the ASGI app, counting the body bytes the app takes."""

    def __init__(self, key: str | None, chunks: list[bytes], declared: int | None = None,
                 hold: asyncio.Event | None = None) -> None:
        self.headers = [(b"content-type", b"application/json")]
        if key:
            self.headers.append((b"authorization", f"Bearer {key}".encode()))
        if declared is not None:
            self.headers.append((b"content-length", str(declared).encode()))
        self.chunks, self.hold = list(chunks), hold
        self.read, self.status = 0, 0
        self.response_headers: dict[str, str] = {}
        self.reading = asyncio.Event()  # set once the app has taken its first chunk

    async def receive(self) -> dict[str, Any]:
        if not self.chunks:
            return {"type": "http.disconnect"}  # the client sent everything, then went away
        body = self.chunks.pop(0)
        self.read += len(body)
        self.reading.set()
        if self.chunks and self.hold is not None:
            await self.hold.wait()  # a slow client: the rest of its body comes later
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_headers = {k.decode(): v.decode() for k, v in message["headers"]}

    async def run(self, app: Any) -> _Call:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/search",
                 "raw_path": b"/v1/search", "query_string": b"", "root_path": "",
                 "headers": self.headers, "client": ("127.0.0.1", 5000),
                 "server": ("127.0.0.1", 8000)}
        await app(scope, self.receive, self.send)
        return self


def test_keyless_bodies_are_never_read_and_bodies_in_flight_are_bounded(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "t.toml", {"home": str(tmp_path / "home")}, {}, [])
    settings = load_settings(config)
    big = [b"x" * 65536] * 16  # 1 MiB, under the default body limit

    async def keyless() -> list[_Call]:
        app = create_app(_with(settings, keys=SecretStr(KEY)))
        return [await _Call(None, big, declared=16 * 65536).run(app),
                await _Call("tk-wrong", big).run(app)]

    for call in asyncio.run(keyless()):
        assert call.status == 401 and call.read == 0
        assert call.response_headers["www-authenticate"] == "Bearer"

    async def crowded() -> tuple[list[_Call], _Call, _Call, _Call]:
        # Bodies of up to 1 KiB, at most 4 KiB of them in flight.
        app = create_app(_with(settings, keys=SecretStr(KEY), max_body_bytes=1024))
        hold = asyncio.Event()
        slow = [_Call(KEY, [b"x" * 512, b"x" * 512], declared=1024, hold=hold) for _ in range(4)]
        tasks = [asyncio.create_task(call.run(app)) for call in slow]
        for call in slow:
            await call.reading.wait()
        declared = await _Call(KEY, [b"x" * 1024], declared=1024).run(app)
        streamed = await _Call(KEY, [b"x" * 512, b"x" * 512]).run(app)
        hold.set()
        await asyncio.gather(*tasks)
        after = await _Call(KEY, [b"x" * 1024], declared=1024).run(app)
        return slow, declared, streamed, after

    slow, declared, streamed, after = asyncio.run(crowded())
    assert [c.status for c in slow] == [422] * 4  # read whole, then refused as not JSON
    assert declared.status == streamed.status == 503
    assert declared.read == 0 and streamed.read <= 1024
    assert int(declared.response_headers["retry-after"]) >= 1
    assert after.status == 422  # the budget came back when the slow requests finished


# ----------------------------------------------------------------- 3. uris relative to sources


def test_uris_are_source_relative_unless_absolute_uris_is_set(indexed: Settings) -> None:
    corpus = indexed.sources[0].path
    answer = run_search(indexed, SearchQuery(text="why do the tides rise and fall", k=6))
    uris = {r["doc_id"]: r["uri"] for r in answer["results"]}
    assert uris["docs/tides.txt"] == "docs:tides.txt"
    assert any(u.startswith("docs:recipes.jsonl#line=") for u in uris.values())
    assert not any(str(corpus) in u or u.startswith("/") for u in uris.values())

    service = SearchService(indexed)
    try:
        served, _ = service.search(SearchRequest(query="tides rise and fall", k=1))
        document = service.document("docs/tides.txt")
    finally:
        service.close()
    assert served["results"][0]["uri"] == document["uri"] == "docs:tides.txt"

    absolute = run_search(_with(indexed, absolute_uris=True),
                          SearchQuery(text="why do the tides rise and fall", k=1))
    assert absolute["results"][0]["uri"] == str(corpus / "tides.txt")

    # The report page still finds an image hit's file, only inside its source's root.
    image = {"source": "pics", "modality": "image"}
    pics = indexed.sources[1].path
    assert thumbnail_of(indexed, {**image, "uri": "pics:red.png"}) is not None
    assert thumbnail_of(indexed, {**image, "uri": "pics:../secret.png"}) is None
    assert thumbnail_of(indexed, {**image, "uri": str(pics / "red.png")}) is None
    assert thumbnail_of(_with(indexed, absolute_uris=True),
                        {**image, "uri": str(pics / "red.png")}) is not None
