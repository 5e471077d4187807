"""One measured step in a fresh process (so peak memory is this step's own).

    python -m benchmarks.ingest_once ingest CONFIG [--repeat N] [--ttl TTL]
    python -m benchmarks.ingest_once bare CORPUS_DIR [--runtime torch|openvino] [--precision f32|bf16]

Prints one JSON line. `bare` embeds exactly the chunk texts ingest would embed (same source
reader, same chunker), in one call, with the model already loaded: the model's own cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def _peak_rss_mib() -> float:
    """This process's own peak RSS. (ru_maxrss would carry the parent's peak across exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakSplit:
    """Samples /proc/self/status every `every` seconds in a thread: the peaks of anonymous memory
    (the process's own heap, which a bounded-memory design must keep flat) and of file-backed
    resident pages (mmap'd store files: page cache the kernel can reclaim). VmHWM counts both."""

    def __init__(self, every: float = 0.1) -> None:
        import threading

        self.anon_kib = self.file_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                self.anon_kib = max(self.anon_kib, int(line.split()[1]))
            elif line.startswith("RssFile:"):
                self.file_kib = max(self.file_kib, int(line.split()[1]))

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self._sample()

    def __enter__(self) -> PeakSplit:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def as_dict(self) -> dict[str, float]:
        return {"peak_anon_mib": round(self.anon_kib / 1024, 1),
                "peak_file_mib": round(self.file_kib / 1024, 1)}


def ingest(config: Path, repeat: int, ttl: str | None = None) -> dict[str, Any]:
    """Run the ingest job `repeat` times on the same config, as `tessera ingest` does (`ttl`: as
    `--ttl` overrides the sources' TTL for the run); time each."""
    from flows.config import load
    from tessera.ingest.run import run_ingest

    runs = []
    with PeakSplit() as split:
        for _ in range(repeat):
            runs.append(_one(config, lambda settings: run_ingest(settings, ttl=ttl), load))
    return {"runs": runs, "peak_rss_mib": _peak_rss_mib(), **split.as_dict()}


def _one(config: Path, run_ingest: Any, load: Any) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_ingest(load(config))
    # CPU seconds (all threads) barely move when other work shares the cores; wall does.
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "summary": summary,
            "stages": _stage_seconds(config.parent / "events", summary["run_id"])}


def _stage_seconds(events: Path, run_id: str) -> dict[str, float]:
    """The run's per-stage seconds, from its `ingest_runs` event (where the time went)."""
    import pyarrow.parquet as pq

    for path in sorted((events / "ingest_runs").glob(f"{run_id}-*.parquet")):
        rows = pq.read_table(path).to_pylist()
        if rows:
            return {k: v for k, v in rows[0].items() if k.endswith("_seconds") and v is not None}
    return {}


def chunk_texts(corpus_dir: Path) -> tuple[list[str], int]:
    """The chunk texts ingest embeds for this corpus, and the number of documents."""
    from models.registry import BUILTIN
    from tessera.core.settings import SourceConfig
    from tessera.core.types import Document
    from tessera.ingest.chunking import Chunker
    from tessera.sources import make_source

    source = make_source(SourceConfig(name="scifact", kind="beir", path=corpus_dir))
    docs = [d for d in source.load(source.discover()) if isinstance(d, Document)]
    spec = BUILTIN[common.MODEL]
    chunks = Chunker(common.model_dir(), spec.max_length).chunk(docs)
    return [c.text for d in docs for c in chunks[d.doc_id]], len(docs)


def bare(corpus_dir: Path, runtime: str, precision: str, batch_size: int,
         cache_dir: Path) -> dict[str, Any]:
    """Embed the chunk texts in one call; only the encode is timed."""
    texts, docs = chunk_texts(corpus_dir)
    if runtime == "torch":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(common.model_dir()), device="cpu", local_files_only=True)
        model.encode(texts[:4], batch_size=batch_size)

        def encode() -> Any:
            return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
    else:
        from models.optimized import OpenVINOBackend
        from models.registry import BUILTIN

        backend = OpenVINOBackend(BUILTIN[common.MODEL], common.model_dir(), cache_dir,
                                  precision, batch_size)  # type: ignore[arg-type]
        backend.embed_texts(texts[:4])

        def encode() -> Any:
            return backend.embed_texts(texts)
    start = time.perf_counter()
    encode()
    return {"seconds": time.perf_counter() - start, "docs": docs, "chunks": len(texts),
            "peak_rss_mib": _peak_rss_mib()}


def main() -> None:
    """Parse the step and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["ingest", "bare"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--ttl", default=None)
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=common.OUT / "models")
    args = parser.parse_args()
    if args.mode == "ingest":
        out = ingest(args.path, args.repeat, args.ttl)
    else:
        out = bare(args.path, args.runtime, args.precision, args.batch_size, args.cache_dir)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
