"""Re-parameterisation math: plain layers rewritten as fewer, standard operations, differentiable
torch code shared by the deploy model (computed once) and the CPU training kernels (every step)."""

from __future__ import annotations

import torch
from torch import nn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel: (scale (C,), shift (C,))."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    return scale, shift if bn.bias is None else shift + bn.bias


def conv_weight(conv: nn.Conv2d | nn.ConvTranspose2d) -> torch.Tensor:
    """The weight (C_out, C_in / groups, kh, kw) of the ``Conv2d`` equal to ``conv``. A stride-1
    transposed conv is the conv with the kernel flipped and, per group, in and out channels swapped
    (its padding becomes ``dilation * (k - 1) - padding``)."""
    w = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):
        g = conv.groups
        cin, cout_g, kh, kw = w.shape
        w = w.view(g, cin // g, cout_g, kh, kw).transpose(1, 2).reshape(g * cout_g, cin // g, kh, kw)
        w = w.flip(2, 3)  # (C_out, C_in / groups, kh, kw)
    return w


def polyphase(conv: nn.ConvTranspose2d, width: int) -> tuple[torch.Tensor, tuple[int, int], int]:
    """A (1, K) transposed conv with stride s along frequency as one stride-1 conv (no zero stuffing).

    Output bin ``o = i s - P + k`` of the transposed conv, written ``o = m s + p``, reads input bin
    ``i = m + d`` through tap ``k = p + P - s d``. Returns the conv weight (C_out s, C_in / groups,
    1, kc) whose output channel ``c s + p`` holds bin ``m s + p`` of channel ``c``, its (left,
    right) padding, and the output width; interleave the phases and cut to the width.
    """
    s, kk, pp = conv.stride[1], conv.kernel_size[1], conv.padding[1]
    out_w = (width - 1) * s - 2 * pp + kk + conv.output_padding[1]
    offsets = [(p + pp - k) // s for p in range(s) for k in range(kk) if (p + pp - k) % s == 0]
    d_min, d_max = min(offsets), max(offsets)
    w = conv.weight[:, :, 0]  # (C_in, C_out / g, K)
    g = conv.groups
    cin, cout_g = w.shape[0], w.shape[1]
    w = w.view(g, cin // g, cout_g, kk).transpose(1, 2)  # (g, C_out / g, C_in / g, K)
    zero = w.new_zeros(w.shape[:3])
    taps = [w[..., k] if 0 <= (k := p + pp - s * (t + d_min)) < kk else zero
            for p in range(s) for t in range(d_max - d_min + 1)]
    wc = torch.stack(taps, dim=-1).view(g, cout_g, cin // g, s, -1)  # (g, C_out/g, C_in/g, s, kc)
    wc = wc.permute(0, 1, 3, 2, 4).reshape(g * cout_g * s, cin // g, 1, -1)  # (C_out s, C_in/g, 1, kc)
    extra = max(0, -(-out_w // s) - width)  # input bins to add on the right for the last phase
    return wc, (-d_min, d_max + extra), out_w


def interleave(y: torch.Tensor, stride: int, out_w: int) -> torch.Tensor:
    """Polyphase output (B, C s, T, M) -> (B, C, T, out_w): channel c s + p, bin m -> bin m s + p."""
    b, cs, t, m = y.shape
    y = y.view(b, cs // stride, stride, t, m).permute(0, 1, 3, 4, 2)  # (B, C, T, M, s)
    y = y.reshape(b, cs // stride, t, m * stride)  # (B, C, T, M s)
    return y if m * stride == out_w else y[..., :out_w]  # (B, C, T, out_w)


def band_matrix(conv: nn.Conv2d, bands: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A band stem's grouped (1, 3) conv (zero padded at each band's edges) over ``width`` bins as one
    matrix per group, acting on the columns of :func:`to_bands`: (G, k C_out w, C_in k w) and the bias
    (G, k C_out w, 1), for k = bands / G bands of w = width / bands bins; rows ordered (band, C_out,
    bin), i.e. BatchNorm's channel order band * C_out + out, columns (C_in, band, bin)."""
    g = conv.groups
    k, w = bands // g, width // bands
    cin, cout = conv.in_channels // bands, conv.out_channels // bands
    kern = conv.weight.view(g, k, cout, k, cin, 3)  # (G, band out, C_out, band in, C_in, tap)
    pos = torch.arange(w, device=kern.device)
    tap = torch.arange(3, device=kern.device).view(3, 1, 1) - 1
    shift = (pos.view(1, 1, w) == pos.view(1, w, 1) + tap).to(kern.dtype)  # (tap, bin out, bin in)
    mat = torch.einsum("gboacj,jvi->gbovcai", kern, shift)  # (G, band, C_out, bin, C_in, band, bin)
    bias = conv.bias.view(g, k, cout, 1).expand(g, k, cout, w)  # (G, band, C_out, bin)
    return mat.reshape(g, k * cout * w, cin * k * w), bias.reshape(g, -1, 1)


def to_bands(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, T, F) -> the columns of :func:`band_matrix`: (G, C F / G, B T)."""
    b, c, t, f = x.shape
    xg = x.reshape(b, c, t, groups, f // groups).permute(3, 1, 4, 0, 2)  # (G, C, F/G, B, T)
    return xg.reshape(groups, c * f // groups, b * t)


def from_bands(y: torch.Tensor, batch: int, frames: int, channels: int, bands: int) -> torch.Tensor:
    """:func:`band_matrix`'s output (G, k C w, B T) -> (B, C, T, F)."""
    y = y.reshape(bands, channels, -1, batch, frames)  # (N, C, w, B, T)
    return y.permute(3, 1, 4, 0, 2).flatten(3)  # (B, C, T, F)


def merge_grus(weights: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Independent one-layer GRUs on consecutive input slices, each ``[w_ih, w_hh, b_ih, b_hh]``
    (``nn.GRU`` layout, gates [r, z, n]), as one GRU: block diagonal per gate, hidden units in the
    order of the list. Exact: a gate of one GRU sees only its own inputs and hidden units."""
    merged = []
    for part in zip(*weights, strict=True):
        gates = [[p.view(3, p.shape[0] // 3, -1)[k] for p in part] for k in range(3)]
        merged.append(torch.cat([torch.block_diag(*gate) if part[0].dim() == 2 else torch.cat(gate).view(-1)
                                 for gate in gates]))
    return merged


def gru_weights(gru: nn.GRU, reverse: bool = False) -> list[torch.Tensor]:
    """One direction of a one-layer ``nn.GRU``: ``[w_ih, w_hh, b_ih, b_hh]``."""
    sfx = "_l0_reverse" if reverse else "_l0"
    return [getattr(gru, name + sfx) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def grnn_weights(grnn: nn.Module, reverse: bool = False) -> list[torch.Tensor]:
    """One direction of a :class:`gtcrn.nn.GRNN`, both groups as one GRU (units [group 1, group 2])."""
    return merge_grus([gru_weights(r, reverse) for r in (grnn.rnn1, grnn.rnn2)])


def prelu_slope(act: nn.Module) -> float | None:
    """The slope of a one-parameter PReLU as a float (it becomes a LeakyReLU), else None."""
    if isinstance(act, nn.PReLU) and act.weight.numel() == 1:
        return float(act.weight.detach())
    return None

