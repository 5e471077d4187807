"""A user's mistake is not an outage: exit 2 before any work, one line of advice on stderr that
names where the value came from, one JSON object under --json, no traceback and no retry.

Each case runs `tessera` in-process (so the elapsed time is the check's, not Python's start-up)
and asserts it answered in under a second: a retry would wait 2 s before its first attempt.
One case also runs the real console script, to see what a person sees.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import EXAMPLES, REPO
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config whose index holds the sample corpus (source `examples`), and an undeclared
    source `notes` that was never ingested."""
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest
    from tests.support.config import write_config

    root = tmp_path_factory.mktemp("mistakes")
    notes = root / "notes"
    notes.mkdir()
    config = write_config(root / "tessera.toml", {"home": str(root / "home"), "collection": "docs"},
                          {}, [{"name": "examples", "path": str(EXAMPLES)},
                               {"name": "notes", "path": str(notes)}])
    run_ingest(load_settings(config), sources=["examples"])
    return config


def _refused(capsys: pytest.CaptureFixture[str], *argv: str, as_json: bool = True
             ) -> tuple[dict[str, Any] | None, str]:
    """Run the CLI; assert exit 2 within a second, one stderr line, no traceback; return both."""
    from tessera.cli.main import main

    args = [*argv, "--json"] if as_json else list(argv)
    start = time.perf_counter()
    code = main(args)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert elapsed < 1.0, f"{elapsed:.2f} s: the mistake was retried or work started"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    if not as_json:
        assert out == ""
        return None, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    obj = json.loads(lines[0])
    assert set(obj) >= {"error", "message"} and obj["message"] in err
    return obj, err


def test_unknown_source_suggests_the_declared_one(indexed: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, "ingest", "--source", "exampels", "--config", str(indexed))
    assert obj is not None and obj["error"] == "UsageError"
    assert "--source 'exampels'" in err and "did you mean 'examples'?" in err
    assert "notes" in err  # the declared sources are listed


