"""One settings object, from `tessera.toml` plus `TESSERA_*` variables, built at the entry points."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tessera.core.errors import ConfigError
from tessera.core.formats import ALL_SUFFIXES
from tessera.core.query import SearchConfig
from tessera.core.sparse import SparseConfig
from tessera.core.types import (
    VERSION_MARK as VERSION_MARK,  # re-exported: names users declare may not contain it
)
from tessera.core.types import name_problem

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NO_TTL = {"none", "never"}
# A shorter TTL is a typo, not a wish: "0s" expired every point of a run as it was written (and
# "0" used to mean the opposite, never).
MIN_TTL_SECONDS = 60
# Ad-hoc runs (`tessera ingest PATH`) are sources named `adhoc-<name>-<hash>`; declared sources
# may not use the prefix, or one could take over (and delete) an ad-hoc run's documents.
ADHOC_PREFIX = "adhoc-"


def parse_ttl(value: str | int | None) -> int | None:
    """Turn "7d", "12h", "30m" or "none" into seconds (None means the points never expire)."""
    if value is None:
        return None
    if isinstance(value, int):
        seconds = value
    elif value.strip().lower() in _NO_TTL:
        return None
    else:
        match = _DURATION.match(value.lower())
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like '7d', '12h', '30m' "
                             "or 'none'")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < MIN_TTL_SECONDS:
        raise ValueError(f"{value!r} is shorter than a minute; a TTL must be at least a minute "
                         "('1m'), or 'none' (or 'never') for points that never expire")
    return seconds


class _Section(BaseModel):
    # A field's docstring is its description: the docs' configuration reference is made from it.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SourceOptions(_Section):
    """How records are read out of structured files."""

    id_field: str = "id"
    """The record field holding a record's id in json/jsonl/csv/parquet files."""
    title_field: str = "title"
    """The record field holding a record's title."""
    text_field: str = "text"
    """The record field holding a record's text."""
    timestamp_field: str | None = None
    """The record field holding its own time (epoch seconds or ISO 8601), checked by the documents
    contract (`timestamp_sane`); unset: records carry no timestamp."""
    encoding: str = "utf-8"
    """Text encoding of the source's files."""
    max_file_bytes: int = 64 * 1024 * 1024
    """Largest file read whole (and `.json`); for jsonl/csv/parquet, the largest record. Larger
    ones are quarantined."""
    max_image_pixels: int = 40_000_000
    """Largest image (width x height) decoded; larger ones are quarantined (decompression bombs)."""
    max_image_bytes: int = 20 * 1024 * 1024
    """Largest image file read."""
    caption: Literal["model", "sidecar", "both", "none"] = "sidecar"
    """Image sources: where an image's words come from. `sidecar`: `<name>.txt` beside it (else the
    file name); `model`: the captioner's caption; `both`: the two together; `none`: the file
    name only. See [Image captions](captions.md)."""
    captioner: str = "blip-image-captioning-base"
    """The `[models.NAME]` entry (kind `captioner`) that captions this source's images."""


class SourceConfig(_Section):
    """One declared source: where its records are and how long its points live."""

    name: str
    """The source's name: letters, digits, `_`, `-`, `.`; not starting `adhoc-` (`tessera ingest
    PATH` names its own sources so, and a declared one would delete their documents)."""
    kind: Literal["directory", "beir", "images"] = "directory"
    """`directory` (text files and structured records), `beir` (a BEIR `corpus.jsonl`, keeping its
    ids) or `images`."""
    path: Path
    """The folder (or file) read; relative to the config file."""
    glob: str = "**/*"
    """Which files under `path` belong to the source."""
    ttl: str | None = "30d"
    """How long a point lives after its last ingest (`7d`, `12h`, `none`/`never`); at least `1m`."""
    modality: Literal["text", "image"] = "text"
    """`text` or `image`."""
    schedule: str | None = None
    """Cron schedule of the source's `ingest-<name>` deployment (in `timezone`)."""
    delete_missing: bool = True
    """Delete the documents of files gone from the source."""
    on_invalid: Literal["remove", "keep_last_good"] = "remove"
    """What happens to the indexed version of a document that fails its checks on a later run:
    `remove` deletes it (search never returns text the source no longer has), `keep_last_good`
    keeps it and its expiry alive. The quarantine row says which happened."""
    collection: str | None = None
    """The collection this source writes to (default: the top-level `collection`)."""
    model: str | None = None
    """The embedding model of this source (default: the top-level `model`)."""
    options: SourceOptions = Field(default_factory=SourceOptions)
    """How records and images are read (`sources.options.*`)."""

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError("use letters, digits, '_', '-' or '.' only")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl_parses(cls, value: str | None) -> str | None:
        parse_ttl(value)
        return value

    @property
    def ttl_seconds(self) -> int | None:
        """This source's TTL in seconds, or None when its points never expire."""
        return parse_ttl(self.ttl)


