"""Shared pieces of the data-set readers: CSV access with line numbers, caption cleaning, clip collection."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from hade.data.audio import audio_problem
from hade.data.types import Clip, Problem, SplitData
from hade.errors import InputError


def read_text(path: Path, what: str) -> str:
    """Read a UTF-8 text file (a BOM is tolerated); InputError names the file on failure."""
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 text (byte offset {exc.start}); expected a UTF-8 {what} file") from None


def iter_csv(
    path: Path,
    required: Sequence[str],
    expected_header: str,
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Open a CSV file with a header. Returns (header, iterator of (line number, row dict)).

    Raises InputError for a missing/empty file, missing or duplicated columns, and rows whose field
    count differs from the header's. Blank lines are skipped.
    """
    text = read_text(path, "CSV")
    if not text.strip():
        raise InputError(f"{path}: file is empty; expected a CSV header line '{expected_header}' followed by rows")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise InputError(f"{path}:1: malformed CSV header ({exc}); expected '{expected_header}'") from None
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)  # leading blank lines
    if header is None:  # pragma: no cover - guarded by the strip() check above
        raise InputError(f"{path}: no CSV header; expected '{expected_header}'")
    header = [h.strip() for h in header]
    header_line = reader.line_num
    dup = sorted({h for h in header if h and header.count(h) > 1})
    if dup:
        raise InputError(f"{path}:{header_line}: duplicated column(s) {', '.join(map(repr, dup))} in header")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{path}:{header_line}: missing required column(s) {', '.join(map(repr, missing))}; "
            f"expected header '{expected_header}', found '{','.join(header)}'"
        )

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        prev = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{path}:{prev + 1}: malformed CSV row ({exc})") from None
            line = prev + 1
            prev = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                raise InputError(
                    f"{path}:{line}: expected {len(header)} fields ({','.join(header)}), found {len(fields)}"
                )
            yield line, dict(zip(header, fields))

    return header, rows()


def load_json(path: Path, what: str) -> object:
    """Parse a whole JSON file; InputError names the file, line and column of a syntax error."""
    text = read_text(path, what)
    if not text.strip():
        raise InputError(f"{path}: file is empty; expected a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON at column {exc.colno} ({exc.msg})") from None


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def resolve_path(text: str, base: Path) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


class ClipCollector:
    """Accumulates clips and problems with the rules every reader shares.

    - captions are stripped; empty ones are dropped with a Problem naming ``where`` and the column;
    - a clip left without captions is skipped with a Problem;
    - a repeated clip id is skipped with a Problem (the first occurrence wins);
    - with ``verify_audio`` the audio header is read; a missing/unreadable file skips the clip with
      ``Problem(source=<audio path>, ...)``.
    """

    def __init__(self, name: str, verify_audio: bool = True) -> None:
        self.split = SplitData(name=name)
        self.verify_audio = verify_audio
        self._seen: dict[str, str] = {}

    def problem(self, source: str, reason: str) -> None:
        self.split.problems.append(Problem(source=str(source), reason=reason))

    def caption(self, raw: str, where: str, column: str) -> str | None:
        text = raw.strip()
        if not text:
            self.problem(where, f"empty caption in column '{column}'; caption dropped")
            return None
        return text

    def add(self, clip_id: str, audio_path: Path, captions: Sequence[str], where: str) -> bool:
        if not clip_id:
            self.problem(where, "empty clip id; clip skipped")
            return False
        first = self._seen.get(clip_id)
        if first is not None:
            self.problem(where, f"duplicate clip id {clip_id!r} (first at {first}); clip skipped")
            return False
        if not captions:
            self.problem(where, f"clip {clip_id!r} has no non-empty caption; clip skipped")
            return False
        if self.verify_audio:
            reason = audio_problem(audio_path)
            if reason is not None:
                self.problem(str(audio_path), f"{reason}; clip {clip_id!r} ({where}) skipped")
                return False
        self._seen[clip_id] = where
        self.split.clips.append(Clip(clip_id=clip_id, audio_path=Path(audio_path), captions=tuple(captions)))
        return True

    def add_audio_problem(self, audio_path: Path, reason: str, clip_id: str, where: str) -> None:
        self.problem(str(audio_path), f"{reason}; clip {clip_id!r} ({where}) skipped")


def peek_csv_header(path: Path) -> list[str]:
    """Best-effort header of a CSV file (empty list when unreadable); used only to detect layouts."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            for _, line in zip(range(50), f):
                if line.strip():
                    return [h.strip() for h in next(csv.reader([line]))]
    except (OSError, csv.Error, StopIteration):
        return []
    return []
