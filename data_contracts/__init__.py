"""Data contracts: what a valid batch is. The ingest calls `ContractRunner` at each stage."""

from data_contracts.runner import ContractRunner

__all__ = ["ContractRunner"]