class ModelEntry(_Section):
    """A model declared in config, beside the built-in registry."""

    id: str
    """The model's id (a Hugging Face id or a name of your own), recorded in every point."""
    kind: Literal["sentence-transformers", "clip", "captioner"] = "sentence-transformers"
    """`sentence-transformers`, `clip` (text and images in one space) or `captioner` (BLIP)."""
    path: Path | None = None
    """A local folder holding the weights (nothing is downloaded at run time)."""
    dimension: int = 0
    """The vector size; required for embedding models, none for a captioner."""
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    """`cosine`, `dot` or `euclid`."""
    modalities: list[Literal["text", "image"]] = ["text"]
    """What the model embeds: `text`, `image` or both."""
    max_length: int = 256
    """The model's largest input in tokens (the chunk window's upper bound)."""
    revision: str = "local"
    """The weights' revision, part of a collection's identity."""
    normalize: bool = True
    """Whether vectors are unit length (checked by the vectors contract)."""

    @model_validator(mode="after")
    def _dimension_for_embedders(self) -> ModelEntry:
        if self.kind != "captioner" and self.dimension < 1:
            raise ValueError(f"dimension (the vector size) is required for a {self.kind} model")
        return self


class ModalConfig(_Section):
    """The deployed Modal app and how to fan work out to it."""

    app_name: str = "tessera-embedder"
    """The deployed Modal app (`infra/modal_app.py`)."""
    class_name: str = "Embedder"
    """The embedding class in that app."""
    gpu: str = "L4"
    """The GPU type the class asks Modal for."""
    max_containers: int = 4
    """Most containers Modal may run at once."""
    scaledown_window: int = 300
    """Seconds an idle container stays warm."""
    timeout: int = 600
    """Seconds one call may take."""
    batch_size: int = 256
    """Inputs sent per call."""
    max_concurrency: int = 4
    """Calls in flight at once."""
    retries: int = 3
    """Times a failed batch is sent again before the run fails."""
    volume: str = "tessera-model-cache"
    """The Modal Volume holding the model cache."""


class EmbeddingConfig(_Section):
    """Which backend embeds, on which device, in what batch size."""

    backend: Literal["local", "modal", "auto"] = "local"
    """`local` (this machine), `modal` (the deployed GPU class) or `auto` (Modal above
    `modal_threshold_chunks`)."""
    device: str = "auto"
    """`auto` (CUDA if present), `cpu` or `cuda`."""
    batch_size: int = Field(default=32, ge=1, le=4096)
    """Model batch size."""
    runtime: Literal["torch", "openvino"] = "openvino"
    """CPU runtime for text models: `openvino` (an export of the model made once into
    `<home>/models/derived/`; the fastest at equal nDCG) or `torch` (sentence-transformers).
    GPUs and CLIP always run on torch. Speed and nDCG: [Performance](performance.md)."""
    precision: Literal["f32", "bf16"] = "bf16"
    """`bf16` (bf16 matrix products where the CPU has AVX512-BF16 or AMX; elsewhere OpenVINO
    computes in f32) or `f32`."""
    threads: int | None = Field(default=None, ge=1)
    """OpenVINO threads (unset: all cores)."""
    modal_threshold_chunks: int = 5000
    """With `backend = "auto"`, runs with more pending chunks than this embed on Modal."""
    modal: ModalConfig = Field(default_factory=ModalConfig)
    """The deployed Modal app and how work fans out to it (`embedding.modal.*`)."""


