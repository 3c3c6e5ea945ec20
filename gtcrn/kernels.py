"""CPU training kernels (``train.cpu_kernels``): subclasses of plain modules that override ``forward``
only (same parameters, keys and function) where the CPU is slow to train, swapped in by
:func:`use_cpu_kernels`."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from .deploy import fold
from .nn.blocks import DPGRNN, GRNN, BandStem, State


class _GRUScan(torch.autograd.Function):
    """The GRU recurrence (``nn.GRU`` equations) as one autograd node with a hand-written backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                b_hn: torch.Tensor, reverse: bool) -> torch.Tensor:
        """gi (L, 3H, N) = W_ih x + b_ih + [b_hr, b_hz, 0], h0 (H, N), w_hh (3H, H), b_hn (H,) ->
        the states (H, L, N); kept for the backward: sigmoid([r, z]), W_hn h + b_hn, candidates n."""
        steps, g3, n = gi.shape
        hid = g3 // 3
        rz = gi.new_empty(2 * hid, steps, n)  # (2H, L, N)
        ghn, cand, out = (gi.new_empty(hid, steps, n) for _ in range(3))  # (H, L, N) each
        w_rz, w_n, b_n = w_hh[:2 * hid], w_hh[2 * hid:], b_hn.unsqueeze(1)  # (2H, H), (H, H), (H, 1)
        h = h0
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            gates = torch.addmm(gi[t, :2 * hid], w_rz, h, out=rz[:, t]).sigmoid_()  # (2H, N)
            gh_n = torch.addmm(b_n, w_n, h, out=ghn[:, t])  # (H, N)
            n_t = torch.addcmul(gi[t, 2 * hid:], gates[:hid], gh_n, out=cand[:, t]).tanh_()  # (H, N)
            h = torch.lerp(n_t, h, gates[hid:], out=out[:, t])  # (1 - z) n + z h
        ctx.save_for_backward(h0, w_hh, rz, ghn, cand, out)
        ctx.reverse = reverse
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, None]:
        h0, w_hh, rz, ghn, cand, out = ctx.saved_tensors
        hid, steps, n = cand.shape
        if ctx.reverse:
            h_prev = torch.cat([out[:, 1:], h0.unsqueeze(1)], dim=1)  # (H, L, N)
        else:
            h_prev = torch.cat([h0.unsqueeze(1), out[:, :-1]], dim=1)  # (H, L, N)
        r, z = rz[:hid], rz[hid:]  # (H, L, N) each
        # d pre-activation = factor * dh for [r, z, W_hn h + b_hn, n], and dh_prev via z directly.
        fac = cand.new_empty(5, hid, steps, n)  # (5, H, L, N)
        one_m_z = 1 - z
        torch.mul(one_m_z, 1 - cand * cand, out=fac[3])  # n
        torch.mul(h_prev - cand, z * one_m_z, out=fac[1])  # z
        torch.mul(fac[3], r, out=fac[2])  # W_hn h + b_hn
        torch.mul(fac[2] * ghn, 1 - r, out=fac[0])  # r
        fac[4].copy_(z)  # direct path to h_prev
        w_ext = torch.cat([w_hh, torch.zeros_like(w_hh[:hid]),
                           torch.eye(hid, dtype=w_hh.dtype, device=w_hh.device)])  # (5H, H)
        w_ext_t = w_ext.t().contiguous()  # (H, 5H)
        d_pre = cand.new_empty(5, hid, steps, n)  # (5, H, L, N)
        carry = torch.zeros_like(h0)  # (H, N)
        for t in (range(steps) if ctx.reverse else range(steps - 1, -1, -1)):
            d_t = torch.mul(fac[:, :, t], grad_out[:, t] + carry, out=d_pre[:, :, t])  # (5, H, N)
            carry = torch.mm(w_ext_t, d_t.view(5 * hid, n))  # (H, N)
        h_flat = h_prev.reshape(hid, steps * n).t()  # (L N, H)
        d_w = torch.cat([d_pre[:2].reshape(2 * hid, -1) @ h_flat, d_pre[2].reshape(hid, -1) @ h_flat])
        d_gi = torch.cat([d_pre[:2].reshape(2 * hid, steps, n), d_pre[3]]).transpose(0, 1)  # (L, 3H, N)
        return d_gi, carry, d_w, d_pre[2].sum(dim=(1, 2)), None


