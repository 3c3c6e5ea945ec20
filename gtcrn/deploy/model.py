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


def _permute(x: torch.Tensor, *dims: int, view: tuple[int, ...] | None = None,
             shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x.reshape(view).permute(*dims)`` (then reshaped to ``shape``), one reshape when only axes of size
    1 move (the same data order: a streamed frame, B = T = 1, then needs no Transpose)."""
    sizes = view or x.shape
    moved = [d for d in dims if sizes[d] != 1]
    if moved == sorted(moved):
        return x.reshape(shape or [sizes[d] for d in dims])
    y = (x if view is None else x.reshape(view)).permute(*dims)
    return y if shape is None else y.reshape(shape)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, F) -> each frame flat: (B T, C F)."""
    return _permute(x, 0, 2, 1, 3, shape=(x.shape[0] * x.shape[2], -1))


def _unframes(y: torch.Tensor, b: int, t: int, width: int) -> torch.Tensor:
    """Flat frames (B T, C F) -> (B, C, T, F)."""
    return _permute(y, 0, 2, 1, 3, view=(b, t, -1, width))


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


class _SumSquares(torch.autograd.Function):
    """The sum of squares over the last axis, exported as one ReduceSumSquare."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
        return x.square().sum(-1, keepdim=keepdim)

    @staticmethod
    def symbolic(g: object, x: object, keepdim: bool = False) -> object:
        return g.op("ReduceSumSquare", x, axes_i=[-1], keepdims_i=int(keepdim))  # type: ignore[attr-defined]


class FrontLayer(nn.Module):
    """Spectrum (B, 257, T, 2) -> each frame's ERB features, flat (B T, 3 (F + 1)): magnitude, real and
    imaginary part over F bins and a zero (the value of a bin outside the spectrum); one matrix
    product. :meth:`sfe` lays them out as SFE does."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        erb, k = encoder.erb, encoder.sfe.kernel_size
        self.bins, self.kernel = erb.num_bins, k
        _set(self, matrix=F.pad(_identity_below(erb.low, erb.erb_fc.weight.t()), (0, 1)))  # (257, F + 1)
        c, j, f = torch.meshgrid(torch.arange(3), torch.arange(k), torch.arange(self.bins), indexing="ij")
        self.register_buffer("sfe_index", self.index(c, f + j - k // 2).view(3 * k, -1), persistent=False)

    def index(self, feature: torch.Tensor, bin: torch.Tensor) -> torch.Tensor:
        """Where a feature's bin sits in the flat output (a bin outside the spectrum: the zero)."""
        return feature * (self.bins + 1) + torch.where((bin >= 0) & (bin < self.bins), bin, self.bins)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        mag = (_SumSquares.apply(spec, True) + 1e-12).sqrt()  # (B, 257, T, 1)
        feat = _permute(torch.cat([mag, spec], dim=-1), 0, 2, 1, 3)  # (B, T, 257, 3)
        out = torch.matmul(feat.transpose(2, 3), self.matrix)  # (B, T, 3, F + 1)
        return out.reshape(spec.shape[0] * spec.shape[2], -1)  # (B T, 3 (F + 1))

    def sfe(self, flat: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """SFE of the flat features as one gather: (B, 3 k, T, F), channel c k + j."""
        return _unframes(flat[:, self.sfe_index], b, t, self.bins)  # (B T, 3 k, F) -> (B, 3 k, T, F)


def _band_affine(stem: BandStem, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A band stem's conv + BN as one matrix per group acting on the right of the input rows: (G,
    C_in k w, k C_out w), columns (band, C_out, bin), rows (C_in, band, bin), and the bias (G, 1, ...)."""
    mat, bias = fold.band_matrix(stem.conv, stem.bands, width)  # (G, k C_out w, C_in k w), (..., 1)
    scale, shift = (v.view(mat.shape[0], -1, 1).repeat_interleave(width // stem.bands, dim=1)
                    for v in fold.bn_affine(stem.bn))  # (G, k C_out w, 1): BN channel band * C_out + out
    return (mat * scale).transpose(1, 2), (bias * scale + shift).transpose(1, 2)


class StemLayer(nn.Module):
    """SFE + BandStem (conv + BN + activation) on the front layer's output: each band's window of
    w + k - 1 ERB bins gathered, one matrix product per group of bands. Returns the stem's output
    (B, C_out, T, F), the same per group of bands (G, B T, k C_out w) for the head's skip, with ``pool``
    SkipFusion's input, the SFE features averaged over each band (B, 9, T, N), from more columns."""

    def __init__(self, stem: BandStem, front: FrontLayer, pool: bool) -> None:
        super().__init__()
        mat, bias = _band_affine(stem, front.bins)  # rows (c, j, band, bin)
        g, _, cols = mat.shape
        n, w, ks = stem.bands, front.bins // stem.bands, front.kernel
        k, span = n // g, w + ks - 1  # bands per group, window bins
        # SFE channel (c, j) at bin q of a band reads window bin q + j (the window starts at -ks // 2).
        shift = (torch.arange(span) == torch.arange(ks).view(-1, 1, 1) + torch.arange(w).view(-1, 1)).to(mat)
        mat = torch.einsum("gcjbqr,jqe->gbcer", mat.view(g, 3, ks, k, w, cols), shift).reshape(g, -1, cols)
        self.rows = cols
        if pool:  # columns (band, c, j): the mean of SFE channel (c, j) over the band
            eye = torch.eye
            avg = torch.einsum("ab,cd,jqe->bceadj", eye(k), eye(3), shift / w).reshape(1, mat.shape[1], -1)
            mat = torch.cat([mat, avg.to(mat).expand(g, -1, -1)], dim=2)
            bias = torch.cat([bias, bias.new_zeros(g, 1, avg.shape[2])], dim=2)
        band, c, e = torch.meshgrid(torch.arange(n), torch.arange(3), torch.arange(span), indexing="ij")
        index = front.index(c, band * w + e - ks // 2).view(g, 1, -1)  # (G, 1, k 3 (w + ks - 1))
        self.register_buffer("index", index, persistent=False)
        self.groups, self.bands, self.bins, self.channels = g, n, front.bins, stem.out_channels
        self.act = _act(stem.act)
        _set(self, matrix=mat, bias=bias)

    def forward(self, flat: torch.Tensor, b: int, t: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        bt = flat.shape[0]
        g, k = self.groups, self.bands // self.groups
        x = _permute(flat[:, self.index], 1, 0, 2, 3, shape=(g, bt, -1))  # (G, B T, k 3 (w + ks - 1))
        y = torch.matmul(x, self.matrix) + self.bias  # (G, B T, k C_out w [+ k 9])
        pooled = None
        if y.shape[-1] > self.rows:
            y, pooled = y.split([self.rows, y.shape[-1] - self.rows], dim=-1)
            pooled = _permute(pooled, 1, 3, 0, 2, view=(g, bt, k, -1), shape=(bt, -1))  # (B T, 9 N)
            pooled = _unframes(pooled, b, t, self.bands)  # (B, 9, T, N)
        y = self.act(y)  # (G, B T, k C_out w)
        out = _permute(y, 1, 3, 0, 2, 4, view=(g, bt, k, self.channels, -1), shape=(bt, -1))  # (B T, C_out F)
        return _unframes(out, b, t, self.bins), y, pooled


class HeadLayer(nn.Module):
    """The output BandStem (conv + BN + Tanh) on the decoder's output in polyphase layout (B, C s, T, M)
    (channel c s + p holds bin m s + p; s = 1: plain) plus the stem's output per band: each band's
    bins gathered, one matrix product per group of bands -> the mask (B, 2, T, F)."""

    def __init__(self, head: BandStem, width: int, stride: int, phase_width: int) -> None:
        super().__init__()
        mat, bias = _band_affine(head, width)  # rows (C_in, band, bin), columns (band, 2, bin)
        g, _, cols = mat.shape
        n, cin, w = head.bands, head.conv.in_channels // head.bands, width // head.bands
        k = n // g
        mat = mat.view(g, cin, k, w, cols).transpose(1, 2).reshape(g, -1, cols)  # rows (band, C_in, bin)
        band, c, q = torch.meshgrid(torch.arange(n), torch.arange(cin), torch.arange(w), indexing="ij")
        f = band * w + q
        index = ((c * stride + f % stride) * phase_width + f // stride).view(g, 1, -1)  # (G, 1, K)
        self.register_buffer("index", index, persistent=False)
        self.groups, self.bands, self.act = g, n, _act(head.act)
        _set(self, matrix=mat, bias=bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        bt, g, k = b * t, self.groups, self.bands // self.groups
        if skip.shape[0] != g:  # the stem groups the bands otherwise: regroup them
            skip = _permute(_permute(skip, 1, 0, 2, shape=(bt, g, -1)), 1, 0, 2)  # (G, B T, K)
        x = _permute(_frames(x)[:, self.index], 1, 0, 2, 3, shape=(g, bt, -1)) + skip  # (G, B T, K)
        y = self.act(torch.matmul(x, self.matrix) + self.bias)  # (G, B T, k 2 w)
        y = _permute(y, 1, 3, 0, 2, 4, view=(g, bt, k, 2, -1), shape=(bt, -1))  # (B T, 2 F)
        return _unframes(y, b, t, y.shape[-1] // 2)  # (B, 2, T, F)


class ConvLayer(nn.Module):
    """ConvBlock: BN folded into the conv; a (1, K) transposed conv in polyphase form (its output
    interleaved, or with ``interleave=False`` left in phases: (B, C s, T, M), channel c s + p holding
    bin m s + p, for a reader that takes it so)."""

    def __init__(self, block: ConvBlock, width: int, name: str, interleave: bool = True) -> None:
        super().__init__()
        conv, self.stride, self.pads, self.interleave = block.conv, 1, (0, 0), interleave
        self.out_w = block.out_width(width)
        if isinstance(conv, nn.ConvTranspose2d):
            w, self.pads, _ = fold.polyphase(conv, width)
            self.stride, self.phase_w = conv.stride[1], width + sum(self.pads) - w.shape[-1] + 1
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
        return (fold.interleave(y, self.stride, self.out_w) if self.stride > 1 and self.interleave else y), {}


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
        fc = block.tra.att_fc  # as a (1, 2C) conv over the GRU's output (B, 1, T, 2C)
        self.fc = _conv(fc.weight[:, None, None], fc.bias)
        order = torch.stack([torch.arange(half), 2 * half + torch.arange(half)], dim=1).flatten()
        self.register_buffer("order", order, persistent=False)  # out[2i] = h[i], out[2i + 1] = x[half + i]

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.act1(self.conv1(x))  # (B, H, T, W)
        h = torch.cat([state[self.cache_key], h], dim=2)  # (B, H, pad + T, W)
        cache = h[:, :, -self.pad:]  # (B, H, pad, W)
        h = self.conv2(self.act_d(self.depth(h)))  # (B, C/2, T, W)
        energy = _permute(_SumSquares.apply(h), 2, 0, 1)  # (T, B, C/2)
        y, tra_h = _steps(self.gru, energy, state[self.tra_key])  # (T, B, C)
        y = _permute(y, 1, 0, 2, shape=(y.shape[1], 1, y.shape[0], -1))  # (B, 1, T, C)
        att = torch.sigmoid(self.fc(y))  # (B, C/2, T, 1)
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
        y, _ = self.intra_gru(torch.cat([xi, xi.index_select(0, self.reverse)], dim=-1))  # (W, B T, C)
        y = torch.cat([y, y.index_select(0, self.reverse)], dim=-1).reshape(w * b * t, 2 * c)  # (W B T, 2C)
        y = self.intra_fc(y)  # (W B T, C)
        x = x + self.intra_ln(_permute(y, 1, 0, 2, view=(w, b * t, c), shape=(b, t, w, c)))  # (B, T, W, C)
        y = _permute(x, 1, 0, 2, 3, shape=(t, b * w, c))  # (T, B W, C)
        y, h = _steps(self.inter_gru, y, state[self.key])  # (T, B W, C)
        y = self.inter_fc(y.reshape(t * b * w, c))  # (T B W, C)
        x = x + self.inter_ln(_permute(y, 1, 0, 2, 3, view=(t, b, w, c)))  # (B, T, W, C)
        return x, {self.key: h}


class FusionLayer(nn.Module):
    """SkipFusion with BN folded into its 1x1 conv, on the band-averaged front features."""

    def __init__(self, fusion: SkipFusion) -> None:
        super().__init__()
        self.conv = _conv(*_fused(fusion.conv, fusion.bn))
        self.act = _act(fusion.act)

    def forward(self, deep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([deep, pooled], dim=1)))  # (B, C, T, N)


class MaskLayer(nn.Module):
    """ERB synthesis of the mask in polyphase layout (B, 2 s, T, M) (as HeadLayer reads it) and the
    complex mask as matrix products: [re, im] x [mr, mi] is [re, im, -im, re] * [mr, mr, mi, mi]
    summed in pairs."""

    def __init__(self, encoder: Encoder, stride: int = 1, phase_width: int | None = None) -> None:
        super().__init__()
        bs = _identity_below(encoder.erb.low, encoder.erb.ierb_fc.weight.t())  # (F, 257)
        m = phase_width or bs.shape[0]
        bins = torch.arange(m) * stride + torch.arange(stride).view(-1, 1)  # (s, M): phase p, m -> m s + p
        synthesis = F.pad(bs, (0, 0, 0, 1))[bins.clamp(max=bs.shape[0]).flatten()]  # (s M, 257), 0 past F
        ones = bs.new_tensor
        self.stride = stride
        _set(self, synthesis=synthesis, spread=ones([[1.0, 0, 0, 1], [0, 1, -1, 0]]),
             repeat=ones([[1.0, 1, 0, 0], [0, 0, 1, 1]]), pairs=ones([[1.0, 0], [0, 1], [1, 0], [0, 1]]))

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        b, _, t, m = mask.shape  # (B, 2 s, T, M)
        phases = (b, 2, self.stride, t, m)
        mask = _permute(mask, 0, 1, 3, 2, 4, view=phases, shape=(b, 2, t, -1))  # (B, 2, T, s M)
        m = torch.matmul(mask, self.synthesis).transpose(1, 3)  # (B, 257, T, 2)
        m = torch.matmul(m, self.repeat)  # (B, 257, T, 4): [mr, mr, mi, mi]
        return torch.matmul(torch.matmul(spec, self.spread) * m, self.pairs)  # (B, 257, T, 2)


# The deploy form of each layer type of the encoder and decoder stacks, chosen once by type.
LAYERS: dict[type, type] = {ConvBlock: ConvLayer, GTConvBlock: GTConvLayer}


def _stack(layers: nn.ModuleList, width: int, name: str) -> tuple[nn.ModuleList, int]:
    """The deploy forms of a stack; the last one gives a strided transposed conv's output in polyphase
    layout (its reader takes it so)."""
    out = []
    for i, layer in enumerate(layers):
        if type(layer) not in LAYERS:
            raise TypeError(f"{name}.{i}: no deploy form for {type(layer).__name__}")
        extra = {"interleave": False} if i == len(layers) - 1 and type(layer) is ConvBlock else {}
        out.append(LAYERS[type(layer)](layer, width, f"{name}.{i}", **extra))
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
        self.stem = None if enc.stem is None else StemLayer(enc.stem, self.front, enc.fusion is not None)
        self.encoder, width = _stack(enc.en_convs, bins, "encoder.en_convs")
        self.fusion = FusionLayer(enc.fusion) if enc.fusion is not None else None
        self.dpgrnn = nn.ModuleList([DPGRNNLayer(r, f"dpgrnn.{i}") for i, r in enumerate(model.dpgrnn)])
        self.decoder, _ = _stack(dec.de_convs, width, "decoder.de_convs")
        last = self.decoder[-1]  # its output in polyphase layout, s phases of M bins
        phases = (last.stride, last.phase_w) if isinstance(last, ConvLayer) and last.stride > 1 else (1, None)
        self.head = None if dec.head is None else HeadLayer(dec.head, bins, phases[0], phases[1] or bins)
        self.mask = MaskLayer(enc) if self.head is not None else MaskLayer(enc, *phases)
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
        b, _, t, _ = spec.shape
        flat = self.front(spec)  # (B T, 3 (F + 1))
        band_skip = pooled = None
        if self.stem is not None:
            x, band_skip, pooled = self.stem(flat, b, t)  # (B, C_s, T, F), (G, B T, K), (B, 9, T, N)
        else:
            x = self.front.sfe(flat, b, t)  # (B, 9, T, F)
        skips = []
        new_state: State = {}
        for layer in self.encoder:
            x, s = layer(x, state)  # F -> F/2 -> W bins, then W
            new_state.update(s)
            skips.append(x)
        if self.fusion is not None:
            x = skips[-1] = self.fusion(x, pooled)  # (B, C, T, W)
        x = x.permute(0, 2, 3, 1)  # (B, T, W, C)
        for rnn in self.dpgrnn:
            x, s = rnn(x, state)
            new_state.update(s)
        x = x.permute(0, 3, 1, 2)  # (B, C, T, W)
        for i, layer in enumerate(self.decoder):
            x, s = layer(x + skips[-1 - i], state)  # W -> 2W -> F bins (the last: in phases)
            new_state.update(s)
        if self.head is not None:
            x = self.head(x, band_skip)  # (B, 2, T, F)
        return self.mask(x, spec), new_state  # (B, 257, T, 2)

    forward_stateful = step = forward  # the plain model's names for a chunk and for one frame


@torch.no_grad()
def to_deploy(model: GTCRN) -> DeployGTCRN:
    """The deploy form of ``model`` (its weights as they are now; eval-mode BatchNorm statistics)."""
    return DeployGTCRN(model)
