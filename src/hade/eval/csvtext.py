"""Reading the CSV files users hand to `hade eval` (submissions, relevance annotations): every way a file can
be unreadable is one InputError naming the file and line, never a traceback."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from hade.errors import InputError


def read_text_file(path: Path, what: str) -> str:
    """The text of a UTF-8 file (BOM allowed); InputError naming the file, and the offending byte, otherwise."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex()
        line = exc.object[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 text (byte 0x{bad} at offset {exc.start}); "
                         f"save the {what} as UTF-8") from None


def csv_rows(text: str, path: Path) -> list[list[str]]:
    """Rows of a CSV text; a malformed file (e.g. a field over the csv module's limit of
    csv.field_size_limit() characters) is an InputError naming the file and line."""
    reader = csv.reader(io.StringIO(text))
    try:
        return list(reader)
    except csv.Error as exc:
        raise InputError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
