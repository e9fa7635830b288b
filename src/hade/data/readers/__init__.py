"""Data-set readers: Clotho, AudioCaps, WavCaps, a JSON Lines manifest and packed sets, behind one ``read_split``.

Every reader returns ``SplitData(name, clips, problems)``. Bad *items* (missing/unreadable audio,
empty captions, clips left without captions, duplicate ids) are skipped and recorded as ``Problem``s;
bad *structure* (missing file, missing column, invalid JSON, wrong types) raises ``InputError`` naming
the file, line/field and what was expected. A packed set (``hade pack``, :mod:`hade.data.packed`) is told
by its marker file ``hade-packed.json`` and read like the folder it came from.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from hade.data.packed import layout as packed
from hade.data.readers import audiocaps, clotho, manifest, wavcaps
from hade.data.types import SplitData
from hade.errors import InputError

_MODULES: dict[str, ModuleType] = {m.LAYOUT: m for m in (clotho, audiocaps, wavcaps, manifest, packed)}
LAYOUTS: tuple[str, ...] = tuple(_MODULES)

# Canonical split -> names that mean the same split (so one name works for every layout).
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "development", "dev", "training"),
    "val": ("val", "validation", "valid"),
    "test": ("test", "evaluation", "eval", "testing"),
}
_ALL_ALIASES = {a for names in SPLIT_ALIASES.values() for a in names}


def canonical_split(split: str) -> str | None:
    """'development'/'dev'/'train' -> 'train', 'validation'/'val' -> 'val', 'evaluation'/'test' -> 'test'."""
    s = split.strip().lower()
    for canon, names in SPLIT_ALIASES.items():
        if s in names:
            return canon
    return None


def layout_split_name(layout: str, split: str) -> str:
    """The name ``layout`` uses for ``split`` (e.g. clotho + 'train' -> 'development'); unknown names pass through."""
    canon = canonical_split(split)
    return _module(layout).SPLITS[canon] if canon else split


def _module(layout: str) -> ModuleType:
    try:
        return _MODULES[layout]
    except KeyError:
        raise InputError(f"unknown data layout {layout!r}; expected one of: auto, {', '.join(LAYOUTS)}") from None


def _splits_in(layout: str, root: Path) -> list[str]:
    mod = _MODULES[layout]
    return mod.splits_in(root, _ALL_ALIASES) if layout == "wavcaps" else mod.splits_in(root)


def splits_of(root: str | Path, layout: str = "auto") -> list[str]:
    """The split names the data directory ``root`` holds (as its layout spells them)."""
    p = Path(root).expanduser()
    return _splits_in(detect_layout(p) if layout == "auto" else _module(layout).LAYOUT, p)


def _split_candidates(layout: str, split: str) -> list[str]:
    names = [split, split.lower()]
    canon = canonical_split(split)
    if canon:
        names.append(_MODULES[layout].SPLITS[canon])
        names += SPLIT_ALIASES[canon]
    out: list[str] = []
    for n in names:
        if n not in out:
            out.append(n)
    return out


def find_split_file(root: Path, layout: str, split: str) -> Path | None:
    """The file of ``split`` (or an alias of it) under directory ``root`` for ``layout``; None if absent."""
    mod = _module(layout)
    for name in _split_candidates(layout, split):
        p = mod.split_file(root, name)
        if p.is_file():
            return p
    return None


def _describe_expected() -> str:
    return (
        "clotho: clotho_captions_{split}.csv; audiocaps: {split}.csv with header "
        "audiocap_id,youtube_id,start_time,caption; wavcaps: {split}.json with a 'data' array; "
        "manifest: {split}.jsonl; packed: hade-packed.json (written by `hade pack`)"
    )


def _detect_file_layout(p: Path) -> str:
    """The layout of a captions/manifest file ``p``."""
    suffix = p.suffix.lower()
    if packed.sniff_file(p):
        return "packed"
    if manifest.sniff_file(p):
        return "manifest"
    if wavcaps.sniff_file(p):
        return "wavcaps"
    if suffix == ".csv":
        if clotho.sniff_file(p):
            return "clotho"
        if audiocaps.sniff_file(p):
            return "audiocaps"
        from hade.data.readers._common import peek_csv_header

        raise InputError(
            f"{p}: cannot tell the layout from the CSV header '{','.join(peek_csv_header(p))}'; expected "
            f"clotho '{clotho.EXPECTED_HEADER}' or audiocaps '{audiocaps.EXPECTED_HEADER}'"
        )
    raise InputError(f"{p}: unsupported data file type {suffix or '(no extension)'!r}; expected .csv, .json or .jsonl")


def detect_layout(root: str | Path, split: str | None = None) -> str:
    """Tell which layout ``root`` (a directory or a captions/manifest file) uses.

    For a directory holding several layouts, ``split`` disambiguates when only one of them has it.
    """
    p = Path(root).expanduser()
    if not p.exists():
        raise InputError(f"data path not found: {p}")
    if p.is_dir() and packed.is_packed_root(p):
        return "packed"
    if p.is_file():
        return _detect_file_layout(p)
    found = {layout: _splits_in(layout, p) for layout in LAYOUTS}
    found = {k: v for k, v in found.items() if v}
    if not found:
        names = sorted(x.name for x in p.iterdir())
        listing = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
        raise InputError(f"{p}: no known data layout found (contents: {listing or 'empty'}); expected {_describe_expected()}")
    if len(found) == 1:
        return next(iter(found))
    if split is not None:
        having = [lay for lay in found if find_split_file(p, lay, split) is not None]
        if len(having) == 1:
            return having[0]
    desc = "; ".join(f"{k} (splits: {', '.join(v)})" for k, v in found.items())
    raise InputError(f"{p}: several data layouts found: {desc}; pass layout= one of {', '.join(found)}")


def read_split(
    root: str | Path,
    split: str | None = None,
    layout: str = "auto",
    verify_audio: bool = True,
    audio_dir: str | Path | None = None,
) -> SplitData:
    """Read one split.

    root: a data directory (the layout is detected from the files present unless ``layout`` is given)
    or a direct path to a .csv/.json/.jsonl file (then ``split`` only names the result).
    split: any alias works for every layout (development≈train≈dev, validation≈val, evaluation≈test).
    verify_audio: read every audio header up front; missing/unreadable files become Problems.
    audio_dir: overrides where the layout looks for audio (default: next to the captions file).
    """
    p = Path(root).expanduser()
    if not p.exists():
        raise InputError(f"data path not found: {p}")
    if layout != "auto":
        _module(layout)
    aud = Path(audio_dir).expanduser() if audio_dir is not None else None
    if p.is_file():
        lay = detect_layout(p) if layout == "auto" else layout
        mod = _MODULES[lay]
        return mod.read(p, split or mod.split_from_file(p), aud, verify_audio)
    if not split:
        lay_hint = ""
        try:
            lay = detect_layout(p) if layout == "auto" else layout
            lay_hint = f"; found splits: {', '.join(_splits_in(lay, p)) or 'none'}"
        except InputError:
            pass
        raise InputError(f"a split name is required when the data path is a directory ({p}){lay_hint}")
    lay = detect_layout(p, split) if layout == "auto" else layout
    mod = _MODULES[lay]
    path = find_split_file(p, lay, split)
    if path is None:
        tried = ", ".join(mod.split_file(p, n).name for n in _split_candidates(lay, split))
        have = _splits_in(lay, p)
        raise InputError(
            f"{p}: no {lay} split {split!r} (looked for {tried}); found splits: {', '.join(have) or 'none'}; "
            f"expected one of {', '.join(mod.SPLITS.values())} or an alias"
        )
    return mod.read(path, split, aud, verify_audio)


def read_clotho(path: str | Path, name: str | None = None, audio_dir: str | Path | None = None, verify_audio: bool = True) -> SplitData:
    return read_split(path, name, layout="clotho", verify_audio=verify_audio, audio_dir=audio_dir)


def read_audiocaps(path: str | Path, name: str | None = None, audio_dir: str | Path | None = None, verify_audio: bool = True) -> SplitData:
    return read_split(path, name, layout="audiocaps", verify_audio=verify_audio, audio_dir=audio_dir)


def read_wavcaps(path: str | Path, name: str | None = None, audio_dir: str | Path | None = None, verify_audio: bool = True) -> SplitData:
    return read_split(path, name, layout="wavcaps", verify_audio=verify_audio, audio_dir=audio_dir)


def read_manifest(path: str | Path, name: str | None = None, audio_dir: str | Path | None = None, verify_audio: bool = True) -> SplitData:
    return read_split(path, name, layout="manifest", verify_audio=verify_audio, audio_dir=audio_dir)


__all__ = [
    "LAYOUTS",
    "SPLIT_ALIASES",
    "canonical_split",
    "detect_layout",
    "find_split_file",
    "layout_split_name",
    "read_audiocaps",
    "read_clotho",
    "read_manifest",
    "read_split",
    "read_wavcaps",
    "splits_of",
]
