"""The `tessera` command: parsing, preflight checks, human and JSON output."""

from tessera.cli.main import main

__all__ = ["main"]
