"""The deploy form of a GTCRN: an eval-only module computed once, the plain model's function in
fewer, cheaper standard operations. ``forward(spec, state)`` takes and returns the plain model's
state (same names, shapes, order): the two forms continue each other's streams."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import DPGRNN, BandStem, ConvBlock, GTConvBlock, SkipFusion, State
from ..nn.model import GTCRN, Encoder
from ..stft import N_FREQS
from . import fold


def _set(module: nn.Module, **tensors: torch.Tensor) -> nn.Module:
    """Give ``module`` these parameters (copies, no gradient); returns it."""
    for name, value in tensors.items():
        setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=False))
    return module


def _conv(weight: torch.Tensor, bias: torch.Tensor, **kwargs: object) -> nn.Conv2d:
    """A ``Conv2d`` with these weights (C_out, C_in / groups, kh, kw)."""
    groups = int(kwargs.get("groups", 1))  # type: ignore[call-overload]
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), **kwargs)
    return _set(conv, weight=weight, bias=bias)


def _fused(conv: nn.Module, bn: nn.BatchNorm2d, weight: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv`` then eval BatchNorm as one weight (``weight``, C_out first, or the conv's Conv2d
    form) and bias."""
    scale, shift = fold.bn_affine(bn)
    w = fold.conv_weight(conv) if weight is None else weight
    b = torch.zeros_like(scale) if conv.bias is None else conv.bias
    return w * scale.view(-1, *([1] * (w.dim() - 1))), b * scale + shift


def _gru(weights: list[torch.Tensor]) -> nn.GRU:
    """A one-layer, sequence-first ``nn.GRU`` with weights ``[w_ih, w_hh, b_ih, b_hh]``."""
    gru = nn.GRU(weights[0].shape[1], weights[1].shape[1])
    return _set(gru, **dict(zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], weights,
                                strict=True)))


