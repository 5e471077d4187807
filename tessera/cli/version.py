"""`tessera --version`: the version, the Python, and the model, runtime, store and home of the
config in force. Imports nothing of the CLI: `tessera --version` alone is answered from here
before the parser and its commands load (tessera.cli.main)."""

from __future__ import annotations

import sys


def version_line(config: str | None = None) -> str:
    """`tessera 0.1.0 · model ... · runtime ... · store ...` (from the config in force)."""
    import tessera

    parts = [f"tessera {tessera.__version__}", f"python {sys.version.split()[0]}"]
    try:
        from tessera.core.settings import load_settings

        s = load_settings(config)
    except Exception as exc:  # noqa: BLE001 - the version must print even with a broken config
        return " · ".join([*parts, f"config not loaded ({exc})"])
    emb = s.embedding
    runtime = (f"{emb.runtime} {emb.precision}" if emb.runtime == "openvino" else emb.runtime)
    store = s.store.kind if s.store.kind == "edge" else f"qdrant server {s.store.url or s.store.path}"
    parts += [f"model {s.model}", f"backend {emb.backend} ({runtime}, device {emb.device})",
              f"store {store}", f"home {s.home}"]
    return " · ".join(parts)
