"""One error hierarchy. Every message says what went wrong and what to do about it."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error Tessera raises on purpose."""


class TransientError(PipelineError):
    """Something outside us failed in a way a retry can fix (a server restarting, a timeout).

    Only these are retried: a retry of anything else fails the same way, only later.
    """


class ConfigError(PipelineError):
    """The config file or a TESSERA_* variable holds a value we cannot use."""

    def __init__(self, key: str, value: object, fix: str) -> None:
        self.key, self.value, self.fix = key, value, fix
        # A TESSERA_* variable is named as one: the fix is in the environment, not the file.
        where = (f"environment variable {key}" if key.startswith("TESSERA_")
                 else f"config error at {key!r}")
        super().__init__(f"{where} (value: {value!r}): {fix}")


class UsageError(PipelineError):
    """A command was given something it cannot use (a path that does not exist, a bad flag)."""


class SourceError(PipelineError):
    """A source cannot be read as a whole (missing directory, missing column...)."""


class RecordError(SourceError):
    """One record cannot be used; it is quarantined and the batch goes on."""

    def __init__(self, reason: str, expectation: str = "readable") -> None:
        self.reason, self.expectation = reason, expectation
        super().__init__(reason)


class ContractViolation(PipelineError):
    """A fatal data-contract expectation failed; nothing was written."""


class EmbeddingError(PipelineError):
    """The embedding model could not be loaded or returned unusable vectors."""


class EmbeddingUnavailableError(EmbeddingError, TransientError):
    """A remote embedder (Modal) failed in a way a retry can fix: a timeout, a lost connection."""


class VectorStoreError(PipelineError):
    """Qdrant (embedded or server) refused or failed an operation."""


class ModelMismatchError(VectorStoreError):
    """A collection was written by one model and another tried to write to it."""


class SparseConfigMismatchError(ModelMismatchError):
    """A collection was built with one BM25 sparse config and a write came with another."""


class StoreLockedError(VectorStoreError):
    """Another process holds the embedded store."""


class StoreUnavailableError(VectorStoreError, TransientError):
    """The Qdrant server could not be reached, timed out, or answered with a server error."""


class ForeignCollectionError(VectorStoreError):
    """A collection exists but was not made by Tessera (no model recorded on it)."""


class DiskSpaceError(VectorStoreError):
    """The disk cannot hold what the embedded store is about to write."""


class QualityGateError(PipelineError):
    """A retrieval-quality metric breached its configured gate."""


class MigrationRefused(PipelineError):
    """A migration or rollback did not switch the alias; `result` is its decision record."""

    def __init__(self, message: str, result: dict[str, object]) -> None:
        self.result = result
        super().__init__(message)

    def __reduce__(self) -> tuple[type[MigrationRefused], tuple[str, dict[str, object]]]:
        # Orchestrators pickle a failed run's exception; keep the decision through the round trip.
        return (type(self), (str(self), self.result))


class MartsError(PipelineError):
    """The dbt build of the marts failed or could not start."""


class StorageError(PipelineError):
    """The machine refused a file: a read-only or full disk, a used-up quota, no permission."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)
