"""Training mixed precision, in one place: the autocast of the forward pass and, for fp16, the gradient
scaler of the backward pass and the optimiser step.

    fp32   no autocast, plain backward and step
    bf16   autocast to bfloat16 (CPU or CUDA); bfloat16 keeps float32's range, so no scaler
    fp16   autocast to float16 (CUDA only, `hade.config.check_precision`) with a GradScaler: the loss is
           scaled up before backward so small gradients survive float16, and unscaled before clipping
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable

import torch

from hade.config import check_precision

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast and gradient scaling of one training run; `precision` is checked for `device` at once."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.precision = check_precision(precision, device.type)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of the forward pass (encoders, heads, loss)."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device_type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate the scalar `loss` (scaled first under fp16)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
             grad_clip: float | None) -> None:
        """Clip the (unscaled) gradient norm of `parameters` to `grad_clip` (0/None: no clipping), then step;
        under fp16 a step whose gradients overflowed is skipped and the scale lowered."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state for a checkpoint (None without a scaler)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore what `state_dict` returned; a checkpoint written without one keeps the fresh scale."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
