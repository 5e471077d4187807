"""Settings: one object from tessera.toml + TESSERA_* variables; errors name key, value, fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.core.errors import ConfigError
from tessera.core.settings import load_settings, parse_ttl
from tests.support.paths import REPO


def test_example_config_loads_with_paths_relative_to_the_file() -> None:
    settings = load_settings(REPO / "tessera.toml")
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


# ------------------------------------------------------------ guards on what a config may hold


def _load(tmp_path: Path, toml: str) -> ConfigError:
    cfg = tmp_path / "guard.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    return err.value


def test_declared_source_names_may_not_take_the_adhoc_prefix(tmp_path: Path) -> None:
    """`tessera ingest adhoc/docs` runs as source `adhoc-docs-<hash>`: a declared source by that
    name would delete the ad-hoc run's documents on its first ingest."""
    err = _load(tmp_path, '[[sources]]\nname = "adhoc-docs-85c5f7e4"\npath = "."\n')
    assert err.key == "sources.0.name" and "'adhoc-'" in str(err)
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[[sources]]\nname = "docs-adhoc"\npath = "."\n')
    assert load_settings(cfg).sources[0].name == "docs-adhoc"


@pytest.mark.parametrize(("toml", "key"), [
    ('collection = "team/docs"\n', "collection"),
    ('collection = "../../escapedcoll"\n', "collection"),
    ('collection = ".hidden"\n', "collection"),
    ('collection = ""\n', "collection"),
    (f'collection = "{"c" * 65}"\n', "collection"),
    ('collection = "docs--v2"\n', "collection"),
    ('[[sources]]\nname = "a"\npath = "."\ncollection = "team/docs"\n', "sources.a.collection"),
])
def test_collection_names_must_match_one_safe_pattern(tmp_path: Path, toml: str, key: str) -> None:
    err = _load(tmp_path, toml)
    assert err.key == key
    assert "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}" in str(err) or "'--'" in str(err)


def test_a_safe_collection_name_loads(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text(f'collection = "Team_docs.v2-{"c" * 51}"\n')
    assert len(load_settings(cfg).collection) == 64


@pytest.mark.parametrize(("toml", "key"), [
    ('[[sources]]\nname = "a"\npath = "."\nttl = "0s"\n', "sources.0.ttl"),
    ('[[sources]]\nname = "a"\npath = "."\nttl = "59s"\n', "sources.0.ttl"),
    ('[[sources]]\nname = "a"\npath = "."\nttl = "0"\n', "sources.0.ttl"),
    ('[[sources]]\nname = "a"\npath = "."\nttl = "0m"\n', "sources.0.ttl"),
    ('[migrate]\nkeep_previous = "0s"\n', "migrate.keep_previous"),
])
def test_a_ttl_is_at_least_a_minute(tmp_path: Path, toml: str, key: str) -> None:
    """`ttl = "0s"` expired every document at once; "none" or "never" mean no expiry."""
    err = _load(tmp_path, toml)
    assert err.key == key and "'none'" in str(err)  # "0" once meant never: it is refused too
    assert "at least a minute" in str(err) or "'0' is not a duration" in str(err)
    assert (parse_ttl("1m"), parse_ttl("60s"), parse_ttl("never"), parse_ttl("none")) == (
        60, 60, None, None)
    with pytest.raises(ValueError, match="at least a minute"):
        parse_ttl(0)


@pytest.mark.parametrize(("toml", "key", "where"), [
    ('[store]\nkind = "qdrant"\nurl = "http://q:6333"\napi_key = "file-secret-123456789"\n',
     "store.api_key", ("TESSERA_STORE__API_KEY", "store.api_key_block")),
    ('[api]\nkeys = "file-secret-123456789"\n', "api.keys", ("TESSERA_API__KEYS", "api.keys_block")),
])
def test_secrets_in_the_config_file_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                toml: str, key: str, where: tuple[str, str]) -> None:
    """A key committed with tessera.toml must not work silently; the message never shows it."""
    err = _load(tmp_path, toml)
    assert err.key == key and all(w in str(err) for w in where)
    assert "file-secret-123456789" not in str(err) and "file-secret" not in repr(err.value)
    # The environment still works.
    monkeypatch.setenv("TESSERA_API__KEYS", "env-key-0123456789abcdef")
    cfg = tmp_path / "env.toml"
    cfg.write_text('collection = "x"\n')
    assert load_settings(cfg).api.key_list() == ["env-key-0123456789abcdef"]


def test_api_keys_have_a_minimum_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_API__KEYS", "k, long-enough-key-1234")
    settings = load_settings(None, home=str(tmp_path))
    with pytest.raises(ConfigError) as err:
        settings.api.key_list()
    assert err.value.key == "TESSERA_API__KEYS" and "16" in str(err.value)
    assert "long-enough-key-1234" not in str(err.value) and "'k'" not in str(err.value)
    monkeypatch.setenv("TESSERA_API__KEYS", "long-enough-key-1234,second-long-key-5678")
    assert load_settings(None, home=str(tmp_path)).api.key_list() == [
        "long-enough-key-1234", "second-long-key-5678"]


def test_store_path_is_relative_to_the_config_file(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "elsewhere").mkdir()
    cfg = tmp_path / "conf" / "t.toml"
    cfg.write_text('[store]\npath = "shards"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_settings(cfg).store.path == tmp_path / "conf" / "shards"
    cfg.write_text('[store]\nkind = "qdrant"\npath = ":memory:"\n')
    assert load_settings(cfg).store.in_memory
