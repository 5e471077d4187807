"""The command line's manners, as uv and gh have them: global options anywhere on the line, bare
`tessera` and `tessera help [COMMAND]` for help, commands in groups, defaults in the help.

In-process and without a model: each case parses, loads a config at most and answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tessera.cli.main import COMMANDS, main
from tessera.cli.usage import COMMAND_GROUPS


def _answer(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_global_options_go_before_or_after_the_command(
        make_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = str(make_config())
    code, after, _ = _answer(capsys, "status", "--json", "--config", config)
    assert code == 0
    for argv in (["--json", "status", "--config", config],
                 ["--config", config, "--json", "status"],
                 [f"--config={config}", "--json", "status"]):
        code, before, err = _answer(capsys, *argv)
        assert code == 0, err
        assert json.loads(before) == json.loads(after)
    code, out, _ = _answer(capsys, "-q", "status", "--config", config)
    assert code == 0 and out == ""  # -q before the command still silences it


def test_verbosity_before_the_command_counts() -> None:
    from tessera.cli.main import build_parser
    from tessera.cli.usage import normalise

    args = build_parser().parse_args(normalise(["-v", "-v", "status", "-v"]))
    assert args.command == "status" and args.verbose == 3
    args = build_parser().parse_args(normalise(["-qv", "status"]))
    assert args.quiet and args.verbose == 1


def test_bare_tessera_prints_the_commands_in_groups(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _answer(capsys)
    assert code == 0 and err == ""
    headings = [line for line in out.splitlines() if line.rstrip(":") in COMMAND_GROUPS]
    assert headings == [f"{group}:" for group in COMMAND_GROUPS]
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")
              and not line.startswith("   ") and line.split()[0] in COMMANDS]
    assert sorted(listed) == sorted(COMMANDS)  # each command once, none left out
    assert "{ingest," not in out  # not argparse's brace blob
    assert "--json" in out and "tessera help COMMAND" in " ".join(out.split())


def test_every_command_is_in_exactly_one_group() -> None:
    grouped = [name for names in COMMAND_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(COMMANDS)


def test_help_and_help_command(capsys: pytest.CaptureFixture[str]) -> None:
    bare = _answer(capsys)
    assert _answer(capsys, "help") == bare
    code, out, _ = _answer(capsys, "help", "search")
    assert code == 0 and (code, out, "") == _answer(capsys, "search", "--help")
    assert out.startswith("usage: tessera search ") and "--image" in out and "example:" in out
    code, out, err = _answer(capsys, "help", "serch")
    assert code == 2 and out == "" and "did you mean 'search'?" in err


@pytest.mark.parametrize(("command", "shown"), [
    ("search", "number of results (default: 5)"),
    ("status", "how many recent runs to show (default: 5)"),
    ("api", "port to listen on (0: any free port) (default: 8000)"),
    ("mcp", "port to listen on, with --transport http (default: 8001)"),
    ("report", "(default: 8765)"),
    ("backfill-sparse", "points per write (default: 512)"),
])
def test_help_shows_defaults(command: str, shown: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _answer(capsys, command, "--help")
    assert code == 0 and shown in " ".join(out.split())


def test_no_help_shows_an_empty_default(capsys: pytest.CaptureFixture[str]) -> None:
    """None, a flag's False and a counter's 0 are noise, not defaults."""
    for command in COMMANDS:
        code, out, _ = _answer(capsys, command, "--help")
        text = " ".join(out.split())
        assert code == 0
        for noise in ("(default: None)", "(default: False)", "(default: 0)", "(default: [])"):
            assert noise not in text, (command, noise)


def test_version_alone_answers_without_loading_the_commands(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    """`tessera --version` is answered before the parser and its commands load (a third of its
    time), and says the same as `--version` through the parser, for the config in force."""
    import os
    import subprocess
    import sys

    config = str(make_config())
    probe = ("import sys; from tessera.cli import main; code = main(['--version']); "
             "print('loaded:', 'tessera.cli.main' in sys.modules); sys.exit(code)")
    env = {**os.environ, "TESSERA_CONFIG": config}
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, env=env)
    slow = subprocess.run([sys.executable, "-m", "tessera.cli.main", "--version", "--config",
                           config], capture_output=True, text=True, timeout=60)
    line, loaded = fast.stdout.splitlines()
    assert fast.returncode == slow.returncode == 0 and loaded == "loaded: False"
    assert line == slow.stdout.strip() and f"home {Path(config).parent}" in line
