"""The pipeline's parts as plain functions: sources, chunking, the store, the diff, and the jobs
that compose them (ingest, prune, quality, marts). No Prefect: a job runs its steps through the
`tessera.steps.Steps` it is given."""
