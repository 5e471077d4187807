"""Tessera's kernel: what every layer shares (errors, settings, types, events, fs helpers). No Prefect."""
