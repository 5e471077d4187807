"""Cold start, measured where users feel it: how long a serving process (`tessera api`, `tessera
mcp`, the Modal `api` function, which runs the same app) took from its own start to ready, and
how long its first search took. Each is a `tessera_startup_seconds{phase}` gauge and a
`service_starts` event, so the marts keep the history across restarts and deploys.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from pathlib import Path
from typing import Any

from tessera.core.events import EventLog, utcnow
from tessera.service.status import started_at

logger = logging.getLogger(__name__)


def settle_heap() -> None:
    """Collect once, then move every object that survived start-up (modules, the model, the
    engine's bindings: hundreds of thousands of objects) out of the collector's reach.

    Otherwise each full collection walks them all while the process answers searches: in a
    process holding the test suite's imports, one gen-2 collection stopped the server for 0.4 to
    1 s, so one search in a thousand took that long. Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


class StartupClock:
    """Records `ready` once and `first_search` once, for one serving process."""

    def __init__(self, events_dir: Path, interface: str, run_id: str,
                 gauge: Any = None) -> None:
        import os

        self.started = started_at(os.getpid()) or time.time()  # the process, not this object
        self.interface = interface
        self.gauge = gauge
        # One log for both rows: its files are numbered per instance, so a second instance with
        # the same run id would write over the first one's file.
        self._log = EventLog(events_dir, run_id)
        self._searched = False
        self._lock = threading.Lock()

    def ready(self) -> float:
        """The process is ready to answer: seconds since it started, recorded; its heap settled."""
        seconds = time.time() - self.started
        self._record("ready", seconds)
        settle_heap()
        return seconds

    @property
    def waiting_for_first_search(self) -> bool:
        """True until a search was recorded (callers skip the call, and its thread hop, after)."""
        return not self._searched

    def searched(self, seconds: float) -> None:
        """A search was answered in `seconds`; the first one is recorded."""
        with self._lock:
            if self._searched:
                return
            self._searched = True
        self._record("first_search", seconds)

    def _record(self, phase: str, seconds: float) -> None:
        if self.gauge is not None:
            self.gauge.labels(phase).set(seconds)
        self._log.add("service_starts", interface=self.interface, phase=phase, seconds=seconds,
                      recorded_at=utcnow())
        try:
            self._log.flush()
        except OSError as exc:  # a full or read-only home: the service still answers
            logger.warning("could not record the %s time (%.2f s): %s", phase, seconds, exc)
