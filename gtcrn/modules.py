"""Building blocks of the GTCRN family, named after the paper's blocks.

Shapes are (B, C, T, F): batch, channels, frames, frequency.

Every block that looks back in time takes an explicit ``state`` (a list of
tensors, ``None`` = silence before the first frame) and returns the state
after its last frame. Offline processing, chunked processing of long files and
frame-by-frame streaming therefore run the very same code and weights; only
the number of frames per call differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

State = list[torch.Tensor]


class SFE(nn.Module):
    """Subband feature extraction: each bin gets itself and its neighbours.

    (B, C, T, F) -> (B, C * k, T, F), output channel ``c * k + j`` holding bin
    ``f + j - k // 2`` of input channel ``c`` (zero outside the spectrum).
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        half = self.kernel_size // 2
        xp = F.pad(x, (half, half))  # (B, C, T, F + k - 1)
        xs = torch.stack([xp[..., j:j + f] for j in range(self.kernel_size)], dim=2)  # (B, C, k, T, F)
        return xs.reshape(b, c * self.kernel_size, t, f)  # (B, C*k, T, F)


class TRA(nn.Module):
    """Temporal recurrent attention: a causal GRU over per-channel frame energy gates the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.att_gru = nn.GRU(channels, channels * 2, 1, batch_first=True)
        self.att_fc = nn.Linear(channels * 2, channels)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return [torch.zeros(1, batch, self.att_gru.hidden_size, device=device, dtype=dtype)]

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        zt = x.pow(2).mean(dim=-1).transpose(1, 2)  # (B, T, C)
        h0 = state[0] if state is not None else None
        at, h = self.att_gru(zt, h0)  # (B, T, 2C), (1, B, 2C)
        at = torch.sigmoid(self.att_fc(at)).transpose(1, 2)  # (B, C, T)
        return x * at.unsqueeze(-1), [h]  # (B, C, T, F)


class ConvBlock(nn.Module):
    """Frequency-axis (de)convolution + BatchNorm + PReLU (or Tanh for a last layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], groups: int = 1,
                 use_deconv: bool = False, is_last: bool = False,
                 output_padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        if use_deconv:
            self.conv: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride,
                                                      padding, output_padding=output_padding,
                                                      groups=groups)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Tanh() if is_last else nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GTConvBlock(nn.Module):
    """Grouped temporal convolution block.

    Half of the channels pass through: SFE -> point conv -> causal depthwise
    conv dilated in time -> point conv -> TRA; the other half is kept, and the
    two halves are interleaved (channel shuffle). The decoder variant uses
    transposed convolutions (stride 1), which are causal given the same left
    padding. State: the last ``(k - 1) * dilation`` frames entering the
    depthwise conv, and the TRA hidden state.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: tuple[int, int],
                 dilation: int, use_deconv: bool = False) -> None:
        super().__init__()
        self.pad_size = (kernel_size[0] - 1) * dilation
        self.hidden_channels = hidden_channels
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        half = in_channels // 2
        # A stride-1 transposed conv with time padding (k-1)*d over a left-padded input is causal.
        padding = (self.pad_size, 1) if use_deconv else (0, 1)
        self.sfe = SFE(3)
        self.point_conv1 = conv(half * 3, hidden_channels, 1)
        self.point_bn1 = nn.BatchNorm2d(hidden_channels)
        self.point_act = nn.PReLU()
        self.depth_conv = conv(hidden_channels, hidden_channels, kernel_size, stride=1,
                               padding=padding, dilation=(dilation, 1), groups=hidden_channels)
        self.depth_bn = nn.BatchNorm2d(hidden_channels)
        self.depth_act = nn.PReLU()
        self.point_conv2 = conv(hidden_channels, half, 1)
        self.point_bn2 = nn.BatchNorm2d(half)
        self.tra = TRA(half)

    def init_state(self, batch: int, width: int, device: torch.device, dtype: torch.dtype) -> State:
        cache = torch.zeros(batch, self.hidden_channels, self.pad_size, width, device=device, dtype=dtype)
        return [cache, *self.tra.init_state(batch, device, dtype)]

    @staticmethod
    def shuffle(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Interleave two (B, C, T, F) tensors channel by channel -> (B, 2C, T, F)."""
        b, c, t, f = x1.shape
        return torch.stack([x1, x2], dim=2).reshape(b, 2 * c, t, f)  # (B, C, 2, T, F) -> (B, 2C, T, F)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x1, x2 = torch.chunk(x, 2, dim=1)  # 2 x (B, C/2, T, F)
        h = self.point_act(self.point_bn1(self.point_conv1(self.sfe(x1))))  # (B, H, T, F)
        if state is None:
            h = F.pad(h, (0, 0, self.pad_size, 0))  # (B, H, pad + T, F)
        else:
            h = torch.cat([state[0], h], dim=2)  # (B, H, pad + T, F)
        cache = h[:, :, h.shape[2] - self.pad_size:]  # (B, H, pad, F)
        h = self.depth_act(self.depth_bn(self.depth_conv(h)))  # (B, H, T, F)
        h = self.point_bn2(self.point_conv2(h))  # (B, C/2, T, F)
        h, tra_state = self.tra(h, None if state is None else state[1:])
        return self.shuffle(h, x2), [cache, *tra_state]