def gru_scan(x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor, b_hh: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """A one-layer GRU (``nn.GRU`` weights and gate order [r, z, n]) on channel-major data:
    x (C, L, N), h0 (H, N) -> the states after each step (H, L, N), in input order."""
    c, steps, n = x.shape
    hid = w_hh.shape[1]
    b_gi = b_ih + torch.cat([b_hh[:2 * hid], b_hh.new_zeros(hid)])  # (3H,): r and z get both biases
    gi = torch.addmm(b_gi.unsqueeze(1), w_ih, x.reshape(c, steps * n)).view(3 * hid, steps, n)
    return _GRUScan.apply(gi.transpose(0, 1), h0, w_hh, b_hh[2 * hid:], reverse)  # (H, L, N)


class ScanGRU(nn.GRU):
    """A one-layer, unidirectional, batch-first ``nn.GRU`` computed by :func:`gru_scan`."""

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None  # type: ignore[override]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        h = x.new_zeros(self.hidden_size, b) if h0 is None else h0[0].t()  # (H, B)
        y = gru_scan(x.permute(2, 1, 0), h, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0,
                     self.bias_hh_l0)  # (H, T, B)
        return y.permute(2, 1, 0), y[:, -1].t().unsqueeze(0)  # (B, T, H), (1, B, H)


def grnn_scan(grnn: GRNN, xc: torch.Tensor, state: State | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A GRNN on channel-major data xc (C, L, N), both groups as one block-diagonal scan per direction:
    the states of each direction (hidden, L, N), units [group 1, group 2], and ``h`` (dirs, N, hidden)."""
    ys, h_n = [], []
    for d in range(2 if grnn.bidirectional else 1):
        w = fold.grnn_weights(grnn, reverse=d == 1)
        h0 = xc.new_zeros(grnn.hidden_size, xc.shape[2]) if state is None else state["h"][d].t()  # (H, N)
        ys.append(gru_scan(xc, h0, *w, reverse=d == 1))  # (hidden, L, N)
        h_n.append((ys[-1][:, 0] if d == 1 else ys[-1][:, -1]).t())  # (N, hidden)
    return ys, torch.stack(h_n)


class FastDPGRNN(DPGRNN):
    """:class:`gtcrn.nn.DPGRNN` in the layouts that suit each step: the grouped GRUs as
    :func:`grnn_scan` on channel-major data (their outputs feed the Linear layers as plain matmuls),
    LayerNorm on (..., C, F) data."""

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        b, c, t, f = x.shape
        ys, _ = grnn_scan(self.intra_rnn, x.permute(1, 3, 0, 2).reshape(c, f, b * t), None)  # (C/2, F, B T)
        y = torch.stack([v.view(2, -1, f * b * t) for v in ys], dim=1).flatten(0, 2)  # (C: group, dir, unit)
        intra = torch.addmm(self.intra_fc.bias.unsqueeze(1), self.intra_fc.weight, y)  # (C, F B T)
        intra = intra.view(c * f, b * t).t().reshape(b, t, c, f)  # (B, T, C, F)
        ln = self.intra_ln
        x1 = x.transpose(1, 2) + F.layer_norm(intra, (c, f), ln.weight.t(), ln.bias.t(), ln.eps)  # (B,T,C,F)
        xt = x1.permute(2, 1, 0, 3).reshape(c, t, b * f)  # (C, T, B F)
        ys, h = grnn_scan(self.inter_rnn, xt, None if state is None else {"h": state["inter_rnn.h"]})
        fc = self.inter_fc
        inter = torch.addmm(fc.bias.unsqueeze(1), fc.weight, ys[0].view(c, -1))  # (C, T B F)
        ln = self.inter_ln
        inter = F.layer_norm(inter.view(c, t, b, f).permute(2, 1, 0, 3), (c, f), ln.weight.t(), ln.bias.t(),
                             ln.eps)  # (B, T, C, F)
        return (x1 + inter).transpose(1, 2), {"inter_rnn.h": h}  # (B, C, T, F)


class _PReLU(torch.autograd.Function):
    """PReLU with one slope: ``F.prelu`` forward, a cheaper backward than the CPU kernel's."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, slope = ctx.saved_tensors
        grad, x = grad.contiguous(), x.contiguous()
        grad_neg = grad * (x <= 0)  # where the slope applies
        d_x = torch.add(grad, grad_neg, alpha=slope.item() - 1.0)  # grad * (x > 0 ? 1 : slope)
        return d_x, torch.dot(grad_neg.view(-1), x.view(-1)).view(1)


class FastPReLU(nn.PReLU):
    """A one-slope ``nn.PReLU`` with the backward of :class:`_PReLU`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PReLU.apply(x, self.weight)


class _DepthwiseConv(torch.autograd.Function):
    """Depthwise (kt, kf) conv dilated by d in time, frequency padding kf // 2. Forward: ``F.conv2d``.
    Backward without the CPU kernels that are slow for dilated depthwise convs: the input gradient
    is itself a convolution, and the weight gradient of a dilation-d conv is that of an undilated
    conv over the d time phases (frame q d + r goes to phase r, phases join the batch)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, bias, padding=(0, weight.shape[3] // 2), dilation=(dilation, 1),
                        groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        x, weight = ctx.saved_tensors
        d, (kt, kf) = ctx.dilation, weight.shape[2:]
        b, c, t, f = grad.shape
        grad = grad.contiguous()
        d_x = F.conv2d(grad, weight.flip(2, 3), None, padding=((kt - 1) * d, kf // 2), dilation=(d, 1),
                       groups=c)  # (B, C, T + (kt - 1) d, F)
        q = -(-t // d)  # frames per phase
        g_ph = F.pad(grad, (0, 0, 0, q * d - t)).view(b, c, q, d, f)  # (B, C, Q, d, F)
        g_ph = g_ph.permute(0, 3, 1, 2, 4).reshape(b * d, c, q, f)  # (B d, C, Q, F)
        x_ph = F.pad(x, (0, 0, 0, (q + kt - 1) * d - x.shape[2])).view(b, c, q + kt - 1, d, f)
        x_ph = x_ph.permute(0, 3, 1, 2, 4).reshape(b * d, c, q + kt - 1, f)  # (B d, C, Q + kt - 1, F)
        d_w = torch.ops.aten.convolution_backward(g_ph, x_ph, weight, None, [1, 1], [0, kf // 2], [1, 1],
                                                  False, [0, 0], c, [False, True, False])[1]
        return d_x, d_w, grad.sum(dim=(0, 2, 3)), None


class FastDepthwiseConv(nn.Conv2d):
    """GTConvBlock's causal depthwise conv (no time padding) through :class:`_DepthwiseConv`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _DepthwiseConv.apply(x, self.weight, self.bias, self.dilation[0])


class FastDepthwiseConvT(nn.ConvTranspose2d):
    """The decoder's stride-1 transposed depthwise conv as the equal conv, through :class:`_DepthwiseConv`."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return _DepthwiseConv.apply(x, fold.conv_weight(self), self.bias, self.dilation[0])


class PolyphaseConvT(nn.ConvTranspose2d):
    """A strided (1, K) transposed conv as one stride-1 conv over its output phases."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        w, (left, right), out_w = fold.polyphase(self, x.shape[-1])
        s = self.stride[1]
        x, pad = (x, left) if left == right else (F.pad(x, (left, right)), 0)
        y = F.conv2d(x, w, self.bias.repeat_interleave(s), padding=(0, pad), groups=self.groups)
        return fold.interleave(y, s, out_w)  # (B, C s, T, M) -> (B, C, T, out_w)


class FastPointwise(nn.Conv2d):
    """A 1x1 conv as one batched matmul (faster than the CPU conv kernels, forward and backward)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        b, c, t, f = x.shape
        w = fold.conv_weight(self).view(1, -1, c)  # (1, C_out, C_in)
        y = torch.baddbmm(self.bias.view(1, -1, 1), w.expand(b, -1, c), x.reshape(b, c, t * f))
        return y.view(b, -1, t, f)  # (B, C_out, T, F)


class FastPointwiseT(nn.ConvTranspose2d):
    forward = FastPointwise.forward


class MatmulBandStem(BandStem):
    """The band stem's grouped conv as one matrix per group, its output in BatchNorm's channel order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, f = x.shape
        mat, bias = fold.band_matrix(self.conv, self.bands, f)  # (G, k C_out w, C_in k w), (G, k C_out w, 1)
        y = torch.baddbmm(bias, mat, fold.to_bands(x, self.conv.groups))  # (G, k C_out w, B T)
        y = self.act(self.bn(y.view(1, self.bands * self.out_channels, -1, b * t)))  # (1, N C_out, w, B T)
        return fold.from_bands(y, b, t, self.out_channels, self.bands)  # (B, C_out, T, F)


def _kernel_for(module: nn.Module) -> type | None:
    """The fast class for a module of a GTCRN-family model, or None to keep it."""
    kind = type(module)
    if kind is DPGRNN:
        return FastDPGRNN
    if kind is nn.GRU and module.batch_first and not module.bidirectional and module.num_layers == 1:
        return ScanGRU
    if kind is nn.PReLU and module.weight.numel() == 1:
        return FastPReLU
    if kind in (nn.Conv2d, nn.ConvTranspose2d) and module.groups == module.in_channels > 1 \
            and module.stride == (1, 1) and module.kernel_size[1] % 2 == 1:
        time_pad = module.padding[0] - (module.kernel_size[0] - 1) * module.dilation[0] \
            if kind is nn.ConvTranspose2d else module.padding[0]
        if time_pad == 0 and module.padding[1] == module.kernel_size[1] // 2:
            return FastDepthwiseConv if kind is nn.Conv2d else FastDepthwiseConvT
    if kind is BandStem:
        return MatmulBandStem
    if kind in (nn.Conv2d, nn.ConvTranspose2d) and module.kernel_size == (1, 1) and module.groups == 1 \
            and module.stride == (1, 1) and module.padding == (0, 0) and module.bias is not None:
        return FastPointwise if kind is nn.Conv2d else FastPointwiseT
    if kind is nn.ConvTranspose2d and module.stride[0] == 1 and module.stride[1] > 1 \
            and module.kernel_size[0] == 1 and module.dilation == (1, 1) and module.bias is not None:
        return PolyphaseConvT
    return None


def use_cpu_kernels(model: nn.Module) -> nn.Module:
    """Swap ``model``'s modules in place for their fast CPU training forms (:func:`_kernel_for`), which
    share their parameters and submodules (same state-dict keys, same function); returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kernel = _kernel_for(child)
            if kernel is None:
                continue
            new = copy.copy(child)  # same attributes, parameters and submodules
            new.__class__ = kernel
            setattr(parent, name, new)
    return model
