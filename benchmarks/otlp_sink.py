"""A stand-in OTLP/HTTP collector for the benchmarks: answers every POST with 200 and counts
what it received. Its own process, so its threads never hold the load client's GIL.

    python -m benchmarks.otlp_sink     # prints its port; on SIGTERM, what it received (JSON)
"""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
from typing import Any

RECEIVED = {"requests": 0, "bytes": 0}


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        RECEIVED["requests"] += 1
        RECEIVED["bytes"] += length
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class Sink:
    """The sink as a child process: `url` to export to, `stop()` returns what it received."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.otlp_sink"],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return dict(json.loads(out))


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(server.server_address[1], flush=True)
    server.serve_forever()
    print(json.dumps(RECEIVED), flush=True)


if __name__ == "__main__":
    main()
