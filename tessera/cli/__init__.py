"""The `tessera` command: parsing, preflight checks, human and JSON output."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script (tessera.cli.main, imported on call: a
    package that imported it here would make `python -m tessera.cli.main` warn on stderr).
    `tessera --version` alone is answered without loading the parser and its commands."""
    import sys

    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        from tessera.cli.version import version_line

        print(version_line())
        return 0
    from tessera.cli.main import main as run

    return run(argv)
