"""tessera.toml files written from plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, top: dict[str, Any], sections: dict[str, dict[str, Any]],
                 sources: list[dict[str, Any]]) -> Path:
    """Write a tessera.toml from plain dicts."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for src in sources:
        lines.append("\n[[sources]]")
        opts = src.pop("options", None)
        lines += [f"{k} = {_toml_value(v)}" for k, v in src.items()]
        if opts:
            lines.append("[sources.options]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in opts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
