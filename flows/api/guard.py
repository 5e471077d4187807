"""API keys, per-key rate limits and the request body limit.

Keys are compared in constant time against every configured key (the time does not say which
key, or how much of one, matched). A key is identified afterwards only by its position in the
list: no key, no hash of a key, is ever logged, labelled or written to an event.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANONYMOUS = -1  # the bucket shared by requests when auth is off


class KeyGuard:
    """Bearer-key checks and a token bucket per key."""

    def __init__(self, keys: list[str], rate: float, burst: int) -> None:
        self._keys = [k.encode() for k in keys]
        self.rate, self.burst = rate, burst
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when no key is configured (the app then runs with auth off)."""
        return bool(self._keys)

    def identify(self, authorization: str | None) -> int | None:
        """The index of the key in `Authorization: Bearer KEY`, or None (missing or wrong)."""
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        found = None
        for index, key in enumerate(self._keys):
            # Every key is compared, found or not, so the time does not depend on which matched.
            if hmac.compare_digest(given, key) and given:
                found = index
        return found

    def take(self, key: int) -> float:
        """Spend a token from this key's bucket: 0.0 if allowed, else seconds until one is."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads it.

    It trusts no Content-Length: the body is read (up to the limit) and replayed to the app, so a
    chunked upload cannot slip past. Search bodies are small; images are capped by the limit.
    """

    def __init__(self, app: ASGIApp, limit: int, on_reject: Callable[[], None] | None = None) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([b"".join(chunks)], None, receive), send)

    async def _reject(self, send: Send) -> None:
        if self.on_reject:
            self.on_reject()
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes "
                                     "(api.max_body_bytes); send a smaller image"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(bodies: list[bytes], then: Message | None, rest: Receive) -> Receive:
    """A receive() that hands out the buffered body, then what the client sends next."""
    pending: list[Message] = [{"type": "http.request", "body": b, "more_body": False}
                              for b in bodies]
    if then is not None:
        pending.append(then)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await rest()

    return receive
