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
    model_config = ConfigDict(extra="forbid")


class SourceOptions(_Section):
    """How records are read out of structured files."""

    id_field: str = "id"
    title_field: str = "title"
    text_field: str = "text"
    # The record field holding its own timestamp (epoch seconds or ISO 8601), checked by the
    # documents contract (`timestamp_sane`); unset: records carry no timestamp.
    timestamp_field: str | None = None
    encoding: str = "utf-8"
    max_file_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 20 * 1024 * 1024
    # Image sources: where an image's words come from. "sidecar": `<name>.txt` beside it (else
    # the file name); "model": the captioner's caption; "both": the sidecar and the captioner's
    # caption together; "none": no words (the file name only). See docs/captions.md.
    caption: Literal["model", "sidecar", "both", "none"] = "sidecar"
    captioner: str = "blip-image-captioning-base"  # a [models.NAME] entry with kind "captioner"


class SourceConfig(_Section):
    """One declared source: where its records are and how long its points live."""

    name: str
    kind: Literal["directory", "beir", "images"] = "directory"
    path: Path
    glob: str = "**/*"
    ttl: str | None = "30d"
    modality: Literal["text", "image"] = "text"
    schedule: str | None = None
    delete_missing: bool = True
    # What happens to the indexed version of a document that fails its checks on a later run:
    # "remove" deletes it (search never returns text the source no longer has), "keep_last_good"
    # keeps it and its expiry alive. The quarantine row says which happened.
    on_invalid: Literal["remove", "keep_last_good"] = "remove"
    collection: str | None = None
    model: str | None = None  # default: the top-level `model`
    options: SourceOptions = Field(default_factory=SourceOptions)

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
    kind: Literal["sentence-transformers", "clip", "captioner"] = "sentence-transformers"
    path: Path | None = None
    dimension: int = 0  # required for embedding models; a captioner has none
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    modalities: list[Literal["text", "image"]] = ["text"]
    max_length: int = 256
    revision: str = "local"
    normalize: bool = True

    @model_validator(mode="after")
    def _dimension_for_embedders(self) -> ModelEntry:
        if self.kind != "captioner" and self.dimension < 1:
            raise ValueError(f"dimension (the vector size) is required for a {self.kind} model")
        return self


class ModalConfig(_Section):
    """The deployed Modal app and how to fan work out to it."""

    app_name: str = "tessera-embedder"
    class_name: str = "Embedder"
    gpu: str = "L4"
    max_containers: int = 4
    scaledown_window: int = 300
    timeout: int = 600
    batch_size: int = 256
    max_concurrency: int = 4
    retries: int = 3
    volume: str = "tessera-model-cache"


class EmbeddingConfig(_Section):
    """Which backend embeds, on which device, in what batch size."""

    backend: Literal["local", "modal", "auto"] = "local"
    device: str = "auto"
    batch_size: int = Field(default=32, ge=1, le=4096)
    # Local CPU runtime for text models: the OpenVINO export in the model cache (default: the
    # fastest at equal nDCG, bf16 matmuls where the CPU has AVX512-BF16/AMX, else fp32), or torch
    # via sentence-transformers. GPUs and CLIP always use torch. Speed, nDCG: benchmarks/REPORT.md.
    runtime: Literal["torch", "openvino"] = "openvino"
    precision: Literal["f32", "bf16"] = "bf16"
    threads: int | None = Field(default=None, ge=1)  # OpenVINO threads; None: all cores
    modal_threshold_chunks: int = 5000
    modal: ModalConfig = Field(default_factory=ModalConfig)


class CaptioningConfig(_Section):
    """How captioners run: backend, device, batch size, and the generation settings (which are
    part of the caption cache's key, so changing one captions every image again)."""

    backend: Literal["local", "modal"] = "local"
    device: str = "auto"
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_new_tokens: int = Field(default=30, ge=1, le=512)
    num_beams: int = Field(default=3, ge=1, le=16)
    prompt: str = ""  # conditional captioning: the caption continues this text
    class_name: str = "Captioner"  # the Modal class, in the app of [embedding.modal]


class StoreConfig(_Section):
    """Where vectors live: Qdrant Edge in-process, or a Qdrant server."""

    kind: Literal["edge", "qdrant"] = "edge"
    url: str | None = None
    api_key: SecretStr | None = None  # from TESSERA_STORE__API_KEY, never from the file
    api_key_block: str | None = None  # or the name of a Prefect Secret block holding it
    path: Path | None = None
    lock_timeout: float = 600.0
    upsert_batch: int = Field(default=512, ge=1)
    # The HNSW graph of a new collection: links per point (0: no graph, every search scans the
    # vectors) and build-time candidates. On the embedded store the graph is built as segments
    # are sealed (segments under ~13,000 vectors are scanned, which is as fast); `tessera
    # optimize` applies a change to an existing collection.
    hnsw_m: int = Field(default=16, ge=0, le=128)
    hnsw_ef_construct: int = Field(default=100, ge=4, le=4096)

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
    overlap: int = Field(default=32, ge=0)


