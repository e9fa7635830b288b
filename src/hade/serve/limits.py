"""Every limit of `hade serve` and its default, in one place (docs/security.md lists them from here).

Kept free of heavy imports: `hade serve --help` reads the defaults from this module.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""Largest query clip accepted by POST /search/audio (413 above; `--max-upload-mb`)."""
MULTIPART_OVERHEAD = 64 * 1024
"""Boundaries and part headers allowed on top of MAX_UPLOAD_BYTES in a request body."""
MAX_QUERY_SECONDS = 600.0
"""Longest query clip, checked from the file header before anything is decoded (400 above)."""
MAX_QUERY_CHARS = 500
"""Longest text query (GET /search?q=, GET /explain/{id}?q=) (422 above)."""
MAX_K = 100
"""Most results per query (422 above)."""
MAX_AUDIO_ACTIVE = 1
"""Audio uploads decoded and encoded at the same time (the others wait in the audio queue)."""
MAX_AUDIO_QUEUE = 2
"""Audio uploads waiting for an encoding slot; one more gets 503 + Retry-After (`--max-audio-queue`)."""
MAX_TEXT_QUEUE = 32
"""Text requests (search, explain) in flight at once; one more gets 503 + Retry-After (`--max-text-queue`)."""
AUDIO_BATCH = 4
"""Windows of an upload encoded per turn of the model (`--audio-batch`): a text query waits for at most
one such turn. The index's own default, `hade.index.search.AUDIO_QUERY_BATCH` (a test keeps them equal;
not imported, see above)."""
RETRY_AFTER_SECONDS = 5
"""Retry-After of those 503 answers."""
DECODE_BLOCK_FRAMES = 65536
"""Frames an upload is decoded (and down-mixed, resampled) per step, so no whole-clip stereo copy exists."""
PEAK_BUCKETS = 400
"""(min, max) pairs of the waveform envelope GET /peaks/{id} returns per indexed file."""
MAX_PEAKS_QUEUE = 64
"""GET /peaks requests in flight at once (a page asks for one per result); one more gets 503."""
PEAK_CACHE_FILES = 2048
"""Files whose envelope the server keeps in memory (about 3 kB each)."""
AUDIO_QUERY_CACHE = 64
"""Recent audio uploads whose query vector is kept, so that "Why?" can explain their results."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.0/8", "::1")
"""Host header values always accepted (with or without a port). The bound --host is added when it is a
specific address; `--allowed-host NAME` adds more; `--allowed-host '*'` disables the check (unsafe: it
lets any web page the user visits read the index through DNS rebinding)."""


def is_loopback_name(host: str) -> bool:
    """localhost or an address in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Limits:
    """The limits one app runs with (see the module constants for what each bounds)."""

    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_query_seconds: float = MAX_QUERY_SECONDS
    max_audio_active: int = MAX_AUDIO_ACTIVE
    max_audio_queue: int = MAX_AUDIO_QUEUE
    max_text_queue: int = MAX_TEXT_QUEUE
    audio_batch: int = AUDIO_BATCH
    retry_after_seconds: int = RETRY_AFTER_SECONDS
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
        if self.max_audio_active < 1:
            raise ValueError(f"max_audio_active must be >= 1, got {self.max_audio_active}")
        if self.audio_batch < 1:
            raise ValueError(f"audio_batch must be >= 1, got {self.audio_batch}")
        if self.max_audio_queue < 0 or self.max_text_queue < 1:
            raise ValueError(f"max_audio_queue must be >= 0 and max_text_queue >= 1, got "
                             f"{self.max_audio_queue} and {self.max_text_queue}")


def describe() -> dict[str, object]:
    """The defaults as a flat dict (for documentation and `/health`)."""
    return {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_query_seconds": MAX_QUERY_SECONDS,
            "max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K, "max_audio_active": MAX_AUDIO_ACTIVE,
            "max_audio_queue": MAX_AUDIO_QUEUE, "max_text_queue": MAX_TEXT_QUEUE,
            "audio_batch": AUDIO_BATCH, "retry_after_seconds": RETRY_AFTER_SECONDS, "allowed_hosts": list(LOOPBACK_HOSTS)}


__all__ = ["AUDIO_QUERY_CACHE", "MAX_PEAKS_QUEUE", "PEAK_BUCKETS", "PEAK_CACHE_FILES", "AUDIO_BATCH", "DECODE_BLOCK_FRAMES", "LOOPBACK_HOSTS", "MAX_AUDIO_ACTIVE", "MAX_AUDIO_QUEUE", "MAX_K",
           "MAX_QUERY_CHARS", "MAX_QUERY_SECONDS", "MAX_TEXT_QUEUE", "MAX_UPLOAD_BYTES", "MULTIPART_OVERHEAD",
           "RETRY_AFTER_SECONDS", "Limits", "describe", "is_loopback_name"]