class CaptioningConfig(_Section):
    """How captioners run: backend, device, batch size, and the generation settings (which are
    part of the caption cache's key, so changing one captions every image again)."""

    backend: Literal["local", "modal"] = "local"
    """`local` (transformers BLIP on this CPU or CUDA GPU) or `modal` (the `Captioner` class of
    `infra/modal_app.py`, in the app of `[embedding.modal]`)."""
    device: str = "auto"
    """`auto` (CUDA if present), `cpu` or `cuda`."""
    batch_size: int = Field(default=16, ge=1, le=1024)
    """Images per captioning batch."""
    max_new_tokens: int = Field(default=30, ge=1, le=512)
    """Longest caption in tokens; part of the caption cache's key."""
    num_beams: int = Field(default=3, ge=1, le=16)
    """Beam-search width; part of the caption cache's key."""
    prompt: str = ""
    """Conditional captioning: the caption continues this text; part of the caption cache's key."""
    class_name: str = "Captioner"
    """The deployed Modal class, in the app of `[embedding.modal]`."""


class StoreConfig(_Section):
    """Where vectors live: Qdrant Edge in-process, or a Qdrant server."""

    kind: Literal["edge", "qdrant"] = "edge"
    """`edge` (Qdrant Edge in-process) or `qdrant` (a server through qdrant-client)."""
    url: str | None = None
    """The Qdrant server's URL (`kind = "qdrant"` needs `url` or `path`)."""
    api_key: SecretStr | None = None
    """Only from `TESSERA_STORE__API_KEY`, refused in the file; never written to logs or events."""
    api_key_block: str | None = None
    """Or the name of a Prefect Secret block holding the key."""
    path: Path | None = None
    """Edge shards (default `<home>/qdrant`), or a qdrant-client local-mode folder; `":memory:"`
    keeps a server store's points only for the process."""
    lock_timeout: float = 600.0
    """Seconds a second writer waits for the embedded store."""
    upsert_batch: int = Field(default=512, ge=1)
    """Points per upsert call."""
    hnsw_m: int = Field(default=16, ge=0, le=128)
    """HNSW links per point of a new collection (`0`: no graph, every search scans the vectors). On
    the embedded store each sealed segment gets the graph (segments under ~13,000 vectors are
    scanned, which is as fast); `tessera optimize` applies a change to an existing collection,
    and an ingest whose config differs says so."""
    hnsw_ef_construct: int = Field(default=100, ge=4, le=4096)
    """HNSW build-time candidates of a new collection."""

    @property
    def in_memory(self) -> bool:
        """True only when asked for by name (store.path = ":memory:")."""
        return self.path is not None and str(self.path) == ":memory:"

    def check(self) -> None:
        """Refuse a server store with nowhere to write: qdrant-client would keep the points in
        memory and lose them at exit while the run reports success."""
        if self.kind == "qdrant" and not self.url and self.path is None:
            raise ConfigError(
                "store.url", None, 'store.kind = "qdrant" needs store.url (a Qdrant server, e.g. '
                "TESSERA_STORE__URL=http://localhost:6333) or store.path (qdrant-client local "
                'mode on disk); store.path = ":memory:" keeps points only for this process')


class ChunkingConfig(_Section):
    """Token-aware chunking: window size (None = the model's maximum) and overlap."""

    max_tokens: int | None = None
    """Window size in model tokens (unset: the model's maximum; capped at it)."""
    overlap: int = Field(default=32, ge=0)
    """Tokens shared by consecutive windows."""


