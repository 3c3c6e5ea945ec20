"""The paper's blocks, one plain form each, on (B, C, T, F). A block that looks back in time takes
``state`` (named by the owning block; None: silence) and returns the state after its last frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

State = dict[str, torch.Tensor]


def substate(state: State | None, name: str) -> State | None:
    """The entries of ``state`` owned by the sub-block ``name``, without the ``name.`` prefix."""
    if state is None:
        return None
    prefix = name + "."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def prefixed(name: str, state: State) -> State:
    """A sub-block's state as its owner names it: every key gets the ``name.`` prefix."""
    return {f"{name}.{key}": value for key, value in state.items()}


class SFE(nn.Module):
    """Subband feature extraction: (B, C, T, F) -> (B, C k, T, F), channel ``c k + j`` holding bin
    ``f + j - k // 2`` of channel ``c`` (zero outside the spectrum)."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        half = self.kernel_size // 2
        xp = F.pad(x, (half, half))  # (B, C, T, F + k - 1)
        xs = torch.stack([xp[..., j:j + f] for j in range(self.kernel_size)], dim=2)  # (B, C, k, T, F)
        return xs.reshape(b, c * self.kernel_size, t, f)  # (B, C k, T, F)


class ConvBlock(nn.Module):
    """(Transposed) conv along frequency + BatchNorm + PReLU (Tanh for an output layer); stateless."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], groups: int = 1,
                 use_deconv: bool = False, is_last: bool = False,
                 output_padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        extra = {"output_padding": output_padding} if use_deconv else {}
        self.conv: nn.Conv2d | nn.ConvTranspose2d = conv(in_channels, out_channels, kernel_size, stride,
                                                         padding, groups=groups, **extra)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Tanh() if is_last else nn.PReLU()

    def out_width(self, width: int) -> int:
        k, s, p = self.conv.kernel_size[1], self.conv.stride[1], self.conv.padding[1]
        if isinstance(self.conv, nn.ConvTranspose2d):
            return (width - 1) * s - 2 * p + k + self.conv.output_padding[1]
        return (width + 2 * p - k) // s + 1

    def init_state(self, batch: int, width: int, device: torch.device, dtype: torch.dtype) -> State:
        return {}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self.act(self.bn(self.conv(x))), {}


class TRA(nn.Module):
    """Temporal recurrent attention: a causal GRU over each channel's frame energy gates the channels
    (state ``h``: the GRU's, (1, B, 2C))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.att_gru = nn.GRU(channels, channels * 2, 1, batch_first=True)
        self.att_fc = nn.Linear(channels * 2, channels)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"h": torch.zeros(1, batch, self.att_gru.hidden_size, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        energy = x.pow(2).mean(dim=-1).transpose(1, 2)  # (B, T, C)
        at, h = self.att_gru(energy, None if state is None else state["h"])  # (B, T, 2C), (1, B, 2C)
        at = torch.sigmoid(self.att_fc(at)).transpose(1, 2)  # (B, C, T)
        return x * at.unsqueeze(-1), {"h": h}  # (B, C, T, F)


class GTConvBlock(nn.Module):
    """Grouped temporal convolution: half of the channels go SFE -> point conv -> causal dilated
    depthwise conv -> point conv -> TRA, the other half is kept, then channel shuffle. The decoder's
    has stride-1 transposed convs. State ``cache``: the depthwise conv's past frames; ``tra.h``."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: tuple[int, int],
                 dilation: int, use_deconv: bool = False) -> None:
        super().__init__()
        self.pad_size = (kernel_size[0] - 1) * dilation
        self.hidden_channels = hidden_channels
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        half = in_channels // 2
        # A stride-1 transposed conv with time padding (k - 1) d over a left-padded input is causal.
        padding = (self.pad_size, 1) if use_deconv else (0, 1)
        self.sfe = SFE(3)
        self.point_conv1 = conv(half * 3, hidden_channels, 1)
        self.point_bn1 = nn.BatchNorm2d(hidden_channels)
        self.point_act = nn.PReLU()
        self.depth_conv = conv(hidden_channels, hidden_channels, kernel_size, stride=1, padding=padding,
                               dilation=(dilation, 1), groups=hidden_channels)
        self.depth_bn = nn.BatchNorm2d(hidden_channels)
        self.depth_act = nn.PReLU()
        self.point_conv2 = conv(hidden_channels, half, 1)
        self.point_bn2 = nn.BatchNorm2d(half)
        self.tra = TRA(half)

    def out_width(self, width: int) -> int:
        return width

    def init_state(self, batch: int, width: int, device: torch.device, dtype: torch.dtype) -> State:
        cache = torch.zeros(batch, self.hidden_channels, self.pad_size, width, device=device, dtype=dtype)
        return {"cache": cache, **prefixed("tra", self.tra.init_state(batch, device, dtype))}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x1, x2 = torch.chunk(x, 2, dim=1)  # 2 x (B, C/2, T, F)
        h = self.point_act(self.point_bn1(self.point_conv1(self.sfe(x1))))  # (B, H, T, F)
        b, hid, _, f = h.shape
        past = h.new_zeros(b, hid, self.pad_size, f) if state is None else state["cache"]  # (B, H, pad, F)
        h = torch.cat([past, h], dim=2)  # (B, H, pad + T, F)
        cache = h[:, :, h.shape[2] - self.pad_size:]  # (B, H, pad, F)
        h = self.depth_act(self.depth_bn(self.depth_conv(h)))  # (B, H, T, F)
        h = self.point_bn2(self.point_conv2(h))  # (B, C/2, T, F)
        h, tra = self.tra(h, substate(state, "tra"))
        shuffled = torch.stack([h, x2], dim=2).flatten(1, 2)  # (B, C/2, 2, T, F) -> (B, C, T, F)
        return shuffled, {"cache": cache, **prefixed("tra", tra)}


