"""One answer to "which device": the `--device` of every command and the `device=` of `hade.load`,
`Index.open` and `build_index` go through `resolve_device`, so that a device this machine lacks is one clear
line (InputError) before any work, not a traceback from deep inside torch."""
from __future__ import annotations

import torch

from hade.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device, where: str = "--device") -> torch.device:
    """`name` ("auto": CUDA when available, else CPU; "cpu"; "cuda"; "cuda:N"; a torch.device) as a usable
    torch.device. InputError naming `where` when the name is not a device, or names a CUDA device this
    machine does not have (no CUDA build or driver, or N beyond the GPUs it sees)."""
    if isinstance(name, torch.device):
        device = name
    elif str(name).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(str(name).strip())
        except (RuntimeError, ValueError):
            raise InputError(f"{where} {name!r}: expected {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{where} {name}: CUDA is not available on this machine (this torch build or "
                             f"driver has no GPU); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{where} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type not in ("cpu", "mps"):
        raise InputError(f"{where} {name!r}: expected {DEVICE_CHOICES}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{where} {name}: MPS is not available on this machine; use --device cpu")
    return device


__all__ = ["DEVICE_CHOICES", "resolve_device"]
