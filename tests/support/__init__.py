"""Helpers that more than one test module uses, each module named for its job (servers, the
CLI in a child process, images, datasets, run events, Prefect, the tiny random models)."""