class ContractsConfig(_Section):
    """Bounds and thresholds the data contracts enforce."""

    min_text_chars: int = 1
    """Shorter documents (empty ones) are quarantined."""
    max_text_chars: int = 2_000_000
    """Longer documents are quarantined."""
    allowed_extensions: list[str] = sorted(ALL_SUFFIXES)
    """File extensions a document may have (default: every text and image suffix the sources read)."""
    norm_tolerance: float = 0.01
    """Unit-norm band for normalizing models."""
    max_duplicate_vector_rate: float = 0.5
    """Above this share of identical vectors a batch is a broken model: the run fails."""
    earliest_timestamp: int = 315_532_800
    """Record timestamps before this (epoch seconds; 1980-01-01) are epoch-zero or unit bugs."""
    max_clock_skew_seconds: int = Field(default=86_400, ge=0)
    """Record timestamps further than this in the future are refused."""
    max_caption_chars: int = Field(default=1000, ge=1)
    """Longer model captions are quarantined."""
    same_caption_min_batch: int = Field(default=8, ge=2)
    """A batch of at least this many model captions that are all the same fails the run: the
    captioner is broken (wrong weights, a blank input pipeline), not the images."""
    severity: dict[str, dict[str, Literal["error", "fatal"]]] = {}
    """Override an expectation's severity: `[contracts.severity.documents] doc_id_unique =
    "fatal"`."""


class QualitySet(_Section):
    """A labelled BEIR-layout query set the nightly flow scores."""

    path: Path
    """A BEIR-layout folder: `corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`."""
    name: str | None = None
    """The set's name in events and marts (default: the folder's name)."""


class QualityConfig(_Section):
    """Which sets to score and the gates a run must pass."""

    sets: list[QualitySet] = []
    """The labelled sets (`[[quality.sets]]`, each `path` and `name`) the nightly flow scores."""
    min_ndcg_at_10: float = 0.0
    """Absolute floor a set's nDCG@10 must reach."""
    max_drop: float = 0.02
    """Largest allowed drop of any metric's mean against what it is compared with (the previous
    run, a migration's live collection, the settings before tuning), significant or not; also
    the loss a set's power is reported for."""
    significance: float = Field(default=0.05, gt=0, lt=1)
    """A drop of a gated metric counts as real when a paired permutation test over the
    per-query scores gives p below this; a migration or a tuning run is then refused and the
    nightly run fails."""
    gate_metrics: list[Literal["ndcg@10", "recall@10", "recall@100", "mrr@10"]] = [
        "ndcg@10", "recall@100"]
    """The metrics the significance rule applies to (each tested at `significance`)."""


class MigrateConfig(_Section):
    """Blue/green migrations (`tessera migrate`): how long a replaced collection is kept."""

    keep_previous: str = "7d"
    """How long a collection replaced by `tessera migrate` is kept for a rollback (at least `1m`,
    like a TTL); the nightly prune then drops it. `none`: kept for ever."""

    @field_validator("keep_previous")
    @classmethod
    def _keep_parses(cls, value: str) -> str:
        parse_ttl(value)
        return value

    @property
    def keep_previous_seconds(self) -> int | None:
        """Seconds a replaced collection stays for a rollback; None: kept for ever."""
        return parse_ttl(self.keep_previous)


class MartsConfig(_Section):
    """Whether flows rebuild the dbt marts as their last task."""

    build_after_ingest: bool = False
    """Rebuild the marts at the end of each ingest."""
    build_after_nightly: bool = True
    """Rebuild the marts at the end of the nightly flow."""
    timeout_seconds: float = Field(default=900.0, gt=0)
    """dbt runs in a child process; one running longer is stopped and the build fails, the
    warehouse left as it was. A small project builds in 7-9 s."""


# A search API key shorter than this is refused: a one-character key was accepted.
MIN_API_KEY_CHARS = 16


