"""Data contracts: what a valid batch is. Suites live in `suites/*.json`; the ingest runs them.

Importing this package does not import Great Expectations; `warm_up()` or the first validation does.
"""

from data_contracts.engine import SUITE_NAMES, load_spec, warm_up
from data_contracts.runner import ContractRunner

__all__ = ["SUITE_NAMES", "ContractRunner", "load_spec", "warm_up"]
