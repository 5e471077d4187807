"""The one place that says how the libraries we drive must behave: offline, quiet, no telemetry.

Applied by every entry point (the CLI, the tests, the benchmarks, a Prefect worker's job) before
Prefect or Hugging Face is imported, since they read these at import. A value already in the
environment wins, so a user can still switch one back.
"""

from __future__ import annotations

import os

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}


def apply_offline_defaults(**extra: str) -> None:
    """Set each default (and `extra`) unless the environment already has it."""
    for key, value in {**OFFLINE_DEFAULTS, **extra}.items():
        os.environ.setdefault(key, value)