class ApiConfig(_Section):
    """The search service (`tessera api`, `tessera mcp`, the Modal `api` function)."""

    keys: SecretStr | None = None
    """Search API keys, comma-separated, each at least 16 characters (a short key is guessed); only
    from `TESSERA_API__KEYS` (or a Modal Secret setting it), refused in the file; never logged."""
    keys_block: str | None = None
    """Or the name of a Prefect Secret block holding them."""
    rate_limit: float = Field(default=1000.0, gt=0)
    """Token bucket per key: requests per second. The limit is for abuse: one client sending a
    request after each answer (~100-125 searches/s on 2 cores) never reaches it. Size it above
    (clients sharing a key) / (fastest round trip); see docs/search.md."""
    burst: int = Field(default=1000, ge=1)
    """Token bucket per key: requests a key may send at once, beyond the rate."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Larger request bodies get 413 (base64 images included)."""
    max_k: int = Field(default=100, ge=1)
    """Largest `k` a search may ask for."""
    cors_origins: list[str] = []
    """Origins allowed by CORS; empty: CORS off."""
    log_queries: bool = False
    """Write query text into the `search_requests` events."""
    absolute_uris: bool = False
    """Show each result's absolute file path as `uri`; by default `source:path` (relative to the
    source's root: the server's absolute paths say how its disks are laid out)."""
    events_flush_seconds: float = Field(default=10.0, gt=0)
    """How often a serving process writes its `search_requests` events."""
    snapshot_check_seconds: float = Field(default=1.0, gt=0)
    """How often a reader on the embedded store looks for a newer snapshot to take."""
    embed_workers: int = Field(default=1, ge=1, le=64)
    """Query embedding in a serving process: copies of an OpenVINO model side by side, one worker
    thread each (torch models: one copy). On 2 cores one copy on both did best; more copies are
    for more cores."""
    embed_threads: int | None = Field(default=None, ge=1)
    """OpenVINO threads per copy (unset: all cores)."""
    query_precision: Literal["same", "int8"] = "same"
    """How a serving process embeds queries: "same" (as the collection's documents, by
    `embedding.precision`), or "int8": an int8 copy of the model (OpenVINO on CPU; NNCF
    quantization calibrated on 300 of the collection's indexed chunks, made once per model cache
    when the service starts, about a minute on 2 cores). Measured on SciFact in
    benchmarks/REPORT.md (Int8 queries): less CPU per query, vectors at cosine ~0.998 to the
    full-precision ones."""
    query_cache_size: int = Field(default=4096, ge=0)
    """Query vectors a serving process keeps, per model: the last this many distinct queries
    (whitespace normalised) are answered without the model (0: off). Each entry holds the vector
    (1.5 KiB at 384 dimensions) and the query's text (at most 10,000 characters): at the default,
    about 6 MiB for short queries and under 50 MiB at the longest."""
    search_threads: int | None = Field(default=None, ge=1)
    """Qdrant Edge search threads per snapshot (unset: the cores this process may run on; the
    engine's own default was 8 on 2 cores, which spent more CPU per search)."""
    modal_secret: str = "tessera-api"
    """The Modal Secret of the `api` function (`infra/modal_app.py`), setting `TESSERA_API__KEYS`
    and `TESSERA_STORE__URL`/`__API_KEY` there."""
    modal_proxy_auth: bool = False
    """Whether Modal's own proxy auth also guards the `api` function."""

    def key_list(self) -> list[str]:
        """The configured keys, blanks dropped; a ConfigError (never showing a key) for one shorter
        than MIN_API_KEY_CHARS."""
        raw = self.keys.get_secret_value() if self.keys is not None else ""
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        short = [i for i, k in enumerate(keys, 1) if len(k) < MIN_API_KEY_CHARS]
        if short:
            raise ConfigError("TESSERA_API__KEYS", None, f"key {short[0]} of {len(keys)} is "
                              f"shorter than {MIN_API_KEY_CHARS} characters, short enough to "
                              "guess; use long random keys (e.g. `openssl rand -hex 24`) in "
                              "TESSERA_API__KEYS or the api.keys_block Secret")
        return keys