class GRNN(nn.Module):
    """Grouped GRU: the features and the hidden state are split in two groups, one GRU each."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.rnn1 = nn.GRU(input_size // 2, hidden_size // 2, 1, batch_first=True,
                           bidirectional=bidirectional)
        self.rnn2 = nn.GRU(input_size // 2, hidden_size // 2, 1, batch_first=True,
                           bidirectional=bidirectional)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        dirs = 2 if self.bidirectional else 1
        return [torch.zeros(dirs, batch, self.hidden_size, device=device, dtype=dtype)]

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (B, L, input_size), state [(dirs, B, hidden)] -> y (B, L, dirs * hidden), state."""
        x1, x2 = torch.chunk(x, 2, dim=-1)  # 2 x (B, L, in/2)
        if state is None:
            h1 = h2 = None
        else:
            h1, h2 = (h.contiguous() for h in torch.chunk(state[0], 2, dim=-1))  # 2 x (dirs, B, hidden/2)
        y1, h1 = self.rnn1(x1, h1)  # (B, L, dirs * hidden/2), (dirs, B, hidden/2)
        y2, h2 = self.rnn2(x2, h2)
        return torch.cat([y1, y2], dim=-1), [torch.cat([h1, h2], dim=-1)]


class DPGRNN(nn.Module):
    """Grouped dual-path RNN: bidirectional GRNN across frequency, causal GRNN across time.

    Each path: GRNN -> Linear -> LayerNorm over (F, C) -> residual add.
    State: the inter-frame (time) GRNN hidden state, (1, B * F, C).
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.channels = channels
        self.width = width
        self.intra_rnn = GRNN(channels, channels // 2, bidirectional=True)
        self.intra_fc = nn.Linear(channels, channels)
        self.intra_ln = nn.LayerNorm((width, channels), eps=1e-8)
        self.inter_rnn = GRNN(channels, channels, bidirectional=False)
        self.inter_fc = nn.Linear(channels, channels)
        self.inter_ln = nn.LayerNorm((width, channels), eps=1e-8)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return self.inter_rnn.init_state(batch * self.width, device, dtype)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        b, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1)  # (B, T, F, C)
        intra, _ = self.intra_rnn(x.reshape(b * t, f, c))  # (B*T, F, C)
        intra = self.intra_ln(self.intra_fc(intra).reshape(b, t, f, c))  # (B, T, F, C)
        x = x + intra  # (B, T, F, C)
        inter_in = x.permute(0, 2, 1, 3).reshape(b * f, t, c)  # (B*F, T, C)
        inter, new_state = self.inter_rnn(inter_in, state)  # (B*F, T, C)
        inter = self.inter_fc(inter).reshape(b, f, t, c).permute(0, 2, 1, 3)  # (B, T, F, C)
        x = x + self.inter_ln(inter)  # (B, T, F, C)
        return x.permute(0, 3, 1, 2), new_state  # (B, C, T, F)


class BandStem(nn.Module):
    """Band stem: a grouped conv over ERB bands (G = 32: one band per group).

    (B, C_in, T, F) is viewed as ``bands`` bands of F / bands bins; the bands
    are moved into the channel axis (channel = band * C_in + feature), a
    ``Conv2d(bands * C_in, bands * C_out, (1, 3), groups=groups)`` runs inside
    each band (zero padded at the band edges), and the result is moved back to
    (B, C_out, T, F). With ``groups == bands`` a band's output depends on that
    band's input only; ``groups = 1`` mixes all bands.
    """

    def __init__(self, in_channels: int, out_channels: int, bands: int, groups: int,
                 is_last: bool = False) -> None:
        super().__init__()
        self.bands = bands
        self.out_channels = out_channels
        self.conv = nn.Conv2d(bands * in_channels, bands * out_channels, (1, 3), padding=(0, 1),
                              groups=groups)
        self.bn = nn.BatchNorm2d(bands * out_channels)
        self.act: nn.Module = nn.Tanh() if is_last else nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        n = self.bands
        w = f // n
        xb = x.reshape(b, c, t, n, w).permute(0, 3, 1, 2, 4).reshape(b, n * c, t, w)  # (B, N*C, T, W)
        y = self.act(self.bn(self.conv(xb)))  # (B, N*C_out, T, W)
        y = y.reshape(b, n, self.out_channels, t, w).permute(0, 2, 3, 1, 4)  # (B, C_out, T, N, W)
        return y.reshape(b, self.out_channels, t, f)  # (B, C_out, T, F)


class SkipFusion(nn.Module):
    """Concatenate deep features with band-pooled front-end features; fuse with a 1x1 conv.

    deep (B, C, T, N) and front (B, C_f, T, F) with F = N * W: the front-end
    features are averaged over each band's W bins -> (B, C_f, T, N), then
    ``Conv2d(C + C_f, C, 1)`` + BN + PReLU.
    """

    def __init__(self, channels: int, front_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels + front_channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU()

    def forward(self, deep: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
        b, c, t, f = front.shape
        n = deep.shape[-1]
        pooled = front.reshape(b, c, t, n, f // n).mean(dim=-1)  # (B, C_f, T, N)
        return self.act(self.bn(self.conv(torch.cat([deep, pooled], dim=1))))  # (B, C, T, N)


class ComplexMask(nn.Module):
    """Complex ratio mask: S = M * X with complex multiplication, on (B, 2, T, F) tensors."""

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        s_real = spec[:, 0] * mask[:, 0] - spec[:, 1] * mask[:, 1]  # (B, T, F)
        s_imag = spec[:, 1] * mask[:, 0] + spec[:, 0] * mask[:, 1]  # (B, T, F)
        return torch.stack([s_real, s_imag], dim=1)  # (B, 2, T, F)
