"""The one place that says how the libraries we drive must behave: offline, quiet, no telemetry.

Applied by every entry point (the CLI, the tests, the benchmarks, a Prefect worker's job) before
Prefect or Hugging Face is imported, since they read these at import. A value already in the
environment wins, so a user can still switch one back.

Beside the settings (which read `TESSERA_*`), this is the one module that reads or writes the
process environment: the rest of the code calls the named functions below.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def prefect_api_url() -> str | None:
    """The Prefect server this process talks to, if one is configured."""
    return os.environ.get("PREFECT_API_URL") or None


def in_ci() -> bool:
    """True under a CI runner (no progress bars there)."""
    return bool(os.environ.get("CI"))


def default_prefect_home(path: Path) -> Path:
    """Prefect's state at `path` unless PREFECT_HOME says otherwise; the home in effect."""
    return Path(os.environ.setdefault("PREFECT_HOME", str(path)))


def default_prefect_logging_level(level: str) -> None:
    """Prefect's log level, unless the user set one (Prefect reads it at import)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)


def modal_token_in_env() -> bool:
    """True when both halves of a Modal token are in the environment."""
    return bool(os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"))


def modal_config_path() -> Path:
    """Where Modal keeps its token file (MODAL_CONFIG_PATH, else ~/.modal.toml)."""
    return Path(os.environ.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")


def setting_variable(key: str) -> str:
    """The variable that sets a dotted settings key: "store.url" -> TESSERA_STORE__URL."""
    from tessera.core.settings import variable_for  # settings imports this module at load

    return variable_for(key)


def setting_from_env(key: str) -> str | None:
    """The value the environment gives a settings key (None when unset or empty)."""
    return os.environ.get(setting_variable(key)) or None


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus `extra`, for a child process."""
    return {**os.environ, **extra}


def otel_variables() -> dict[str, str]:
    """The OpenTelemetry variables set in this process (`OTEL_*`, empty ones dropped): the
    SDK reads its own; these decide whether and where tessera.core.telemetry exports."""
    return {k: v for k, v in os.environ.items() if k.startswith("OTEL_") and v}
