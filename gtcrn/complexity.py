"""Model size and compute per second of audio.

Counting rules (one multiply-accumulate = one MAC), measured with forward
hooks on the plain modules (:mod:`gtcrn.nn`) while the model enhances one second of 16 kHz
audio, then scaled to exactly 62.5 frames per second:

* ``Conv2d``: output elements x (in_channels / groups) x kernel area, plus one
  per output element for the bias.
* ``ConvTranspose2d``: input elements x (out_channels / groups) x kernel area,
  plus one per output element for the bias (the ptflops convention).
* ``Linear``: rows x in_features x out_features, plus one per output for the
  bias. This includes the fixed ERB analysis and synthesis matrices.
* ``GRU``: per step and direction 3 (in h + h h) for the two matrix products,
  plus the ptflops element-wise terms (6 h for the biases, 7 h for the gate
  arithmetic).
* ``BatchNorm2d`` and ``LayerNorm`` (affine): 2 per element; ``PReLU``: 1 per element.
* Nothing for the ERB low-band concatenation, reshapes, the sigmoid/tanh
  non-linearities, SFE (a copy) or the complex mask.

These follow ptflops 0.7, with which the published GTCRN figure (33.0 M
MACs/s) was obtained; counting only the matrix products gives about 26 M
MACs/s for the same model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .stft import FRAMES_PER_SECOND, SAMPLE_RATE, stft


def _conv_macs(m: nn.Conv2d, inp: torch.Tensor, out: torch.Tensor) -> int:
    k = m.kernel_size[0] * m.kernel_size[1]
    macs = out.numel() * (m.in_channels // m.groups) * k
    return macs + (out.numel() if m.bias is not None else 0)


def _deconv_macs(m: nn.ConvTranspose2d, inp: torch.Tensor, out: torch.Tensor) -> int:
    k = m.kernel_size[0] * m.kernel_size[1]
    macs = inp.numel() * (m.out_channels // m.groups) * k
    return macs + (out.numel() if m.bias is not None else 0)


def _linear_macs(m: nn.Linear, inp: torch.Tensor, out: torch.Tensor) -> int:
    rows = inp.numel() // m.in_features
    return rows * m.in_features * m.out_features + (out.numel() if m.bias is not None else 0)


def _gru_macs(m: nn.GRU, inp: torch.Tensor, out: torch.Tensor) -> int:
    steps = inp.numel() // m.input_size  # batch x sequence length
    h = m.hidden_size
    dirs = 2 if m.bidirectional else 1
    per_step = 3 * (m.input_size * h + h * h) + (6 * h if m.bias else 0) + 7 * h
    return steps * dirs * per_step * m.num_layers


def _norm_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    return 2 * out.numel()


def _act_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    return out.numel()


_RULES: dict[type, Any] = {
    nn.Conv2d: _conv_macs,
    nn.ConvTranspose2d: _deconv_macs,
    nn.Linear: _linear_macs,
    nn.GRU: _gru_macs,
    nn.BatchNorm2d: _norm_macs,
    nn.LayerNorm: _norm_macs,
    nn.PReLU: _act_macs,
}


def macs_per_second(model: nn.Module, breakdown: bool = False) -> float | tuple[float, dict[str, float]]:
    """MACs per second of 16 kHz audio under the rules of this module's docstring."""
    totals: dict[str, int] = {}
    handles = []

    def make_hook(name: str, rule: Any) -> Any:
        def hook(m: nn.Module, args: tuple, out: Any) -> None:
            o = out[0] if isinstance(out, tuple) else out
            totals[name] = totals.get(name, 0) + rule(m, args[0], o)
        return hook

    for name, module in model.named_modules():
        rule = _RULES.get(type(module))
        if rule is not None:
            handles.append(module.register_forward_hook(make_hook(name, rule)))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        wav = torch.zeros(1, SAMPLE_RATE, device=param.device, dtype=param.dtype)
        spec = stft(wav)  # (1, 257, T, 2)
        with torch.no_grad():
            model(spec)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scale = FRAMES_PER_SECOND / spec.shape[2]
    total = sum(totals.values()) * scale
    if breakdown:
        return total, {k: v * scale for k, v in totals.items()}
    return total


def complexity(model: nn.Module) -> dict[str, Any]:
    """{"learnable_params", "params", "macs_per_second"} of ``model``."""
    return {
        "learnable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params": sum(p.numel() for p in model.parameters()),
        "macs_per_second": float(macs_per_second(model)),
    }