def _permute(x: torch.Tensor, *dims: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x.permute(*dims)`` (then reshaped to ``shape``), one reshape when only axes of size 1 move
    (the same data order: a streamed frame, B = T = 1, then needs no Transpose)."""
    moved = [d for d in dims if x.shape[d] != 1]
    if moved == sorted(moved):
        return x.reshape(shape or [x.shape[d] for d in dims])
    return x.permute(*dims) if shape is None else x.permute(*dims).reshape(shape)


def _steps(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``gru(x, h0)``; for one step its output is its final state (the exported graph then reads the
    GRU's state output and needs no Squeeze of its sequence output)."""
    y, h = gru(x, h0)
    return (h if x.shape[0] == 1 else y), h


def _identity_below(low: int, bands: torch.Tensor) -> torch.Tensor:
    """An ERB filterbank as one matrix: the ``low`` lowest bins pass through, ``bands`` does the rest."""
    return torch.block_diag(torch.eye(low, dtype=bands.dtype, device=bands.device), bands)


def _act(act: nn.Module) -> nn.Module:
    slope = fold.prelu_slope(act)
    return nn.LeakyReLU(slope) if slope is not None else copy.deepcopy(act)


class FrontLayer(nn.Module):
    """Spectrum (B, 257, T, 2) -> ERB features with SFE (B, 9, T, F): one matrix product."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        erb, k = encoder.erb, encoder.sfe.kernel_size
        bm = _identity_below(erb.low, erb.erb_fc.weight.t())  # (257, F)
        m = bm.new_zeros(N_FREQS, k, erb.num_bins)  # (257, j, F): bin f + j - k // 2 of the ERB output
        for j in range(k):
            shift = j - k // 2
            lo, hi = max(0, -shift), min(erb.num_bins, erb.num_bins - shift)
            m[:, j, lo:hi] = bm[:, lo + shift:hi + shift]
        self.kernel, self.bins = k, erb.num_bins
        _set(self, matrix=m.reshape(N_FREQS, -1))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = spec.shape
        mag = (spec.square().sum(-1, keepdim=True) + 1e-12).sqrt()  # (B, 257, T, 1)
        feat = torch.cat([mag, spec], dim=-1).permute(0, 2, 3, 1)  # (B, T, 3, 257)
        front = torch.matmul(feat, self.matrix)  # (B, T, 3, k F): column j F + f
        return _permute(front.reshape(b, t, -1, self.bins), 0, 2, 1, 3)  # (B, 3 k, T, F): channel c k + j


class BandLayer(nn.Module):
    """BandStem (conv + BN + activation) as one matrix product per group of bands."""

    def __init__(self, stem: BandStem, width: int) -> None:
        super().__init__()
        mat, bias = fold.band_matrix(stem.conv, stem.bands, width)  # (G, k C_out w, C_in k w), (..., 1)
        scale, shift = (v.view(mat.shape[0], -1, 1).repeat_interleave(width // stem.bands, dim=1)
                        for v in fold.bn_affine(stem.bn))  # (G, k C_out w, 1): BN channel band * C_out + out
        self.groups, self.bands, self.channels, self.act = stem.conv.groups, stem.bands, stem.out_channels, \
            _act(stem.act)
        _set(self, matrix=mat * scale, bias=bias * scale + shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.matrix, fold.to_bands(x, self.groups)) + self.bias  # (G, k C_out w, B T)
        return fold.from_bands(self.act(y), x.shape[0], x.shape[2], self.channels, self.bands)  # (B, C, T, F)


class ConvLayer(nn.Module):
    """ConvBlock: BN folded into the conv; a (1, K) transposed conv in polyphase form."""

    def __init__(self, block: ConvBlock, width: int, name: str) -> None:
        super().__init__()
        conv, self.stride, self.pads = block.conv, 1, (0, 0)
        self.out_w = block.out_width(width)
        if isinstance(conv, nn.ConvTranspose2d):
            w, self.pads, _ = fold.polyphase(conv, width)
            self.stride = conv.stride[1]
            w, b = _fused(conv, block.bn, w.view(-1, self.stride, *w.shape[1:]))
            same = self.pads[0] == self.pads[1]  # symmetric: the conv pads, no separate Pad
            self.conv = _conv(w.flatten(0, 1), b.repeat_interleave(self.stride), groups=conv.groups,
                              padding=(0, self.pads[0]) if same else 0)
            self.pads = (0, 0) if same else self.pads
        else:
            self.conv = _conv(*_fused(conv, block.bn), stride=conv.stride, padding=conv.padding,
                              dilation=conv.dilation, groups=conv.groups)
        self.act = _act(block.act)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y = self.act(self.conv(F.pad(x, self.pads) if any(self.pads) else x))  # (B, C_out s, T, M)
        return (fold.interleave(y, self.stride, self.out_w) if self.stride > 1 else y), {}


class GTConvLayer(nn.Module):
    """GTConvBlock: SFE + point conv 1 as one (1, 3) conv over the first half (zero weights on the
    second), BN folded everywhere, TRA's mean over bins folded into its GRU, shuffle as a gather."""

    def __init__(self, block: GTConvBlock, width: int, name: str) -> None:
        super().__init__()
        self.cache_key, self.tra_key, self.pad = f"{name}.cache", f"{name}.tra.h", block.pad_size
        w1, b1 = _fused(block.point_conv1, block.point_bn1, fold.conv_weight(block.point_conv1)[:, :, 0, 0])
        hid, half = w1.shape[0], w1.shape[1] // 3
        w1 = torch.cat([w1.view(hid, half, 1, 3), w1.new_zeros(hid, half, 1, 3)], dim=1)  # (H, C, 1, 3)
        self.conv1 = _conv(w1, b1, padding=(0, 1))
        self.act1 = _act(block.point_act)
        self.depth = _conv(*_fused(block.depth_conv, block.depth_bn), padding=(0, 1),
                           dilation=block.depth_conv.dilation, groups=hid)
        self.act_d = _act(block.depth_act)
        self.conv2 = _conv(*_fused(block.point_conv2, block.point_bn2))
        w_ih, *rest = fold.gru_weights(block.tra.att_gru)
        self.gru = _gru([w_ih / width, *rest])  # the GRU reads the mean energy over the bins
        self.fc = copy.deepcopy(block.tra.att_fc)
        order = torch.stack([torch.arange(half), 2 * half + torch.arange(half)], dim=1).flatten()
        self.register_buffer("order", order, persistent=False)  # out[2i] = h[i], out[2i + 1] = x[half + i]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.act1(self.conv1(x))  # (B, H, T, W)
        h = torch.cat([state[self.cache_key], h], dim=2)  # (B, H, pad + T, W)
        cache = h[:, :, -self.pad:]  # (B, H, pad, W)
        h = self.conv2(self.act_d(self.depth(h)))  # (B, C/2, T, W)
        energy = _permute(h.square().sum(-1), 2, 0, 1)  # (T, B, C/2)
        y, tra_h = _steps(self.gru, energy, state[self.tra_key])  # (T, B, C)
        att = torch.sigmoid(self.fc(y))  # (T, B, C/2)
        att = _permute(att, 1, 2, 0, shape=(y.shape[1], -1, y.shape[0], 1))  # (B, C/2, T, 1)
        out = torch.cat([h * att, x], dim=1).index_select(1, self.order)  # (B, C, T, W)
        return out, {self.cache_key: cache, self.tra_key: tra_h}


class DPGRNNLayer(nn.Module):
    """DPGRNN on (B, T, W, C) (the model changes the layout once around the stack): the intra-frame
    GRNN (2 groups x 2 directions) as one GRU over [x_f, x_(W-1-f)], the inter-frame GRNN as one."""

    def __init__(self, block: DPGRNN, name: str) -> None:
        super().__init__()
        self.key = f"{name}.inter_rnn.h"
        intra = block.intra_rnn
        fwd, bwd = fold.grnn_weights(intra), fold.grnn_weights(intra, reverse=True)
        self.intra_gru = _gru(fold.merge_grus([fwd, bwd]))  # units [fwd g1, fwd g2, bwd g1, bwd g2]
        # intra_fc reads torch's order [g1 fwd, g1 bwd, g2 fwd, g2 bwd] from [y_f, y_(W-1-f)]: forward
        # units from the first copy, backward units from the reversed one.
        w, hg = block.intra_fc.weight, intra.hidden_size // 2
        zero = w.new_zeros(w.shape[0], 4 * hg)
        w_fc = torch.cat([w[:, :hg], w[:, 2 * hg:3 * hg], zero, w[:, hg:2 * hg], w[:, 3 * hg:]], dim=1)
        self.intra_fc = _set(nn.Linear(w_fc.shape[1], w.shape[0]), weight=w_fc, bias=block.intra_fc.bias)
        self.inter_gru = _gru(fold.grnn_weights(block.inter_rnn))
        self.intra_ln, self.inter_fc, self.inter_ln = (copy.deepcopy(m) for m in
                                                       (block.intra_ln, block.inter_fc, block.inter_ln))
        self.register_buffer("reverse", torch.arange(block.width - 1, -1, -1), persistent=False)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        b, t, w, c = x.shape
        xi = _permute(x, 2, 0, 1, 3, shape=(w, b * t, c))  # (W, B T, C)
        h0 = xi.new_zeros(1, b * t, c)  # (1, B T, C): both directions' units
        y, _ = self.intra_gru(torch.cat([xi, xi.index_select(0, self.reverse)], dim=-1), h0)  # (W, B T, C)
        y = self.intra_fc(torch.cat([y, y.index_select(0, self.reverse)], dim=-1))  # (W, B T, C)
        x = x + self.intra_ln(_permute(y, 1, 0, 2, shape=(b, t, w, c)))  # (B, T, W, C)
        y = _permute(x, 1, 0, 2, 3, shape=(t, b * w, c))  # (T, B W, C)
        y, h = _steps(self.inter_gru, y, state[self.key])  # (T, B W, C)
        x = x + self.inter_ln(_permute(self.inter_fc(y).reshape(t, b, w, c), 1, 0, 2, 3))  # (B, T, W, C)
        return x, {self.key: h}


class FusionLayer(SkipFusion):
    """SkipFusion with BN folded into its 1x1 conv (SkipFusion's forward)."""

    def __init__(self, fusion: SkipFusion) -> None:
        nn.Module.__init__(self)
        self.conv = _conv(*_fused(fusion.conv, fusion.bn))
        self.bn = nn.Identity()
        self.act = _act(fusion.act)


class MaskLayer(nn.Module):
    """ERB synthesis and the complex mask as matrix products: [re, im] x [mr, mi] is
    [re, im, -im, re] * [mr, mr, mi, mi] summed in pairs."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        bs = _identity_below(encoder.erb.low, encoder.erb.ierb_fc.weight.t())  # (F, 257)
        ones = bs.new_tensor
        _set(self, synthesis=bs, spread=ones([[1.0, 0, 0, 1], [0, 1, -1, 0]]),
             repeat=ones([[1.0, 1, 0, 0], [0, 0, 1, 1]]), pairs=ones([[1.0, 0], [0, 1], [1, 0], [0, 1]]))

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        m = torch.matmul(mask, self.synthesis).transpose(1, 3)  # (B, 257, T, 2)
        m = torch.matmul(m, self.repeat)  # (B, 257, T, 4): [mr, mr, mi, mi]
        return torch.matmul(torch.matmul(spec, self.spread) * m, self.pairs)  # (B, 257, T, 2)


# The deploy form of each layer type of the encoder and decoder stacks, chosen once by type.
LAYERS: dict[type, type] = {ConvBlock: ConvLayer, GTConvBlock: GTConvLayer}


def _stack(layers: nn.ModuleList, width: int, name: str) -> tuple[nn.ModuleList, int]:
    out = []
    for i, layer in enumerate(layers):
        if type(layer) not in LAYERS:
            raise TypeError(f"{name}.{i}: no deploy form for {type(layer).__name__}")
        out.append(LAYERS[type(layer)](layer, width, f"{name}.{i}"))
        width = layer.out_width(width)
    return nn.ModuleList(out), width


class DeployGTCRN(nn.Module):
    """The deploy form of a :class:`gtcrn.nn.GTCRN` (see the module docstring)."""

    def __init__(self, model: GTCRN) -> None:
        super().__init__()
        enc, dec = model.encoder, model.decoder
        bins = model.config.num_bins
        self.config = model.config
        self.front = FrontLayer(enc)
        self.stem = BandLayer(enc.stem, bins) if enc.stem is not None else None
        self.encoder, width = _stack(enc.en_convs, bins, "encoder.en_convs")
        self.fusion = FusionLayer(enc.fusion) if enc.fusion is not None else None
        self.dpgrnn = nn.ModuleList([DPGRNNLayer(r, f"dpgrnn.{i}") for i, r in enumerate(model.dpgrnn)])
        self.decoder, _ = _stack(dec.de_convs, width, "decoder.de_convs")
        self.head = BandLayer(dec.head, bins) if dec.head is not None else None
        self.mask = MaskLayer(enc)
        # Where the batch sits in each state tensor (the first axis that grows with it).
        one, two = model.init_state(1, "cpu"), model.init_state(2, "cpu")
        self.state_shapes = {k: (list(v.shape), next(a for a in range(v.dim())
                                                      if v.shape[a] != two[k].shape[a]))
                             for k, v in one.items()}
        p = next(model.parameters())
        self.to(p.device, p.dtype).requires_grad_(False).eval()  # .to() also flattens GRUs for cuDNN

    def train(self, mode: bool = True) -> DeployGTCRN:
        if mode:
            raise RuntimeError("a deploy model is for inference only; train the plain model")
        return super().train(False)

    def init_state(self, batch: int = 1, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        """Zero state, as the plain model's ``init_state``."""
        p = self.mask.synthesis
        state = {}
        for key, (shape, axis) in self.state_shapes.items():
            shape = shape[:axis] + [shape[axis] * batch] + shape[axis + 1:]
            state[key] = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
        return state

    def forward(self, spec: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Enhance frames (B, 257, T, 2) given the state after the previous frames."""
        state = self.init_state(spec.shape[0]) if state is None else state
        front = self.front(spec)  # (B, 9, T, F)
        x, skips = front, []
        if self.stem is not None:
            x = self.stem(x)  # (B, C_s, T, F)
            skips.append(x)
        new_state: State = {}
        for layer in self.encoder:
            x, s = layer(x, state)  # F -> F/2 -> W bins, then W
            new_state.update(s)
            skips.append(x)
        if self.fusion is not None:
            x = skips[-1] = self.fusion(x, front)  # (B, C, T, W)
        x = x.permute(0, 2, 3, 1)  # (B, T, W, C)
        for rnn in self.dpgrnn:
            x, s = rnn(x, state)
            new_state.update(s)
        x = x.permute(0, 3, 1, 2)  # (B, C, T, W)
        for i, layer in enumerate(self.decoder):
            x, s = layer(x + skips[-1 - i], state)  # W -> 2W -> F bins
            new_state.update(s)
        if self.head is not None:
            x = self.head(x + skips[-1 - len(self.decoder)])  # (B, 2, T, F)
        return self.mask(x, spec), new_state  # (B, 257, T, 2)

    forward_stateful = step = forward  # the plain model's names for a chunk and for one frame


@torch.no_grad()
def to_deploy(model: GTCRN) -> DeployGTCRN:
    """The deploy form of ``model`` (its weights as they are now; eval-mode BatchNorm statistics)."""
    return DeployGTCRN(model)