class TelemetryConfig(_Section):
    """`[telemetry]`: where traces go and how many are kept (tessera.core.telemetry)."""

    exporter: Literal["none", "otlp", "console"] = "none"
    """Where spans go: `none` (made for the trace ids events carry, then dropped), `otlp`
    (OTLP over HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`, default `http://localhost:4318`) or
    `console` (stderr). `OTEL_TRACES_EXPORTER` wins; an `OTEL_EXPORTER_OTLP_ENDPOINT` alone
    means `otlp`."""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of traces recorded, decided at the root (a request that arrives with a sampled
    `traceparent` stays sampled). `OTEL_TRACES_SAMPLER` (and `_ARG`) win. Unsampled traces
    still give their ids to the events."""
    service_name: str = "tessera"
    """The `service.name` of every span (`OTEL_SERVICE_NAME` wins); each process adds its role
    to the resource (`tessera.process`: cli, api, mcp, or worker for a Prefect worker's flow
    run and a library call)."""


class Settings(BaseSettings):
    """Everything configurable about Tessera. Built once at an entry point, passed down."""

    model_config = SettingsConfigDict(
        env_prefix="TESSERA_", env_nested_delimiter="__", extra="forbid",
        use_attribute_docstrings=True,
    )

    home: Path = Path(".tessera")
    """All local state: Qdrant Edge shards, events, warehouse, model cache, Prefect home."""
    collection: str = "tessera"
    """The name sources write to and readers search (a source may set its own): an alias to a
    versioned collection `<name>--<model>-<hash>`, so it may not contain `--`. Collection and
    alias names must match `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`."""
    model: str = "all-minilm-l6-v2"
    """Registry key of the embedding model."""
    models: dict[str, ModelEntry] = {}
    """Extra models (`[models.NAME]`), beside the built-in registry."""
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    """Which backend embeds, on which device (`[embedding]`)."""
    captioning: CaptioningConfig = Field(default_factory=CaptioningConfig)
    """How captioners run (`[captioning]`)."""
    store: StoreConfig = Field(default_factory=StoreConfig)
    """Where vectors live (`[store]`)."""
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    """Token-aware chunking (`[chunking]`)."""
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    """Bounds and thresholds the data contracts enforce (`[contracts]`)."""
    quality: QualityConfig = Field(default_factory=QualityConfig)
    """Which labelled sets are scored and the gates a run must pass (`[quality]`)."""
    marts: MartsConfig = Field(default_factory=MartsConfig)
    """When flows rebuild the dbt marts (`[marts]`)."""
    migrate: MigrateConfig = Field(default_factory=MigrateConfig)
    """Blue/green migrations (`[migrate]`)."""
    sparse: SparseConfig = Field(default_factory=SparseConfig)
    """BM25 sparse vectors (`[sparse]`)."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    """Search modes and fusion (`[search]`)."""
    api: ApiConfig = Field(default_factory=ApiConfig)
    """The search service (`[api]`)."""
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """OpenTelemetry traces: the exporter and the sampling (`[telemetry]`)."""
    sources: list[SourceConfig] = []
    """The declared sources (`[[sources]]`)."""
    timezone: str = "UTC"
    """Timezone of cron schedules."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, which init_settings carries (see load_settings).
        return (env_settings, init_settings)

    def source(self, name: str) -> SourceConfig:
        """The declared source called `name`, or a ConfigError listing the known ones."""
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources) or "none declared"
        raise ConfigError("sources", name, f"no source with that name; known sources: {known}")

    def collection_for(self, source: SourceConfig) -> str:
        """The collection a source writes to."""
        return source.collection or self.collection

    @property
    def events_dir(self) -> Path:
        return self.home / "events"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def model_cache_dir(self) -> Path:
        return self.home / "models"


