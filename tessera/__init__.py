"""Tessera: keep a multimodal vector index fresh, correct and measured.

Packages by job, each importing only what sits below it: `core` (errors, settings, types,
events, fs) <- `store`, `sources` <- `ingest` <- `jobs`, `service` <- the Prefect flows
(top-level `flows/`) <- `cli`. Importing any of it applies the offline defaults first.
"""

from tessera.core.env import apply_offline_defaults

__version__ = "0.1.0"  # the package's version (pyproject reads it: [tool.setuptools.dynamic])

# A Prefect worker, uvicorn or Modal imports a module of ours in a fresh process: the defaults
# must hold there too, before any Hugging Face library reads them.
apply_offline_defaults()
