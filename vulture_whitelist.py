"""Names `vulture` (run by `make lint` and `make test` over the product's packages) cannot see
used: each is called by a framework, or is a public name the test suite and benchmarks use.
This file is read by vulture only, never imported."""

# ruff: noqa
from flows.deployments import WORK_POOL
from tessera.core import beir

WORK_POOL  # the work pool infra/prefect.yaml deploys to; tests/flows/test_deployments.py creates it
beir.unpack  # unpacks the bundled SciFact for the suite and the benchmarks
beir.read_corpus  # reads a BEIR corpus for the suite and the benchmarks

_.input_iterators  # RemoteMethod.map mirrors Modal's signature (models/modal_backend.py)
_.order_outputs
_.return_exceptions
_.forward  # torch calls nn.Module.forward (models/optimized.py)
_.option_string  # argparse.Action.__call__'s signature (tessera/cli/support.py)
_.render  # rich calls a progress column's render (tessera/cli/support.py)
_.settings_customise_sources  # pydantic-settings' hook and its signature (tessera/core/settings.py)
_.settings_cls
_.dotenv_settings
_.file_secret_settings
_.collect  # prometheus_client calls a collector's collect (tessera/service/metrics.py)
_.__signature__  # the MCP SDK reads a tool's signature for its input schema (tessera/service/mcp_tools.py)
_.__annotations__  # and its annotations for its output schema (tessera/service/mcp_tools.py)
_.grouped  # a field of the search response schema (tessera/service/schemas.py)
_.writeable  # numpy's array flag: the query cache hands out read-only vectors (tessera/service/query_cache.py)
_.handle_starttag  # html.parser.HTMLParser's callbacks (tessera/sources/text_formats.py)
_.handle_endtag
_.handle_data
_.attrs
_.on_broken_pipe  # rich calls it on a reader that hung up (tessera/cli/output.py)
_.on_start  # the OpenTelemetry SDK calls a span processor's on_start(span, parent_context=...)
_.parent_context  # (tessera/core/telemetry.py), by keyword
_.add_processor  # tests/support/traces.py adds the SDK's in-memory exporter through it
