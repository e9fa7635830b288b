"""What the config dataclasses of hade's audio encoders share: JSON round trips with a clear error for
unknown fields, and the set of fields that only shape training (regularisation), not what weights mean."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from hade.errors import InputError

C = TypeVar("C", bound="EncoderConfig")


class EncoderConfig:
    """Mixin of an encoder's config dataclass (needs `validate()`, `sample_rate` and `max_samples`)."""

    training_only: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def geometry(self) -> dict[str, Any]:
        """The fields that decide what the weights mean (all but `training_only`)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.training_only}


def check_positive(owner: str, config: Any, names: tuple[str, ...]) -> None:
    """InputError naming the first field of `names` that is not a positive integer."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"invalid {owner}: {name} must be a positive integer, got {value!r}")


def check_rates(owner: str, config: Any, names: tuple[str, ...]) -> None:
    """InputError unless every field of `names` is a probability in [0, 1)."""
    for name in names:
        if not 0.0 <= float(getattr(config, name)) < 1.0:
            raise InputError(f"invalid {owner}: {name} must be in [0, 1), got {getattr(config, name)!r}")


def check_levels(owner: str, levels: list[int], depth: int) -> list[int]:
    """The chosen blocks of a ViT as a strictly increasing list inside 1..depth."""
    levels = [int(b) for b in levels]
    if not levels or any(not 1 <= b <= depth for b in levels) or sorted(set(levels)) != levels:
        raise InputError(f"invalid {owner}: levels must be increasing blocks in 1..{depth}, got {levels}")
    return levels


__all__ = ["EncoderConfig", "check_levels", "check_positive", "check_rates"]
