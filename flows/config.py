"""Settings as entry points need them: the config file and TESSERA_* variables, plus the secrets
that live in Prefect (a Secret block named by `store.api_key_block`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tessera.core.errors import ConfigError
from tessera.core.settings import Settings, load_settings


def load(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings with the store's API key filled in from its Secret block when one is named."""
    settings = load_settings(config, **overrides)
    store = settings.store
    if store.api_key is None and store.api_key_block:
        key = secret_block(store.api_key_block)
        settings = settings.model_copy(update={"store": store.model_copy(update={"api_key": key})})
    api = settings.api
    if api.keys is None and api.keys_block:
        keys = secret_block(api.keys_block, "api.keys_block", "TESSERA_API__KEYS")
        settings = settings.model_copy(update={"api": api.model_copy(update={"keys": keys})})
    return settings


def secret_block(name: str, setting: str = "store.api_key_block",
                 variable: str = "TESSERA_STORE__API_KEY") -> SecretStr:
    """The value of a Prefect Secret block; a ConfigError that says why when it cannot be read."""
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name)
        return SecretStr(str(block.get()))
    except ValueError:
        raise ConfigError(setting, name, "no Prefect Secret block with that name; "
                          "create it in the UI (Blocks > Secret) or with `prefect block create`"
                          ) from None
    except Exception as exc:  # noqa: BLE001 - the Prefect API unreachable, a bad block document
        raise ConfigError(setting, name,
                          f"the Prefect Secret block could not be read ({type(exc).__name__}); "
                          "check that PREFECT_API_URL points at a running Prefect server, or set "
                          f"{variable} instead") from None
