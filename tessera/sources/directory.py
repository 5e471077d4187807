"""Directory source: txt, md, html, json, jsonl, csv, parquet files; and BEIR corpus.jsonl."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tessera.core.errors import RecordError, SourceError
from tessera.core.formats import TEXT_SUFFIXES, WHOLE_FILE
from tessera.core.settings import SourceConfig
from tessera.core.types import Document, Loaded, Quarantined
from tessera.sources import records
from tessera.sources import text_formats as fmt
from tessera.sources.base import safe_path
from tessera.sources.dupes import find_duplicates, id_hash

logger = logging.getLogger(__name__)

# Record files read a record at a time; options.max_file_bytes bounds one record of these.
STREAMED = frozenset({".jsonl", ".csv", ".parquet"})

def discover_files(config: SourceConfig, suffixes: set[str] | None) -> list[str]:
    """Relative names of the files under the source root that match its glob, sorted."""
    root = Path(config.path)
    if not root.is_dir():
        raise SourceError(
            f"source {config.name!r}: {root} is not a directory; fix sources.path in the config"
        )
    if config.glob in ("**/*", "**"):
        return sorted(_walk(root, suffixes))
    found = []
    for path in root.glob(config.glob):
        if path.is_dir() or path.name.startswith("."):
            continue
        if suffixes is not None and path.suffix.lower() not in suffixes:
            continue
        found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _walk(root: Path, suffixes: set[str] | None) -> Iterator[str]:
    """What `root.glob("**/*")` lists less its folders, from os.walk (no Path per entry: a
    million-file folder is listed in seconds). Symlinked folders are listed, not entered."""
    for folder, _dirs, files in os.walk(root):
        prefix = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if prefix == "." else prefix + "/"
        for name in files:
            if name.startswith("."):
                continue
            if suffixes is not None and os.path.splitext(name)[1].lower() not in suffixes:
                continue
            yield prefix + name


def unreadable(exc: Exception, where: str = "") -> RecordError:
    """A RecordError for an unexpected failure while reading, naming the exception."""
    at = f"{where}: " if where else ""
    return RecordError(f"{at}could not be read ({type(exc).__name__}: {str(exc)[:200]})",
                       expectation="readable")


class DirectorySource:
    """Each whole file is one document; each record of a structured file is one document."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.root = Path(config.path)

    def discover(self) -> list[str]:
        """Every file with a readable text suffix (other suffixes are quarantined on load)."""
        return discover_files(self.config, None)

    def load(self, items: list[str]) -> Iterator[Loaded]:
        """Documents and quarantine rows for these files."""
        for rel in items:
            yield from self._load_file(rel)

    def _doc_id(self, rel: str, record_id: Any = None) -> str:
        base = f"{self.config.name}/{rel}"
        return base if record_id is None else f"{base}#{record_id}"

    def _quarantine(self, rel: str, err: RecordError, doc_id: str | None = None) -> Quarantined:
        return Quarantined(
            source=self.config.name,
            doc_id=doc_id or self._doc_id(rel),
            uri=str(self.root / rel),
            reason=f"{rel}: {err.reason}" if not err.reason.startswith(rel) else err.reason,
            expectation=err.expectation,
        )

    def _load_file(self, rel: str) -> Iterator[Loaded]:
        suffix = Path(rel).suffix.lower()
        opts = self.config.options
        try:
            path = safe_path(self.root, rel)
            if suffix not in TEXT_SUFFIXES:
                raise RecordError(
                    f"{rel}: the extension {suffix or '(none)'!r} is not a text format this source "
                    f"reads ({', '.join(sorted(TEXT_SUFFIXES))}); narrow the source's glob",
                    expectation="allowed_extension",
                )
            if suffix in STREAMED:
                yield from self._records(rel, suffix, path)
                return
            raw = fmt.read_limited(path, opts.max_file_bytes, rel)
            if not raw.strip():
                raise RecordError(f"{rel} is empty", expectation="non_empty")
            if suffix in WHOLE_FILE:
                yield self._whole_file(rel, suffix, raw)
            else:
                yield from self._json_records(rel, raw)
        except RecordError as err:
            yield self._quarantine(rel, err)
        except OSError as exc:
            yield self._quarantine(rel, RecordError(f"cannot be read: {exc.strerror}", "readable"))
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not stop the batch
            yield self._quarantine(rel, unreadable(exc))

    def _whole_file(self, rel: str, suffix: str, raw: bytes) -> Document:
        text = fmt.decode(raw, self.config.options.encoding, rel)
        title = ""
        if suffix in {".html", ".htm"}:
            text, title = fmt.html_to_text(text)
        elif suffix in {".md", ".markdown"}:
            title = fmt.markdown_title(text)
        return Document(
            doc_id=self._doc_id(rel),
            source=self.config.name,
            uri=str(self.root / rel),
            modality="text",
            text=text,
            title=title or fmt.first_line_title(text) or Path(rel).stem,
            size_bytes=len(raw),
            metadata={"path": rel},
        )

    def _records(self, rel: str, suffix: str, path: Path) -> Iterator[Loaded]:
        """A JSONL, CSV or Parquet file's records, streamed (flat memory for any file size).

        Two passes: the first finds the ids given more than once anywhere in the file (every copy
        is quarantined, with the lines of all of them), the second yields the records."""
        opts = self.config.options

        def items() -> Iterator[tuple[int, Any]]:
            if suffix == ".jsonl":
                found = records.iter_jsonl(path, opts.encoding, opts.max_file_bytes, rel)
            elif suffix == ".csv":
                found = records.iter_csv(path, opts.encoding, opts.max_file_bytes, rel,
                                         opts.text_field)
            else:
                found = records.iter_parquet(path, opts.max_file_bytes, rel, opts.text_field)
            return enumerate(rec for _, rec in found)

        dups = find_duplicates((key, rec.get("__line__", index + 1)) for index, rec in items()
                               if not isinstance(rec, RecordError)
                               and (key := self._key(rel, index, rec)))
        yield from self._documents(rel, items(), dups)

    def _json_records(self, rel: str, raw: bytes) -> Iterator[Loaded]:
        """A .json file (one object or a list), read whole within options.max_file_bytes."""
        parsed = list(enumerate(fmt.parse_json(fmt.decode(raw, self.config.options.encoding,
                                                          rel), rel)))
        dups = find_duplicates((key, index + 1) for index, rec in parsed
                               if (key := self._key(rel, index, rec)))
        yield from self._documents(rel, iter(parsed), dups)

    def _key(self, rel: str, index: int, rec: dict[str, Any]) -> str:
        """The document id a record gets ('' when it has none)."""
        record_id = rec.get(self.config.options.id_field)
        return self._doc_id(rel, record_id if record_id not in (None, "") else index)

    def _documents(self, rel: str, parsed: Iterator[tuple[int, Any]],
                   dups: dict[int, list[int]]) -> Iterator[Loaded]:
        for index, rec in parsed:
            if isinstance(rec, RecordError):
                yield self._quarantine(rel, rec, doc_id=self._doc_id(rel, f"error{index}"))
                continue
            if dups and (key := self._key(rel, index, rec)) and id_hash(key) in dups:
                yield self._duplicate(rel, key, rec.get("__line__", index + 1), dups[id_hash(key)])
                continue
            try:
                yield self._record(rel, index, rec)
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the file
                yield self._quarantine(rel, unreadable(exc, f"record {index}"),
                                       doc_id=self._doc_id(rel, f"error{index}"))

    def _duplicate(self, rel: str, doc_id: str, line: int, lines: list[int]) -> Quarantined:
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        return Quarantined(
            source=self.config.name, doc_id=doc_id, uri=f"{self.root / rel}#line={line}",
            reason=(f"{rel}: doc_id {doc_id!r} appears {len(lines)} times in this file (lines "
                    f"{shown}), so no copy was indexed; give each record its own id "
                    "(options.id_field)"),
            expectation="doc_id_unique", suite="documents", observed=str(len(lines)))

    def _record(self, rel: str, index: int, rec: dict[str, Any]) -> Loaded:
        opts = self.config.options
        record_id = rec.get(opts.id_field)
        doc_id = self._doc_id(rel, record_id if record_id not in (None, "") else index)
        where = f"line {rec['__line__']}" if "__line__" in rec else f"record {index}"
        text = rec.get(opts.text_field)
        if text is None or (isinstance(text, float) and text != text):
            return self._quarantine(
                rel,
                RecordError(f"{rel} {where}: the field {opts.text_field!r} is missing; set "
                            "options.text_field to the field that holds the text", "text_present"),
                doc_id=doc_id,
            )
        return Document(
            doc_id=doc_id,
            source=self.config.name,
            uri=f"{self.root / rel}#{where.replace(' ', '=')}",
            modality="text",
            text=str(text),
            title=str(rec.get(opts.title_field) or ""),
            size_bytes=len(str(text).encode("utf-8", "surrogatepass")),
            metadata={"path": rel, "record_id": str(record_id) if record_id is not None else None,
                      **({"modified_at": rec.get(opts.timestamp_field)} if opts.timestamp_field else {})},
        )