def test_missing_path_advises_about_the_argument_not_the_config(
        indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _refused(capsys, "ingest", str(tmp_path / "nowhere"), "--config", str(indexed),
                      as_json=False)
    assert "PATH" in err and "nowhere" in err and "does not exist" in err
    assert "sources.path" not in err


def test_bad_ttl_is_one_json_object(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, "ingest", "--ttl", "banana", "--config", str(indexed))
    assert obj is not None and "--ttl 'banana'" in obj["message"] and "7d" in obj["message"]


def test_unknown_collection_suggests_the_real_one(indexed: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, "search", "tides", "--collection", "dosc", "--config", str(indexed))
    assert obj is not None and "did you mean 'docs'?" in err and "--collection" in err


def test_search_for_a_source_the_index_never_saw_is_an_error(
        indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, err = _refused(capsys, "search", "tides", "--source", "exampls", "--config", str(indexed))
    assert "did you mean 'examples'?" in err and "holds nothing" in err
    # Declared but never ingested: still an error, not an empty list.
    _, err = _refused(capsys, "search", "tides", "--source", "notes", "--config", str(indexed))
    assert "'notes'" in err
    # The right name answers.
    from tessera.cli.main import main

    assert main(["search", "tides", "--source", "examples", "--config", str(indexed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["doc_id"] == "examples/tides.txt"


def test_image_search_on_a_text_only_model_says_so_not_which_runtime(
        indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MiniLM embeds no images on any runtime: the advice is the API's, and no model loads."""
    from PIL import Image

    image = tmp_path / "dot.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    obj, err = _refused(capsys, "search", "--image", str(image), "--config", str(indexed))
    assert obj is not None and obj["error"] == "UsageError"
    assert "embeds text only; search it with a text query" in err and "all-minilm-l6-v2" in err
    assert "runtime" not in err and "torch" not in err


def test_modal_backend_without_a_token(indexed: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("TESSERA_EMBEDDING__BACKEND", "modal")
    obj, err = _refused(capsys, "ingest", "--config", str(indexed))
    assert obj is not None and obj["error"] == "ConfigError"
    # The value came from the environment, so the advice names the variable.
    assert obj["key"] == "TESSERA_EMBEDDING__BACKEND" and "modal token new" in err
    monkeypatch.delenv("TESSERA_EMBEDDING__BACKEND")
    config = tmp_path / "modal.toml"
    config.write_text(indexed.read_text().replace('collection = "docs"',
                                                  'collection = "docs"\n\n[embedding]\nbackend = "modal"', 1))
    obj, err = _refused(capsys, "ingest", "--config", str(config))
    assert obj is not None and obj["key"] == "embedding.backend" and 'embedding.backend = "local"' in err


@pytest.mark.parametrize("command", [["ingest"], ["search", "tides"], ["prune", "--dry-run"]])
def test_unreachable_store_url_is_not_retried(command: list[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              make_config: Callable[..., Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(sources=[{"name": "examples", "path": str(EXAMPLES)}])
    monkeypatch.setenv("TESSERA_STORE__KIND", "qdrant")
    monkeypatch.setenv("TESSERA_STORE__URL", f"http://127.0.0.1:{free_port()}")
    obj, err = _refused(capsys, *command, "--config", str(config))
    assert obj is not None and obj["key"] == "TESSERA_STORE__URL" and "no Qdrant server answers" in err


@pytest.mark.parametrize(("argv", "hint"), [
    (["ingset"], "did you mean 'ingest'?"),
    (["statsu"], "did you mean 'status'?"),
    (["ingest", "--sorce", "examples"], "did you mean '--source'?"),
    (["search", "tides", "--modality", "video"], "choose from text, image"),
    (["search", "tides", "-k", "many"], "invalid int value"),
    # No silent prefix matching: a typo is pointed out, not taken as the option it begins.
    (["search", "tides", "--sourc", "examples"], "unknown option '--sourc' (did you mean '--source'?)"),
    (["status", "--las", "3"], "did you mean '--last'?"),
    (["--jso", "status"], "did you mean '--json'?"),
    # An argument's mistake names the argument, not a config key.
    (["search", "tides", "-k", "0"], "argument -k: '0': give 1 or more"),
])
def test_parse_mistakes_are_one_line(argv: list[str], hint: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, *argv)
    assert obj is not None and hint in err
    assert "config error" not in err


@pytest.mark.parametrize(("argv", "said"), [
    ([], 'give a text query or --image PATH, e.g. tessera search "why do tides happen"'),
    (["tides", "--image", "photo.png"], "give a text query or --image PATH, not both"),
])
def test_search_needs_one_query(argv: list[str], said: str, make_config: Callable[..., Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, "search", *argv, "--config", str(make_config()))
    assert obj is not None and obj["error"] == "UsageError" and said in err
    if not argv:
        assert "not both" not in err


@pytest.mark.parametrize(("variable", "value", "key"), [
    ("TESSERA_EMBEDDING__BACKEND", "gpu", "embedding.backend"),
    ("TESSERA_STORE__LOCK_TIMEOUT", "abc", "store.lock_timeout"),
])
def test_a_bad_variable_is_named_not_the_key_it_sets(
        variable: str, value: str, key: str, make_config: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(variable, value)
    obj, err = _refused(capsys, "status", "--config", str(make_config()))
    assert obj is not None and obj["error"] == "ConfigError" and obj["key"] == variable
    assert f"environment variable {variable} (value: {value!r})" in err
    assert key not in err and "config error" not in err
    # The same value written in the file is the key's.
    monkeypatch.delenv(variable)
    section, name = key.split(".")
    obj, err = _refused(capsys, "status", "--config", str(make_config(**{section: {name: value}})))
    assert obj is not None and obj["key"] == key and f"config error at {key!r}" in err


def test_quarantine_of_an_unknown_run_is_refused(indexed: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`count: 0` for a mistyped run id would read as a clean run."""
    from tessera.cli.main import main

    assert main(["status", "--json", "--config", str(indexed)]) == 0
    last = json.loads(capsys.readouterr().out)["last_runs"][0]
    run_id = last["run_id"]
    obj, err = _refused(capsys, "quarantine", "--run", "nope", "--config", str(indexed))
    assert obj is not None and obj["error"] == "UsageError"
    assert "--run 'nope': no such run" in err and run_id in err and "tessera status" in err
    _, err = _refused(capsys, "quarantine", "--run", run_id[:-1], "--config", str(indexed))
    assert f"did you mean {run_id!r}?" in err
    assert main(["quarantine", "--run", run_id, "--config", str(indexed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == last["quarantined"]


@pytest.mark.parametrize(("toml", "key"), [
    ('[[sources]]\nname = "adhoc-docs-85c5f7e4"\npath = "."\n', "sources.0.name"),
    ('collection = "team/docs"\n', "collection"),
    ('[[sources]]\nname = "a"\npath = "."\nttl = "0s"\n', "sources.0.ttl"),
    ('[api]\nkeys = "committed-secret-0123456789"\n', "api.keys"),
    ('[store]\nkind = "qdrant"\nurl = "http://q:6333"\napi_key = "committed-secret-0123456789"\n',
     "store.api_key"),
])
def test_config_guards_exit_2_in_one_line(toml: str, key: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An ad-hoc source name, an unsafe collection name, a TTL under a minute and a secret in
    the file are refused at load, naming the key (and never showing the secret)."""
    config = tmp_path / "guarded.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n{toml}')
    obj, err = _refused(capsys, "status", "--config", str(config))
    assert obj is not None and obj["error"] == "ConfigError" and obj["key"] == key
    assert "committed-secret" not in err + json.dumps(obj)
    assert not (tmp_path / "home").exists()  # refused before any work


@pytest.mark.parametrize(("argv", "flag"), [
    (["search", "tides", "--collection", "../../escapedcoll"], "argument --collection"),
    (["alias", "team/docs", "test"], "argument alias"),
    (["alias", "docs", "../escapedcoll"], "argument collection"),
    (["backfill-sparse", "--collection", "team/docs"], "argument --collection"),
    (["optimize", "--collection", ".."], "argument --collection"),
    (["migrate", "--alias", "../docs"], "argument --alias"),
])
def test_collection_and_alias_arguments_must_be_safe_names(
        argv: list[str], flag: str, make_config: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, *argv, "--config", str(make_config()))
    assert obj is not None and flag in err and "[A-Za-z0-9][A-Za-z0-9_.-]{0," in err


def test_ingest_ttl_under_a_minute_is_refused(make_config: Callable[..., Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    obj, err = _refused(capsys, "ingest", "--ttl", "0s", "--config", str(make_config()))
    assert obj is not None and "--ttl '0s'" in err and "at least a minute" in err


def test_the_console_script_prints_one_line_and_exits_2(indexed: Path) -> None:
    """The real process: what a person sees on the terminal."""
    tessera = REPO / ".venv" / "bin" / "tessera"
    done = subprocess.run([str(tessera), "ingest", "--source", "exampels", "--config", str(indexed)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "did you mean 'examples'?" in done.stderr and "Traceback" not in done.stderr
    version = subprocess.run([str(tessera), "--version"], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
    assert version.returncode == 0 and version.stdout.startswith("tessera ")
    assert all(w in version.stdout for w in ("model all-minilm-l6-v2", "openvino", "store edge"))


# ------------------------------------------------------------ what a correct command prints


def test_quiet_output_and_human_tables(indexed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    assert main(["ingest", "--source", "examples", "--config", str(indexed)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("Ingest run ") and "0 indexed" in out[0]
    assert main(["ingest", "-q", "--config", str(indexed)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["status", "--config", str(indexed)]) == 0
    table = capsys.readouterr().out
    assert "Collections in" in table and "docs" in table and "Last runs" in table
    assert "completed" in table and "{" not in table
