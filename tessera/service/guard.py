"""API keys, per-key rate limits, the request body limit and the budget of body bytes in flight.

Keys are compared in constant time against every configured key (the time does not say which
key, or how much of one, matched). A key is identified afterwards only by its position in the
list: no key, no hash of a key, is ever logged, labelled or written to an event. The key is
checked from the headers before any of the body is read, so a caller without a key costs the
server no memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import Match

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANONYMOUS = -1  # the bucket shared by requests when auth is off
UNAUTHORIZED = ("missing or invalid API key; send `Authorization: Bearer KEY` with a key from "
                "TESSERA_API__KEYS")
# The report page: a browser signs in with HTTP Basic (any user name, the key as password).
PAGE_PATHS = frozenset({"/", "/index.html"})
PAGE_UNAUTHORIZED = ("missing or invalid API key: sign in with any user name and a key from "
                     "TESSERA_API__KEYS as the password, or send `Authorization: Bearer KEY`")
PAGE_CHALLENGE = 'Basic realm="Tessera report", charset="UTF-8"'
# Routes anyone may call: probes, metrics and the API's docs (none of them reads a body), and
# the Swagger UI files the docs page loads (the same for everyone, nothing about the data).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/openapi.json"})
OPEN_PREFIXES = ("/static/swagger/",)
# Bodies held at once, across requests, in units of api.max_body_bytes: room for a few image
# queries side by side, and a ceiling (64 MiB by default) on what concurrent uploads can pin.
BODY_BUDGET_BODIES = 4


def challenge(page: bool) -> tuple[str, str]:
    """The message and the WWW-Authenticate header of a 401: the page's asks a browser for the
    key (HTTP Basic), the API's names the Bearer scheme."""
    return (PAGE_UNAUTHORIZED, PAGE_CHALLENGE) if page else (UNAUTHORIZED, "Bearer")


def as_bearer(authorization: str | None) -> str | None:
    """`Basic base64(user:KEY)`, what a browser sends, as `Bearer KEY`; anything else as is."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except ValueError:  # bad base64 (binascii.Error) or bad UTF-8 (UnicodeDecodeError)
        return None
    return "Bearer " + decoded.partition(":")[2]


class KeyGuard:
    """Bearer-key checks and a token bucket per key."""

    def __init__(self, keys: list[str], rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = [k.encode() for k in keys]
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when no key is configured (the app then runs with auth off)."""
        return bool(self._keys)

    def key_id(self, index: int) -> str:
        """What the events record for the key at `index`: `key-` and the first 8 hex digits of
        its sha256 (stable across restarts, says which key without revealing it), or
        `anonymous` when auth is off."""
        if index == ANONYMOUS or not self._keys:
            return "anonymous"
        return "key-" + hashlib.sha256(self._keys[index]).hexdigest()[:8]

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
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class KeyCheck:
    """ASGI middleware: a request without a valid key gets 401 from its headers alone.

    It sits in front of the body reader, so a keyless upload is never read. Routes in
    OPEN_PATHS and CORS preflights pass; the route dependency still identifies the key and
    spends its rate limit. The page (PAGE_PATHS) also takes the key as HTTP Basic, and its 401
    asks a browser for it. The route is matched first, only so that metrics and request events
    name its template as they do for every other answer.
    """

    def __init__(self, app: ASGIApp, guard: KeyGuard, router: Any,
                 on_reject: Callable[[], None] | None = None) -> None:
        self.app, self.guard, self.router, self.on_reject = app, guard, router, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.guard.enabled or scope["method"] == "OPTIONS"
                or _path(scope) in OPEN_PATHS or _path(scope).startswith(OPEN_PREFIXES)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        page = _path(scope) in PAGE_PATHS
        if self.guard.identify(as_bearer(given) if page else given) is not None:
            await self.app(scope, receive, send)
            return
        for route in self.router.routes:
            found, child = route.matches(scope)
            if found is not Match.NONE and "route" in child:
                scope["route"] = child["route"]
                break
        if self.on_reject:
            self.on_reject()
        detail, asks = challenge(page)
        await _answer(send, 401, detail, [(b"www-authenticate", asks.encode())])


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads it, and
    one that would take the bodies in flight past `budget` bytes gets 503 with Retry-After.

    It trusts no Content-Length: the body is read (up to the limit) and replayed to the app, so a
    chunked upload cannot slip past. A declared length is reserved before any byte is read; bytes
    beyond it are reserved as they come; all of it is given back when the request is answered.
    Over budget is refused at once rather than queued: a queue would hold the connection and its
    socket buffers anyway, and a client told Retry-After backs off where a waiting one does not.
    """

    def __init__(self, app: ASGIApp, limit: int, budget: int | None = None,
                 on_reject: Callable[[], None] | None = None,
                 on_busy: Callable[[], None] | None = None) -> None:
        self.app, self.limit, self.on_reject, self.on_busy = app, limit, on_reject, on_busy
        self.budget = budget if budget is not None else BODY_BUDGET_BODIES * limit
        # Bytes reserved by requests in progress. Only the event loop's thread touches it, and
        # never across an await between the check and the change, so it needs no lock.
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        size = int(declared) if declared is not None and declared.isdigit() else 0
        if size > self.limit:
            await self._reject(send)
            return
        reserved = 0
        try:
            if not self._reserve(size):
                await self._busy(send)
                return
            reserved = size
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
                if size > reserved:
                    if not self._reserve(size - reserved):
                        await self._busy(send)
                        return
                    reserved = size
                chunks.append(body)
                if not message.get("more_body", False):
                    break
            await self.app(scope, _replay([b"".join(chunks)], None, receive), send)
        finally:
            self.in_flight -= reserved

    def _reserve(self, size: int) -> bool:
        """Count `size` more bytes in flight, if the budget has room for them."""
        if self.in_flight + size > self.budget:
            return False
        self.in_flight += size
        return True

    async def _reject(self, send: Send) -> None:
        if self.on_reject:
            self.on_reject()
        await _answer(send, 413, f"request body larger than {self.limit} bytes "
                                 "(api.max_body_bytes); send a smaller image",
                      [(b"connection", b"close")])

    async def _busy(self, send: Send) -> None:
        if self.on_busy:
            self.on_busy()
        await _answer(send, 503, f"the server holds {self.budget} bytes of request bodies "
                                 "already; retry after the delay",
                      [(b"retry-after", b"1"), (b"connection", b"close")])


def _path(scope: Scope) -> str:
    """The request's path below the app's root path."""
    path, root = scope["path"], scope.get("root_path", "")
    return str(path[len(root):] if root and path.startswith(root) else path)


async def _answer(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON {"detail"} answer, as the app's own errors are shaped."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
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
