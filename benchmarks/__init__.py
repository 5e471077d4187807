"""Benchmarks for issue 7: pipeline overhead, CPU runtimes, re-ingest, scaling, search latency."""