def default_config_path() -> Path | None:
    """`TESSERA_CONFIG`, else ./tessera.toml if it exists (the one place we read the path)."""
    env = os.environ.get("TESSERA_CONFIG")
    if env:
        return Path(env)
    local = Path("tessera.toml")
    return local if local.exists() else None


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths in the file relative to the file, not to the caller's cwd."""
    for src in data.get("sources", []) or []:
        if isinstance(src, dict) and "path" in src and not Path(src["path"]).is_absolute():
            src["path"] = str(base / src["path"])
    for entry in (data.get("models") or {}).values():
        if isinstance(entry, dict) and entry.get("path") and not Path(entry["path"]).is_absolute():
            entry["path"] = str(base / entry["path"])
    for qs in (data.get("quality") or {}).get("sets", []) or []:
        if isinstance(qs, dict) and "path" in qs and not Path(qs["path"]).is_absolute():
            qs["path"] = str(base / qs["path"])
    if "home" in data and not Path(data["home"]).is_absolute():
        data["home"] = str(base / data["home"])
    store = data.get("store")
    if isinstance(store, dict) and store.get("path") and store["path"] != ":memory:" and (
            not Path(store["path"]).is_absolute()):
        store["path"] = str(base / store["path"])
    return data


# Secrets a config file may not hold (it is committed and copied around): where each goes instead.
_FILE_SECRETS = {("store", "api_key"): ("TESSERA_STORE__API_KEY", "store.api_key_block"),
                 ("api", "keys"): ("TESSERA_API__KEYS", "api.keys_block")}


def _refuse_file_secrets(data: dict[str, Any]) -> None:
    """Refuse a secret written in the file, naming where it belongs (never showing it)."""
    for (section, key), (variable, block) in _FILE_SECRETS.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            raise ConfigError(f"{section}.{key}", "(hidden)", "secrets may not be written in the "
                              f"config file; set {variable} in the environment, or name a "
                              f"Prefect Secret block in {block}, and remove {section}.{key} "
                              "from the file (and rotate the key if the file was shared)")


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from a TOML file (if any), TESSERA_* variables and explicit overrides."""
    path = Path(config) if config else default_config_path()
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError("config", str(path), "the file does not exist; pass --config PATH")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", str(path), f"not valid TOML: {exc}") from exc
        _refuse_file_secrets(data)
        data = _resolve_paths(data, path.parent.resolve())
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    names = [s.name for s in settings.sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("sources", dupes, "source names must be unique")
    settings.store.check()
    _check_source_names(settings)
    _check_collection_names(settings)
    settings.home = settings.home.resolve()
    return settings


def _check_source_names(settings: Settings) -> None:
    """Refuse a declared source named like an ad-hoc run's (see ADHOC_PREFIX)."""
    for i, src in enumerate(settings.sources):
        if src.name.startswith(ADHOC_PREFIX):
            raise ConfigError(f"sources.{i}.name", src.name, "declared source names may not "
                              f"start with {ADHOC_PREFIX!r}: `tessera ingest PATH` names its "
                              "ad-hoc sources that way, and a declared one would delete their "
                              "documents; rename the source")


def _check_collection_names(settings: Settings) -> None:
    """Refuse declared collection names the store cannot hold as one folder, or that look like
    a versioned collection's (tessera.core.types.name_problem)."""
    declared = [("collection", settings.collection)] + [
        (f"sources.{s.name}.collection", s.collection) for s in settings.sources
        if s.collection is not None]
    for key, name in declared:
        problem = name_problem(name)
        if problem:
            raise ConfigError(key, name, problem)


def _config_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        fix = "unknown key; check its spelling against the configuration reference in README.md"
    elif err["type"] == "missing":
        fix = "this key is required"
    else:
        fix = err["msg"]
    return ConfigError(_origin(key, err.get("input")), err.get("input"), fix)


def variable_for(key: str) -> str:
    """The variable that sets a dotted settings key: "store.url" -> TESSERA_STORE__URL."""
    config = Settings.model_config
    delimiter = config.get("env_nested_delimiter") or "__"
    return f"{config.get('env_prefix', '')}{delimiter.join(key.split('.'))}".upper()


def _origin(key: str, value: object) -> str:
    """Where a bad value came from: the TESSERA_* variable that holds it, else the config key."""
    variable = variable_for(key)
    if value is not None and os.environ.get(variable) == str(value):
        return variable
    return key