class BeirSource(DirectorySource):
    """A BEIR corpus.jsonl: `_id`, `title`, `text`; the doc id is the corpus id itself."""

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self.corpus = self.root / "corpus.jsonl" if self.root.is_dir() else self.root
        self.root = self.corpus.parent

    def discover(self) -> list[str]:
        """Just the corpus file."""
        if not self.corpus.exists():
            raise SourceError(f"source {self.config.name!r}: {self.corpus} not found (BEIR layout)")
        return [self.corpus.name]

    def _key(self, rel: str, index: int, rec: dict[str, Any]) -> str:
        return str(rec.get("_id", ""))

    def _record(self, rel: str, index: int, rec: dict[str, Any]) -> Loaded:
        doc_id = str(rec.get("_id", ""))
        if not doc_id:
            return self._quarantine(rel, RecordError(f"{rel} line {rec.get('__line__')}: no _id",
                                                     "id_present"), doc_id=f"{rel}#{index}")
        title, text = str(rec.get("title") or ""), rec.get("text")
        if text is None:
            return self._quarantine(rel, RecordError(f"{rel} {doc_id}: no text", "text_present"),
                                    doc_id=doc_id)
        # BEIR's convention (and MTEB's): embed "title text".
        body = f"{title} {text}".strip() if title else str(text)
        return Document(doc_id=doc_id, source=self.config.name, uri=f"{self.corpus}#{doc_id}",
                        modality="text", text=body, title=title,
                        size_bytes=len(body.encode("utf-8", "surrogatepass")),
                        metadata={"record_id": doc_id})
