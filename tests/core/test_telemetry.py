"""Where spans go: nowhere by default, over OTLP/HTTP when `[telemetry]` or the standard OTEL_*
variables say so. End to end: a real `tessera search` process exports its trace to a loopback
OTLP receiver (an OpenTelemetry Collector cannot run here; the receiver decodes what the SDK's
exporter sent with OpenTelemetry's own protobuf classes)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.core.telemetry import TelemetryConfig, _exporter, _sampler
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, REPO


def test_no_exporter_unless_asked() -> None:
    assert _exporter(TelemetryConfig(), {}) is None
    assert type(_exporter(TelemetryConfig(exporter="otlp"), {})).__name__ == "OTLPSpanExporter"
    assert type(_exporter(TelemetryConfig(exporter="console"), {})).__name__ == "ConsoleSpanExporter"
    # The standard variables win over the config.
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert type(_exporter(TelemetryConfig(), endpoint)).__name__ == "OTLPSpanExporter"
    assert _exporter(TelemetryConfig(exporter="otlp"), {"OTEL_TRACES_EXPORTER": "none"}) is None


def test_sampling_follows_the_config_unless_the_variables_say() -> None:
    sampler = _sampler(TelemetryConfig(sample_ratio=0.25), {})
    assert "0.25" in sampler.get_description() and "ParentBased" in sampler.get_description()
    assert _sampler(TelemetryConfig(), {"OTEL_TRACES_SAMPLER": "always_off"}) is None  # the SDK's


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(self.rfile.read(length) if self.path == "/v1/traces" else b"")
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_a_cli_search_exports_its_trace_over_otlp(tmp_path: Path,
                                                  receiver: tuple[str, list[bytes]]) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest

    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES)}])
    run_ingest(load_settings(config))
    endpoint, bodies = receiver
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PREFECT_API"))}
    env.update(PYTHONPATH=str(REPO), OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
               OTEL_SERVICE_NAME="tessera-test")
    done = subprocess.run([sys.executable, "-m", "tessera.cli.main", "search", "ocean tides",
                           "--config", str(config), "-q"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert bodies, "no trace reached the receiver"
    spans, services = [], set()
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"}
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert services == {"tessera-test"}
    names = {s.name for s in spans}
    assert {"tessera search", "embed query", "engine query"} <= names
    assert "search" not in names  # the command's span carries the search's attributes
    [command] = [s for s in spans if s.name == "tessera search"]
    assert {a.key: a.value.string_value for a in command.attributes}["tessera.mode"] == "hybrid"
    assert len({s.trace_id for s in spans}) == 1  # one command, one trace
    values = [str(a.value) for s in spans for a in s.attributes]
    assert not any("ocean" in v for v in values)  # no query text without api.log_queries


def test_json_logs_carry_the_trace_of_the_run_that_logged_them(tmp_path: Path) -> None:
    """`--log-format json`: every stderr line is one JSON object; those logged inside the run
    carry its trace id, the one its ingest_runs row holds."""
    import json

    from tessera.core.events import read_events
    from tessera.core.settings import load_settings
    from tests.support.machine import run_cli

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("High tide follows the Moon.")
    (notes / "bad.txt").write_bytes(b"\xff\xfe\x00" * 8)  # quarantined: a warning is logged
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {}, [])
    done = run_cli("--log-format", "json", "ingest", str(notes), "-v", "--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [run] = read_events(load_settings(config).events_dir, "ingest_runs")
    traced = [line for line in lines if line.get("trace_id")]
    assert traced and {line["trace_id"] for line in traced} == {run["trace_id"]}


def test_otel_sdk_disabled_turns_spans_off_and_events_keep_no_id() -> None:
    """The standard kill switch: no spans at all, so events get null trace ids."""
    probe = ("from tessera.core import telemetry\n"
             "with telemetry.span('x'):\n"
             "    print(telemetry.current_ids())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    off = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, env={**env, "OTEL_SDK_DISABLED": "true"})
    on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        timeout=60, env=env)
    assert off.stdout.strip() == "(None, None)" and off.returncode == 0
    assert on.stdout.startswith("('") and on.returncode == 0
