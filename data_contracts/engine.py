"""Great Expectations behind one call: validate a frame against a suite file, get plain results.

Importing GE costs 2-4 s (scipy, sqlalchemy, altair, ...), so importing this module does not
import it. An ingest calls `warm_up()` as it starts: a background thread imports GE and builds the
suites while the main thread waits on Prefect's API and reads the first batch, and the first
validation waits for that thread. Each suite is read and built once per process, and one ephemeral
context (no files, no analytics, no progress bars) serves every validation.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from tessera.core.errors import ConfigError, ContractViolation

if TYPE_CHECKING:
    import pandas as pd

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_NAMES = ("documents", "chunks", "embeddings", "payload")
Severity = Literal["error", "fatal"]
SEVERITIES: tuple[Severity, ...] = ("error", "fatal")
# GE's own severity field, kept in step so GE tooling reads the suites the same way.
_GX_SEVERITY = {"error": "warning", "fatal": "critical"}
_LOCK = threading.Lock()  # one GE context, possibly shared by flows in threads
_WARMING: threading.Thread | None = None
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as the suite file declares it."""

    name: str
    type: str
    columns: tuple[str, ...]
    severity: Severity
    reason: str  # str.format template over the failing row, the parameters and `observed`


@dataclass(frozen=True)
class SuiteSpec:
    """A suite file: its expectations in order, and the file's JSON for GE."""

    name: str
    path: Path
    expectations: tuple[ExpectationSpec, ...]
    meta: dict[str, Any]
    document: dict[str, Any]

    def expectation(self, name: str) -> ExpectationSpec | None:
        """The expectation called `name`, if the suite has one."""
        return next((e for e in self.expectations if e.name == name), None)


@dataclass
class Outcome:
    """The result of one expectation on one batch."""

    spec: ExpectationSpec
    success: bool
    element_count: int
    unexpected_count: int | None  # None for whole-batch expectations (a mean, a rate)
    unexpected_rows: list[int]  # frame row labels that broke it
    observed: Any = None  # whole-batch expectations' observed value
    error: str | None = None  # set when GE could not evaluate the expectation


def _bad_suite(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"data_contracts/suites/{path.name}", path.name,
                       f"{problem}; fix the suite file (see data_contracts/README.md)")


@cache
def load_spec(name: str) -> SuiteSpec:
    """Read `suites/<name>.json` (no GE import) and check our own fields on each expectation."""
    path = SUITES_DIR / f"{name}.json"
    if not path.exists():
        raise _bad_suite(path, f"no suite called {name!r}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _bad_suite(path, f"not valid JSON ({exc})") from None
    specs = []
    for i, exp in enumerate(doc.get("expectations", [])):
        meta, kwargs = exp.get("meta") or {}, exp.get("kwargs") or {}
        label = meta.get("name") or f"expectation #{i + 1}"
        if not meta.get("name") or meta.get("severity") not in SEVERITIES or not meta.get("reason"):
            raise _bad_suite(path, f"{label} needs meta.name, meta.severity (error or fatal) "
                                   "and meta.reason")
        columns = tuple(str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs)
        specs.append(ExpectationSpec(meta["name"], exp["type"], columns, meta["severity"],
                                     meta["reason"]))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _bad_suite(path, "expectation names (meta.name) must be unique within a suite")
    return SuiteSpec(name, path, tuple(specs), doc.get("meta") or {}, doc)


@cache
def _datasource() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    return context.data_sources.add_pandas("tessera")


@cache
def gx_suite(name: str) -> Any:
    """The GE ExpectationSuite for `name`, built once per process."""
    import great_expectations as gx

    spec = load_spec(name)
    doc = dict(spec.document)
    doc["expectations"] = [{**e, "severity": _GX_SEVERITY[e["meta"]["severity"]]}
                           for e in doc.get("expectations", [])]
    suite = gx.ExpectationSuite(**doc)
    # GE logs and skips an expectation it cannot build; a contract must not shrink silently.
    if len(suite.expectations) != len(spec.expectations):
        built = {(e.meta or {}).get("name") for e in suite.expectations}
        missing = [s.name for s in spec.expectations if s.name not in built]
        raise _bad_suite(spec.path, f"Great Expectations could not build {', '.join(missing)}")
    return suite


def warm_up() -> None:
    """Import GE and build every suite in a background thread, once per process.

    The first `validate` then waits for it (it takes the same lock) instead of importing GE on
    the critical path. A failure here is only logged: that validation raises it with its context.
    """
    global _WARMING
    if _WARMING is None:
        _WARMING = threading.Thread(target=_warm, name="tessera-contracts-warm-up", daemon=True)
        _WARMING.start()


def _warm() -> None:
    try:
        import pandas  # noqa: F401 - the frames the suites validate

        with _LOCK:
            for name in SUITE_NAMES:
                _batch_definition(name)
                gx_suite(name)
    except Exception as exc:  # noqa: BLE001 - reported by the validation that needs it
        logger.debug("contracts warm-up failed: %s", exc)


@cache
def _batch_definition(name: str) -> Any:
    return _datasource().add_dataframe_asset(name).add_batch_definition_whole_dataframe("batch")


def validate(suite: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> list[Outcome]:
    """Validate one batch's frame against a suite; one Outcome per expectation, in suite order."""
    spec = load_spec(suite)
    try:
        with _LOCK:
            gx_obj = gx_suite(suite)
            batch = _batch_definition(suite).get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(gx_obj, result_format="COMPLETE",
                                    expectation_parameters=parameters)
    except (ConfigError, ContractViolation):
        raise
    except Exception as exc:  # noqa: BLE001 - GE raises many types; none may pass unchecked data
        raise ContractViolation(
            f"the {suite} contract could not run ({type(exc).__name__}: {exc}); nothing of this "
            f"batch was written. Check data_contracts/suites/{suite}.json and its parameters"
        ) from exc
    by_name = {r.expectation_config.meta.get("name"): r for r in result.results}
    return [_outcome(s, by_name[s.name], len(frame)) for s in spec.expectations]


def _outcome(spec: ExpectationSpec, res: Any, rows: int) -> Outcome:
    result = cast(dict[str, Any], res.result or {})
    error = _exception_message(res.exception_info)
    index = result.get("unexpected_index_list")
    return Outcome(
        spec=spec,
        success=bool(res.success) and error is None,
        element_count=int(result.get("element_count", rows)),
        unexpected_count=result.get("unexpected_count"),
        unexpected_rows=[int(i) for i in index] if index else [],
        observed=result.get("observed_value"),
        error=error,
    )


def _exception_message(info: Any) -> str | None:
    """GE's exception_info is either one dict or a dict of them keyed by metric; None if clean."""
    if not isinstance(info, dict):
        return None
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "unknown error")
    return None
