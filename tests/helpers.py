"""Small utilities shared by the tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import gtcrn


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (eval behaviour
    then differs from identity, so tests exercise it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def make_model(preset: str = "gtcrn-g32", **overrides) -> gtcrn.GTCRN:
    """A randomly initialised model in eval mode with randomised BatchNorm statistics."""
    cfg = gtcrn.ModelConfig.preset(preset)
    if overrides:
        cfg = gtcrn.ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    return randomise_batchnorm(gtcrn.GTCRN(cfg)).eval()


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal that PESQ's VAD accepts as speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 130 + 40 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros_like(t)
    for k in range(1, 40):
        if k * 170 < min(sr / 2, 7000):
            x += np.sin(k * phase + rng.uniform(0, 6)) / k
    x *= np.clip(np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6)), 0, None) ** 1.5
    return (0.2 * x / np.abs(x).max()).astype(np.float32)
