"""The kernel every layer shares: errors, settings, types, events, fs helpers, the query and
sparse configs, the plain step runner and the BEIR reader. No Prefect, nothing above it."""
