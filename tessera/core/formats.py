"""The file formats Tessera reads, by extension: the one list the sources and contracts share."""

from __future__ import annotations

# A whole file is one document.
WHOLE_FILE = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".rst"})
# Each record of the file is one document.
RECORD_FILES = frozenset({".json", ".jsonl", ".csv", ".parquet"})
TEXT_SUFFIXES = WHOLE_FILE | RECORD_FILES
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
ALL_SUFFIXES = TEXT_SUFFIXES | IMAGE_SUFFIXES
