"""The jobs a command or a flow runs, composed of the ingest and the store: prune, quality,
marts (dbt in a child process), backfill, optimize, the model cache, migration, nightly. No
Prefect: a job runs its steps through the `tessera.core.steps.Steps` it is given."""
