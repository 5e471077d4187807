"""Streaming readers for JSONL, CSV and Parquet: records flow one at a time, so a file of any size
is read in flat memory. `max_record_bytes` (the source's `options.max_file_bytes`) bounds one
record, not the file: a longer record is quarantined and the rest of the file is still read.

Each yields `(line, record)` or `(line, RecordError)` for a record that cannot be used; a
RecordError raised (not yielded) refuses the whole file (no records, no text column).
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tessera.core.errors import RecordError

Record = dict[str, Any]
Item = tuple[int, Record | RecordError]
_READ = 1024 * 1024


def _empty(name: str) -> RecordError:
    return RecordError(f"{name} is empty", expectation="non_empty")


def _too_long(name: str, where: str, limit: int) -> RecordError:
    return RecordError(
        f"{name} {where} is over this source's per-record limit of {limit:,} bytes "
        "(options.max_file_bytes); split the record or raise the limit",
        expectation="record_size_within_limit")


def _skip_rest_of_line(f: Any) -> None:
    while True:
        part = f.readline(_READ)
        if not part or part.endswith(b"\n"):
            return


def iter_jsonl(path: Path, encoding: str, max_record_bytes: int, name: str) -> Iterator[Item]:
    """One record per non-blank line; a bad line (JSON, encoding, size) is an error in its place."""
    any_text = False
    with path.open("rb") as f:
        lineno = 0
        while True:
            raw = f.readline(max_record_bytes + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > max_record_bytes and not raw.endswith(b"\n"):
                _skip_rest_of_line(f)
                any_text = True
                yield lineno, _too_long(name, f"line {lineno}", max_record_bytes)
                continue
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                any_text = True
                yield lineno, RecordError(
                    f"{name} line {lineno} is not valid {encoding}: byte 0x{raw[exc.start]:02x} "
                    f"at column {exc.start + 1}; re-save it as {encoding} or set options.encoding "
                    "for this source", expectation="valid_encoding")
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            any_text = True
            yield lineno, _parse_line(line, lineno)
    if not any_text:
        raise _empty(name)


def _parse_line(line: str, lineno: int) -> Record | RecordError:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return RecordError(f"line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})",
                           expectation="valid_json")
    except RecursionError:
        return RecordError(f"line {lineno}: the JSON is nested too deeply to read (over ~1,000 "
                           "levels); flatten the record", expectation="valid_json")
    if not isinstance(value, dict):
        return RecordError(f"line {lineno}: expected a JSON object, got {type(value).__name__}",
                           expectation="json_object")
    value.setdefault("__line__", lineno)
    return value


def check_encoding(path: Path, encoding: str, name: str) -> None:
    """Decode the whole file in pieces (flat memory); a RecordError names the first bad byte."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as f:
        while piece := f.read(_READ):
            try:
                decoder.decode(piece)
            except UnicodeDecodeError as exc:
                raise RecordError(
                    f"{name} is not valid {encoding}: byte 0x{piece[exc.start]:02x} at offset "
                    f"{offset + exc.start}; re-save it as {encoding} or set options.encoding for "
                    "this source", expectation="valid_encoding") from None
            offset += len(piece)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise RecordError(f"{name} is not valid {encoding}: it ends in the middle of a "
                              "character", expectation="valid_encoding") from None


def _missing_column(name: str, text_field: str, columns: list[str]) -> RecordError:
    shown = ", ".join(map(str, columns)) or "none"
    return RecordError(
        f"{name} has no column {text_field!r} (columns: {shown}); set options.text_field for "
        "this source to the column that holds the text", expectation="text_column_present")


def iter_csv(path: Path, encoding: str, max_record_bytes: int, name: str,
             text_field: str) -> Iterator[Item]:
    """Rows as records of strings; the line is where the row starts (the header is line 1)."""
    check_encoding(path, encoding, name)
    previous = csv.field_size_limit()
    csv.field_size_limit(max(max_record_bytes, 1))
    try:
        with path.open("r", encoding=encoding, newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise _empty(name) from None
            except csv.Error as exc:
                raise RecordError(f"{name} could not be parsed as csv: {exc}",
                                  expectation="parseable") from None
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0][1:]
            if text_field not in header:
                raise _missing_column(name, text_field, header)
            yield from _csv_rows(reader, header, max_record_bytes, name)
    finally:
        csv.field_size_limit(previous)


def _csv_rows(reader: Any, header: list[str], limit: int, name: str) -> Iterator[Item]:
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The quoting is broken from here on: what follows cannot be split into rows.
            yield start, RecordError(
                f"{name} line {start}: {exc}; the rest of the file was not read (fix the "
                "quoting, or raise options.max_file_bytes if a field is that long)",
                expectation="parseable")
            return
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if sum(len(c) for c in row) > limit:
            yield line, _too_long(name, f"line {line}", limit)
            continue
        rec: Record = dict(zip(header, row, strict=False))
        rec.setdefault("__line__", line)
        yield line, rec


def iter_parquet(path: Path, max_record_bytes: int, name: str, text_field: str) -> Iterator[Item]:
    """Rows as records, read a record batch at a time; the line is the row number (from 1)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise RecordError(f"{name} could not be parsed as parquet: {exc}",
                          expectation="parseable") from None
    columns = list(pf.schema_arrow.names)
    if text_field not in columns:
        raise _missing_column(name, text_field, columns)
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            text = rec.get(text_field)
            if isinstance(text, (str, bytes)) and len(text) > max_record_bytes:
                yield row, _too_long(name, f"row {row}", max_record_bytes)
                continue
            rec.setdefault("__line__", row)
            yield row, rec
    if row == 0:
        raise _empty(name)
