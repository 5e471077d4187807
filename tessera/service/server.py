"""`tessera api`: checks that refuse a bad start before any work, then uvicorn."""

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


def check_port(host: str, port: int) -> None:
    """Refuse, with advice, a port this process cannot listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another "
                             "--port, or stop what holds it") from None


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
