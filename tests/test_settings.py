"""Settings: one object from tessera.toml + TESSERA_* variables; errors name key, value, fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.errors import ConfigError
from tessera.settings import load_settings, parse_ttl


def test_example_config_loads_with_paths_relative_to_the_file() -> None:
    settings = load_settings(Path(__file__).parents[1] / "tessera.toml")
    src = settings.source("examples")
    assert src.path.is_dir()
    assert src.ttl_seconds == 30 * 86400
    assert settings.store.kind == "edge"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('collection = "from-file"\n[store]\nkind = "edge"\n')
    monkeypatch.setenv("TESSERA_COLLECTION", "from-env")
    monkeypatch.setenv("TESSERA_STORE__URL", "http://q:6333")
    settings = load_settings(cfg)
    assert settings.collection == "from-env"
    assert settings.store.url == "http://q:6333"


def test_api_key_is_secret_and_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_STORE__API_KEY", "s3cr3t-key")
    settings = load_settings(None, home=str(tmp_path))
    assert "s3cr3t-key" not in repr(settings)
    assert "s3cr3t-key" not in settings.model_dump_json()
    assert settings.store.api_key is not None
    assert settings.store.api_key.get_secret_value() == "s3cr3t-key"


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ('[[sources]]\nname = "a"\npath = "."\nttl = "7 fortnights"\n', "sources.0.ttl", "7d"),
        ('[embedding]\nbakend = "local"\n', "embedding.bakend", "unknown key"),
        ('[embedding]\nbackend = "gpu"\n', "embedding.backend", "local"),
        ('[[sources]]\nname = "a b"\npath = "."\n', "sources.0.name", "letters"),
        ('[[sources]]\nname = "a"\n', "sources.0.path", "required"),
    ],
)
def test_config_errors_name_key_value_and_fix(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert err.value.key == key
    assert fragment in str(err.value)


def test_duplicate_source_names_and_unknown_source_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "dupe.toml"
    cfg.write_text('[[sources]]\nname = "a"\npath = "."\n[[sources]]\nname = "a"\npath = "."\n')
    with pytest.raises(ConfigError, match="unique"):
        load_settings(cfg)
    cfg.write_text('[[sources]]\nname = "a"\npath = "."\n')
    with pytest.raises(ConfigError, match="known sources: a"):
        load_settings(cfg).source("b")


def test_missing_config_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("collection = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


@pytest.mark.parametrize(("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800),
                                                ("none", None), ("2w", 1209600), (None, None)])
def test_parse_ttl(text: str | None, seconds: int | None) -> None:
    assert parse_ttl(text) == seconds
