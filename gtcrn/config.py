"""Typed configuration: the only home of defaults.

``ModelConfig`` describes one member of the GTCRN family. Named presets are
small override dictionaries applied on top of the dataclass defaults, and YAML
files in ``configs/`` hold overrides only; both go through :func:`from_dict`,
which rejects unknown keys by name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


@dataclass
class ModelConfig:
    """Hyper-parameters of a GTCRN-family model (defaults = ``gtcrn-g32``)."""

    name: str = "gtcrn-g32"
    # Encoder flavour: "g32" (band stem + skip-fusion) or "official" (published GTCRN topology).
    encoder: str = "g32"
    # ERB front end: the lowest `erb_low` STFT bins are kept, the rest mapped to `erb_bands` bands.
    erb_low: int = 64
    erb_bands: int = 64
    erb_high_hz: float = 8000.0
    # Band stem (g32 only): the F = erb_low + erb_bands bins seen as `stem_bands` bands.
    stem_bands: int = 32
    stem_groups: int = 32
    stem_channels: int = 8
    head_groups: int = 32
    # Skip-fusion of front-end features with deep features (g32 only).
    skip_fusion: bool = True
    # Shared body.
    channels: int = 16
    dilations: tuple[int, ...] = (1, 2, 5)
    num_dpgrnn: int = 2

    def __post_init__(self) -> None:
        self.dilations = tuple(int(d) for d in self.dilations)
        if self.encoder not in ("g32", "official"):
            raise ConfigError(f"model.encoder must be 'g32' or 'official', got {self.encoder!r}")
        if self.erb_low < 1 or self.erb_bands < 2 or self.erb_low + self.erb_bands > 257:
            raise ConfigError("model.erb_low / erb_bands out of range for a 512-point STFT")
        if self.encoder == "g32":
            if self.num_bins % self.stem_bands:
                raise ConfigError(
                    f"model.stem_bands={self.stem_bands} must divide the {self.num_bins} ERB bins"
                )
            for key in ("stem_groups", "head_groups"):
                g = getattr(self, key)
                if g < 1 or self.stem_bands % g:
                    raise ConfigError(f"model.{key}={g} must divide stem_bands={self.stem_bands}")
            if self.num_bins // 4 != self.stem_bands * (self.num_bins // self.stem_bands) // 4:
                raise ConfigError("model: ERB bins must be a multiple of 4 for the two strided convs")
        if self.channels % 2:
            raise ConfigError("model.channels must be even (GTConvBlock splits channels in two)")

    @property
    def num_bins(self) -> int:
        """Frequency size F after the ERB analysis (low bins + bands)."""
        return self.erb_low + self.erb_bands

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """A named preset: ``gtcrn-g32`` (default design) or ``gtcrn-official``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
        return from_dict(cls, {"name": name, **PRESETS[name]})

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return from_dict(cls, data)


@dataclass
class LossConfig:
    """GTCRN's hybrid loss: ri_weight x MSE(compressed real/imag) + mag_weight x MSE(|S|^c)
    + sisnr_weight x (-SI-SNR in dB / 10), with compressed spectrum S / |S|^(1 - c)."""

    ri_weight: float = 30.0
    mag_weight: float = 70.0
    sisnr_weight: float = 1.0
    compress: float = 0.3
    eps: float = 1e-12


PRESETS: dict[str, dict[str, Any]] = {
    "gtcrn-g32": {},
    "gtcrn-official": {"encoder": "official", "erb_low": 65, "erb_bands": 64, "skip_fusion": False},
}


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (YAML and ``weights_only`` friendly)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any or origin is not None:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float, str):
        if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if tp is str and isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError` naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {where!r}")
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (an empty file is an empty mapping)."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


__all__ = ["ConfigError", "LossConfig", "ModelConfig", "PRESETS", "from_dict", "to_dict", "load_yaml", "field"]
