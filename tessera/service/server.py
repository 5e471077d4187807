"""`tessera api` and `tessera report --serve`: checks that refuse a bad start before any work,
then the search service's app under uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket

from tessera.core.errors import UsageError
from tessera.core.settings import Settings

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keyed: bool) -> None:
    """Refuse to serve the index without API keys anywhere but on a loopback address (the one
    rule for `tessera api` and `tessera report --serve`)."""
    if not keyed and not is_loopback(host):
        raise UsageError(f"serving without API keys would let anyone who reaches {host} read "
                         "the index; that is allowed on loopback addresses only. Set "
                         "TESSERA_API__KEYS, or serve on 127.0.0.1")


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one); a UsageError, with advice, for a
    port this process cannot listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen()
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another "
                         "--port, or stop what holds it") from None
    return sock


def check_port(host: str, port: int) -> None:
    """Refuse, with advice, a port this process cannot listen on."""
    listen(host, port).close()


def serve_api(settings: Settings, host: str, port: int, no_auth: bool = False) -> None:
    """Serve the search API until interrupted."""
    import uvicorn

    from tessera.service.app import create_app

    check_exposure(host, keyed=not no_auth)
    check_port(host, port)
    app = create_app(settings, auth=not no_auth)  # refuses a keyless start before loading
    if no_auth:
        logger.warning("serving WITHOUT API keys on %s:%d (--no-auth): any local process can "
                       "search the index", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False,
                timeout_graceful_shutdown=10)


def serve_report(settings: Settings, sock: socket.socket) -> None:
    """Serve the search service's app, the report page at `/` with it, on a listening socket
    until Ctrl-C. With API keys configured every request needs one; without, check_exposure has
    allowed only a loopback address."""
    import uvicorn

    from tessera.service.app import create_app

    try:
        keyed = bool(settings.api.key_list())
        app = create_app(settings, auth=keyed)
        if not keyed:  # the page's API routes answer too: say so, as `tessera api --no-auth` does
            host, port = sock.getsockname()[:2]
            logger.warning("serving WITHOUT API keys on %s:%d: any local process can search the "
                           "index (set TESSERA_API__KEYS to require keys)", host, port)
        server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False,
                                               timeout_graceful_shutdown=10))
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully on Ctrl-C, then raised it again
    finally:
        sock.close()
