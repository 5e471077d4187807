"""The `tessera` command: parsing, preflight checks, human and JSON output."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script (tessera.cli.main, imported on call: a
    package that imported it here would make `python -m tessera.cli.main` warn on stderr)."""
    from tessera.cli.main import main as run

    return run(argv)
