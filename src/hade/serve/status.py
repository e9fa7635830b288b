"""The status behind GET /health: the index's cheap check, the model's fingerprint, and the body.

Nothing here takes the model lock: /health must answer at once, even while a long audio query runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch

from hade.serve.limits import MAX_K, MAX_QUERY_CHARS
from hade.utils.jsonable import jsonable

log = logging.getLogger("hade.serve")


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the model's config and weights."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        try:
            from hade.config import to_dict

            h.update(json.dumps(to_dict(config), sort_keys=True, default=str).encode())
        except Exception:
            h.update(repr(config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def index_health(index: Any) -> dict[str, Any]:
    """`index.health()` (a cheap stat-only check) as {"status": "ok" | "degraded", "problems", "repair"};
    never raises."""
    try:
        result = dict(index.health())
    except Exception as exc:  # noqa: BLE001 - the contract says it never raises; /health must answer anyway
        log.warning("index.health() failed: %s", exc)
        return {"status": "degraded", "problems": [{"file": "", "problem": "the index check failed"}],
                "repair": None}
    status = "ok" if result.get("status") == "ok" else "degraded"
    return {"status": status, "problems": list(result.get("problems") or []), "repair": result.get("repair")}


def stored_fingerprint(info: dict[str, Any]) -> str | None:
    """The model fingerprint the index recorded (`Index.info()`), if any."""
    for key in ("model_fingerprint", "fingerprint"):
        if isinstance(info.get(key), str):
            return info[key]
    model_info = info.get("model")
    if isinstance(model_info, dict) and isinstance(model_info.get("fingerprint"), str):
        return model_info["fingerprint"]
    return None


def health_body(index: Any, info: dict[str, Any], fingerprint: str, max_upload_bytes: int) -> dict[str, Any]:
    """The JSON of GET /health: status "ok", or "degraded" with the problems and the repair command when a
    file of the index is damaged (then `error` holds a one-line summary); no server paths."""
    model = index.model
    check = index_health(index)
    body: dict[str, Any] = {
        "status": check["status"], "windows": len(index),
        "files": info.get("files", info.get("num_files")),
        "head": getattr(getattr(model, "config", None), "head", None),
        "sample_rate": int(model.sample_rate),
        "model_fingerprint": fingerprint,
        "max_upload_bytes": max_upload_bytes, "max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K,
        "index": {k: v for k, v in info.items() if k not in ("path", "root")},  # no server paths
    }
    if check["status"] != "ok":
        body.update(problems=check["problems"], repair=check["repair"], error=degraded_message(check))
    return jsonable(body)


def degraded_message(check: dict[str, Any]) -> str:
    problems = check["problems"]
    first = problems[0] if problems else {}
    text = f"the index is damaged: {first.get('file', '?')} {first.get('problem', '')}".rstrip()
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more)"
    if check.get("repair"):
        text += f"; repair with `{check['repair']}`"
    return text