class GRNN(nn.Module):
    """Grouped GRU, one GRU per half of the features: (B, L, input) -> (B, L, dirs * hidden); state
    ``h`` (dirs, B, hidden)."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = False) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.rnn1, self.rnn2 = (nn.GRU(input_size // 2, hidden_size // 2, 1, batch_first=True,
                                       bidirectional=bidirectional) for _ in range(2))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        dirs = 2 if self.bidirectional else 1
        return {"h": torch.zeros(dirs, batch, self.hidden_size, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x1, x2 = torch.chunk(x, 2, dim=-1)  # 2 x (B, L, input/2)
        h1 = h2 = None
        if state is not None:
            h1, h2 = (h.contiguous() for h in torch.chunk(state["h"], 2, dim=-1))  # 2 x (dirs, B, hidden/2)
        y1, h1 = self.rnn1(x1, h1)  # (B, L, dirs * hidden/2), (dirs, B, hidden/2)
        y2, h2 = self.rnn2(x2, h2)
        return torch.cat([y1, y2], dim=-1), {"h": torch.cat([h1, h2], dim=-1)}


class DPGRNN(nn.Module):
    """Grouped dual-path RNN: a bidirectional GRNN across frequency, then a causal GRNN across time,
    each followed by Linear, LayerNorm over (F, C) and a residual add. State: ``inter_rnn.h``
    (1, B F, C)."""

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
        return prefixed("inter_rnn", self.inter_rnn.init_state(batch * self.width, device, dtype))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        b, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1)  # (B, T, F, C)
        intra, _ = self.intra_rnn(x.reshape(b * t, f, c))  # (B T, F, C)
        x = x + self.intra_ln(self.intra_fc(intra).reshape(b, t, f, c))  # (B, T, F, C)
        inter_in = x.permute(0, 2, 1, 3).reshape(b * f, t, c)  # (B F, T, C)
        inter, rnn_state = self.inter_rnn(inter_in, substate(state, "inter_rnn"))  # (B F, T, C)
        inter = self.inter_fc(inter).reshape(b, f, t, c).permute(0, 2, 1, 3)  # (B, T, F, C)
        x = x + self.inter_ln(inter)  # (B, T, F, C)
        return x.permute(0, 3, 1, 2), prefixed("inter_rnn", rnn_state)  # (B, C, T, F)


class BandStem(nn.Module):
    """A grouped (1, 3) conv inside each of ``bands`` equal bands of bins (zero padded at the band
    edges) + BatchNorm + PReLU (Tanh as the output layer): the bands move into the channel axis
    (channel = band * C + feature) and back. With ``groups == bands`` the bands stay independent."""

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
        n, w = self.bands, f // self.bands
        xb = x.reshape(b, c, t, n, w).permute(0, 3, 1, 2, 4).reshape(b, n * c, t, w)  # (B, N C, T, W)
        y = self.act(self.bn(self.conv(xb)))  # (B, N C_out, T, W)
        y = y.reshape(b, n, self.out_channels, t, w).permute(0, 2, 3, 1, 4)  # (B, C_out, T, N, W)
        return y.reshape(b, self.out_channels, t, f)  # (B, C_out, T, F)


class SkipFusion(nn.Module):
    """Deep features (B, C, T, N) joined with the front-end features (B, C_f, T, F) averaged over each
    band's F / N bins, fused by a 1x1 conv + BatchNorm + PReLU -> (B, C, T, N)."""

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
    """Complex ratio mask: S = M X (complex product) on (B, 2, T, F) real/imag tensors."""

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        s_real = spec[:, 0] * mask[:, 0] - spec[:, 1] * mask[:, 1]  # (B, T, F)
        s_imag = spec[:, 1] * mask[:, 0] + spec[:, 0] * mask[:, 1]  # (B, T, F)
        return torch.stack([s_real, s_imag], dim=1)  # (B, 2, T, F)
