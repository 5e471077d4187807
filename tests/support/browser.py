"""Debian's Chromium for the browser tests (Playwright drives it; no browser download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
                None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on this machine "
                                    "(apt-get install chromium; `make test` does it as root)")


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """Into tmp_path, and also into $WEB_PAGE_SCREENSHOT_DIR when set (for a report)."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    keep = os.environ.get("WEB_PAGE_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(keep) / name)
