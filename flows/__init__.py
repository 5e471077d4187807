"""Prefect only: the flows, deployments, Prefect steps and secret blocks over tessera's jobs.
Importing any of it applies the offline defaults first."""

from tessera.core.env import apply_offline_defaults

# A Prefect worker imports a flow's module in a fresh process: the defaults must hold there too,
# before any Hugging Face library reads them.
apply_offline_defaults()
