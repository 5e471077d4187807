"""The named reads of the process environment (tessera.core.env): the only place, beside the
settings, that looks at `os.environ` (tests/project/test_layout.py holds the rest of the code to
it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.core import env


def test_prefect_api_url_and_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("CI", "")
    assert env.prefect_api_url() is None and not env.in_ci()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("CI", "true")
    assert env.prefect_api_url() == "http://127.0.0.1:4200/api" and env.in_ci()


def test_defaults_are_written_unless_the_user_set_one(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    assert env.default_prefect_home(tmp_path / "a") == tmp_path / "a"
    assert env.default_prefect_home(tmp_path / "b") == tmp_path / "a"  # the first one stays
    env.default_prefect_logging_level("ERROR")
    env.default_prefect_logging_level("INFO")
    assert env.child_env({})["PREFECT_LOGGING_LEVEL"] == "ERROR"


def test_modal_token_and_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-1")
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("MODAL_CONFIG_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not env.modal_token_in_env()  # both halves, or none
    assert env.modal_config_path() == tmp_path / ".modal.toml"
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-1")
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "m.toml"))
    assert env.modal_token_in_env() and env.modal_config_path() == tmp_path / "m.toml"


def test_a_setting_from_the_environment_uses_the_settings_own_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.setting_variable("embedding.backend") == "TESSERA_EMBEDDING__BACKEND"
    assert env.setting_from_env("embedding.backend") is None  # conftest clears TESSERA_*
    monkeypatch.setenv("TESSERA_EMBEDDING__BACKEND", "modal")
    monkeypatch.setenv("TESSERA_STORE__URL", "")
    assert env.setting_from_env("embedding.backend") == "modal"
    assert env.setting_from_env("store.url") is None  # empty is unset


def test_a_child_gets_this_environment_with_the_extras_on_top(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_TEST_MARK", "parent")
    child = env.child_env({"DBT_PROFILES_DIR": "/p", "TESSERA_TEST_MARK": "child"})
    assert child["DBT_PROFILES_DIR"] == "/p" and child["TESSERA_TEST_MARK"] == "child"
    assert "PATH" in child and env.child_env({})["TESSERA_TEST_MARK"] == "parent"
