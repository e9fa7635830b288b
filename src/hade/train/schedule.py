"""Learning-rate schedule: linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def param_groups(model: torch.nn.Module, lr: float, text_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: the pretrained text encoder gets `text_lr`; biases and norm weights get no decay."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_text = name.startswith("text_encoder.")
        no_decay = param.dim() < 2
        groups.setdefault((is_text, no_decay), []).append(param)
    return [
        {"params": params, "lr": text_lr if is_text else lr, "weight_decay": 0.0 if no_decay else weight_decay}
        for (is_text, no_decay), params in sorted(groups.items())
    ]