class ContractsConfig(_Section):
    """Bounds and thresholds the data contracts enforce."""

    min_text_chars: int = 1
    max_text_chars: int = 2_000_000
    allowed_extensions: list[str] = sorted(ALL_SUFFIXES)
    norm_tolerance: float = 0.01
    max_duplicate_vector_rate: float = 0.5
    # Record timestamps before this (epoch seconds; 1980-01-01) are epoch-zero or unit bugs.
    earliest_timestamp: int = 315_532_800
    max_clock_skew_seconds: int = Field(default=86_400, ge=0)
    max_caption_chars: int = Field(default=1000, ge=1)
    # A batch of at least this many model captions that are all the same fails the run: the
    # captioner is broken (wrong weights, a blank input pipeline), not the images.
    same_caption_min_batch: int = Field(default=8, ge=2)
    # Override an expectation's severity: [contracts.severity.documents] doc_id_unique = "fatal"
    severity: dict[str, dict[str, Literal["error", "fatal"]]] = {}


class QualitySet(_Section):
    """A labelled BEIR-layout query set the nightly flow scores."""

    path: Path
    name: str | None = None


class QualityConfig(_Section):
    """Which sets to score and the gates a run must pass."""

    sets: list[QualitySet] = []
    min_ndcg_at_10: float = 0.0
    max_drop: float = 0.02


class MigrateConfig(_Section):
    """Blue/green migrations (`tessera migrate`): how long a replaced collection is kept."""

    keep_previous: str = "7d"  # then the nightly prune drops it; "none" keeps it for ever

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
    build_after_nightly: bool = True
    # dbt runs in a child process; one running longer than this is stopped and the build fails
    # (the warehouse stays as it was). A small project builds in 7-9 s.
    timeout_seconds: float = Field(default=900.0, gt=0)


# A search API key shorter than this is refused: a one-character key was accepted.
MIN_API_KEY_CHARS = 16


class ApiConfig(_Section):
    """The search service (`tessera api`, `tessera mcp`, the Modal `api` function)."""

    # Comma-separated API keys, from TESSERA_API__KEYS (or a Modal Secret that sets it); never
    # from the file. Or the name of a Prefect Secret block holding them.
    keys: SecretStr | None = None
    keys_block: str | None = None
    rate_limit: float = Field(default=50.0, gt=0)  # requests per second, per key
    burst: int = Field(default=100, ge=1)  # bucket size: requests a key may send at once
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)  # base64 images included
    max_k: int = Field(default=100, ge=1)
    cors_origins: list[str] = []  # none: CORS off
    log_queries: bool = False  # write query text into the search_requests events
    # Results show `uri` as `source:path` (relative to the source's root): the server's absolute
    # paths say how its disks are laid out. True shows the absolute path stored at ingest.
    absolute_uris: bool = False
    events_flush_seconds: float = Field(default=10.0, gt=0)
    # How often a reader on the embedded store looks for a newer snapshot to take.
    snapshot_check_seconds: float = Field(default=1.0, gt=0)
    # Query embedding in a serving process: copies of an OpenVINO model, each with a worker
    # thread, and OpenVINO threads per copy (None: all cores). On 2 cores, one copy on both
    # cores served more requests at concurrency 8 and answered one request sooner than two
    # single-thread copies (README, Performance); more copies are for machines with more cores.
    embed_workers: int = Field(default=1, ge=1, le=64)
    embed_threads: int | None = Field(default=None, ge=1)
    # Qdrant Edge's search threads per snapshot (None: the cores this process may run on). The
    # engine's own default on a 2-core machine was 8, which spent more CPU per search.
    search_threads: int | None = Field(default=None, ge=1)
    # The Modal `api` function (infra/modal_app.py): the Secret that sets TESSERA_API__KEYS and
    # TESSERA_STORE__URL/__API_KEY there, and whether Modal's own proxy auth also guards it.
    modal_secret: str = "tessera-api"
    modal_proxy_auth: bool = False

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


class Settings(BaseSettings):
    """Everything configurable about Tessera. Built once at an entry point, passed down."""

    model_config = SettingsConfigDict(
        env_prefix="TESSERA_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Path(".tessera")
    collection: str = "tessera"
    model: str = "all-minilm-l6-v2"
    models: dict[str, ModelEntry] = {}
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    captioning: CaptioningConfig = Field(default_factory=CaptioningConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    marts: MartsConfig = Field(default_factory=MartsConfig)
    migrate: MigrateConfig = Field(default_factory=MigrateConfig)
    sparse: SparseConfig = Field(default_factory=SparseConfig)  # BM25 vectors: tessera/core/sparse.py
    search: SearchConfig = Field(default_factory=SearchConfig)  # modes and fusion: tessera/core/query.py
    api: ApiConfig = Field(default_factory=ApiConfig)
    sources: list[SourceConfig] = []
    timezone: str = "UTC"

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
    return ConfigError(key, err.get("input"), fix)
