"""Building blocks of the GTCRN family, named after the paper's blocks.

Shapes are (B, C, T, F): batch, channels, frames, frequency.

Every block that looks back in time takes an explicit ``state`` (a list of
tensors, ``None`` = silence before the first frame) and returns the state
after its last frame. Offline processing, chunked processing of long files and
frame-by-frame streaming therefore run the very same code and weights; only
the number of frames per call differs.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

State = list[torch.Tensor]
T = TypeVar("T")

_FAST_PATH = True


def set_fast_path(enabled: bool) -> None:
    """Switch the fused fast implementations on (default) or off (plain modules)."""
    global _FAST_PATH
    _FAST_PATH = bool(enabled)


def fast_path_enabled() -> bool:
    """Whether the fused fast implementations are in use."""
    return _FAST_PATH


@contextlib.contextmanager
def fast_path(enabled: bool = True) -> Iterator[None]:
    """Context manager: run the enclosed code with the fast path on or off, then restore."""
    previous = _FAST_PATH
    set_fast_path(enabled)
    try:
        yield
    finally:
        set_fast_path(previous)


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting is not None and is_exporting())


def _use_fast(x: torch.Tensor) -> bool:
    """Fast path for this call? Off when disabled, for non-CPU tensors, under CPU autocast, and
    while tracing, exporting or compiling (the plain modules are the traceable reference)."""
    if not _FAST_PATH or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not (torch.compiler.is_compiling() or _is_exporting())


def _use_inference(x: torch.Tensor) -> bool:
    """Inference fast path for this call? Fast path on, no autograd recording, and not
    tracing, exporting or compiling. Unlike the training fast path, it runs on any device."""
    if not _FAST_PATH or (torch.is_grad_enabled() and x.requires_grad):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not (torch.compiler.is_compiling() or _is_exporting())


def _gru_scan_forward(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hn: torch.Tensor,
                      reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GRU loop, feature-major, no autograd. See :func:`gru_scan` for the arguments.

    Returns the outputs (H, L, N) and what the backward needs: sigmoid([r, z])
    (2H, L, N), ``W_hn h + b_hn`` (H, L, N) and the candidate state n (H, L, N).
    """
    steps, g3, n = gi.shape
    hid = g3 // 3
    rz = gi.new_empty(2 * hid, steps, n)  # (2H, L, N)
    ghn = gi.new_empty(hid, steps, n)  # (H, L, N)
    cand = gi.new_empty(hid, steps, n)  # (H, L, N)
    out = gi.new_empty(hid, steps, n)  # (H, L, N)
    w_rz, w_n = w_hh[:2 * hid], w_hh[2 * hid:]  # (2H, H), (H, H)
    b_n = b_hn.unsqueeze(1)  # (H, 1)
    h = h0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        gates = torch.addmm(gi[t, :2 * hid], w_rz, h, out=rz[:, t]).sigmoid_()  # (2H, N)
        gh_n = torch.addmm(b_n, w_n, h, out=ghn[:, t])  # (H, N)
        n_t = torch.addcmul(gi[t, 2 * hid:], gates[:hid], gh_n, out=cand[:, t]).tanh_()  # (H, N)
        h = torch.lerp(n_t, h, gates[hid:], out=out[:, t])  # (1 - z) n + z h
    return out, rz, ghn, cand


class _GRUScan(torch.autograd.Function):
    """The GRU recurrence as one autograd node with a hand-written backward.

    ``nn.GRU`` on CPU records a dozen autograd nodes per time step; here the
    forward loop keeps the gates, the backward loop carries only the hidden-state
    gradient, and the weight gradients are single matmuls afterwards.
    Feature-major (H, N) states keep the matmuls wide and the elementwise
    operations contiguous. Same equations as ``nn.GRU`` (exact up to rounding).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, gi: torch.Tensor, h0: torch.Tensor,
                w_hh: torch.Tensor, b_hn: torch.Tensor, reverse: bool) -> torch.Tensor:
        out, rz, ghn, cand = _gru_scan_forward(gi, h0, w_hh, b_hn, reverse)
        ctx.save_for_backward(h0, w_hh, rz, ghn, cand, out)
        ctx.reverse = reverse
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, None]:
        h0, w_hh, rz, ghn, cand, out = ctx.saved_tensors
        hid, steps, n = cand.shape
        reverse = ctx.reverse
        if reverse:
            h_prev = torch.cat([out[:, 1:], h0.unsqueeze(1)], dim=1)  # (H, L, N)
        else:
            h_prev = torch.cat([h0.unsqueeze(1), out[:, :-1]], dim=1)  # (H, L, N)
        order = range(steps) if reverse else range(steps - 1, -1, -1)
        # Gradients of the pre-activations d_pre (4, H, L, N), blocks [r, z, W_hn h + b_hn, n].
        backward = _gru_backward_inline if hid * n >= _INLINE_BACKWARD_SIZE else _gru_backward_factored
        d_pre, carry = backward(grad_out, h0, w_hh, rz, ghn, cand, h_prev, order)
        h_flat = h_prev.view(hid, steps * n).t()  # (L*N, H)
        d_w = torch.cat([d_pre[:2].view(2 * hid, -1) @ h_flat, d_pre[2].view(hid, -1) @ h_flat])  # (3H, H)
        d_b = d_pre[2].sum(dim=(1, 2))  # (H,)
        d_gi = torch.cat([d_pre[:2].view(2 * hid, steps, n), d_pre[3]]).transpose(0, 1)  # (L, 3H, N)
        return d_gi, carry, d_w, d_b, None


# Hidden-state size (H * N) from which the GRU backward computes its per-step factors inside
# the loop (cache-resident) rather than for all steps at once (fewer, larger operations).
_INLINE_BACKWARD_SIZE = 16384


def _gru_grad_factors(r: torch.Tensor, z: torch.Tensor, cand: torch.Tensor, ghn: torch.Tensor,
                      h_prev: torch.Tensor, f_r: torch.Tensor, f_z: torch.Tensor, f_g: torch.Tensor,
                      f_n: torch.Tensor, f_h: torch.Tensor) -> None:
    """The GRU backward's per-step factors, written into ``f_*`` (views, all of r's shape): the
    gradient of each pre-activation is its factor times dh. r and z pre-activations, ``W_hn h +
    b_hn``, the n pre-activation, and the direct path to h_prev (z)."""
    one_m_z = 1 - z
    torch.mul(one_m_z, 1 - cand * cand, out=f_n)
    torch.mul(h_prev - cand, z * one_m_z, out=f_z)
    torch.mul(f_n, r, out=f_g)
    torch.mul(f_g * ghn, 1 - r, out=f_r)
    f_h.copy_(z)


def _gru_backward_factored(grad_out: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                           rz: torch.Tensor, ghn: torch.Tensor, cand: torch.Tensor,
                           h_prev: torch.Tensor, order: range) -> tuple[torch.Tensor, torch.Tensor]:
    """GRU backward loop with all per-step factors computed beforehand (few operations per
    step). Returns the pre-activation gradients (4, H, L, N) and the gradient of h0."""
    hid, steps, n = cand.shape
    fac = cand.new_empty(5, hid, steps, n)  # (5, H, L, N): [r, z, W_hn h + b_hn, n, h_prev via z]
    _gru_grad_factors(rz[:hid], rz[hid:], cand, ghn, h_prev, *fac.unbind(0))
    w_ext = torch.cat([w_hh, torch.zeros_like(w_hh[:hid]),
                       torch.eye(hid, dtype=w_hh.dtype, device=w_hh.device)], dim=0)  # (5H, H)
    w_ext_t = w_ext.t().contiguous()  # (H, 5H)
    d_all = cand.new_empty(5, hid, steps, n)  # (5, H, L, N)
    carry = torch.zeros_like(h0)  # (H, N)
    for t in order:
        dh = grad_out[:, t] + carry  # (H, N)
        d_t = torch.mul(fac[:, :, t], dh, out=d_all[:, :, t])  # (5, H, N)
        carry = torch.mm(w_ext_t, d_t.view(5 * hid, n))  # (H, N)
    return d_all[:4], carry


def _gru_backward_inline(grad_out: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                         rz: torch.Tensor, ghn: torch.Tensor, cand: torch.Tensor,
                         h_prev: torch.Tensor, order: range) -> tuple[torch.Tensor, torch.Tensor]:
    """GRU backward loop computing each step's factors from that step's gates (for large
    states: a step's data stays in cache). Returns the pre-activation gradients
    (4, H, L, N) and the gradient of h0."""
    hid, steps, n = cand.shape
    d_pre = cand.new_empty(4, hid, steps, n)  # (4, H, L, N)
    w3_t = w_hh.t().contiguous()  # (H, 3H)
    carry = torch.zeros_like(h0)  # (H, N)
    tmp = torch.empty_like(h0)  # (H, N)
    for t in order:
        r, z, n_t, gh_n = rz[:hid, t], rz[hid:, t], cand[:, t], ghn[:, t]  # (H, N) each
        dh = grad_out[:, t] + carry  # (H, N)
        one_m_z = 1 - z
        d_n = torch.mul(dh, one_m_z, out=d_pre[3, :, t])
        torch.mul(n_t, n_t, out=tmp).neg_().add_(1)
        d_n.mul_(tmp)  # dh (1 - z) (1 - n^2)
        torch.sub(h_prev[:, t], n_t, out=d_pre[1, :, t]).mul_(dh).mul_(z).mul_(one_m_z)  # z
        d_g = torch.mul(d_n, r, out=d_pre[2, :, t])  # W_hn h + b_hn
        torch.mul(d_g, gh_n, out=d_pre[0, :, t]).mul_(torch.sub(1, r, out=tmp))  # r
        carry = torch.addmm(dh * z, w3_t, d_pre[:3, :, t].view(3 * hid, -1))  # (H, N)
    return d_pre, carry


class _NativeGRU(torch.autograd.Function):
    """A one-layer GRU for small batches: the native no-grad loop forward (C++, cheap per step),
    then a backward that recomputes the gates for all steps at once from the saved outputs
    and runs the same one-multiply-one-matmul-per-step recurrence as :class:`_GRUScan`."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, h0: torch.Tensor,
                w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
                ) -> torch.Tensor:
        """x (L, N, C), h0 (N, H), nn.GRU weights -> outputs (L, N, H)."""
        out = torch._VF.gru(x, h0.unsqueeze(0), [w_ih, w_hh, b_ih, b_hh],
                            True, 1, 0.0, False, False, False)[0]  # (L, N, H)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
                 ) -> tuple[torch.Tensor, ...]:
        x, h0, w_ih, w_hh, b_ih, b_hh, out = ctx.saved_tensors
        steps, n, hid = out.shape
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]], dim=0)  # (L, N, H)
        gi = F.linear(x, w_ih, b_ih)  # (L, N, 3H)
        gh = F.linear(h_prev, w_hh, b_hh)  # (L, N, 3H)
        rz = torch.sigmoid(gi[..., :2 * hid] + gh[..., :2 * hid])  # (L, N, 2H)
        r, z = rz[..., :hid], rz[..., hid:]  # (L, N, H) each
        ghn = gh[..., 2 * hid:]  # (L, N, H)
        cand = torch.tanh(torch.addcmul(gi[..., 2 * hid:], r, ghn))  # (L, N, H)
        fac = out.new_empty(steps, n, 5, hid)  # (L, N, 5, H): [r pre, z pre, n pre, ghn, h_prev via z]
        f_r, f_z, f_n, f_g, f_h = fac.unbind(2)  # (L, N, H) each
        _gru_grad_factors(r, z, cand, ghn, h_prev, f_r, f_z, f_g, f_n, f_h)
        w_ext = torch.cat([w_hh[:2 * hid], torch.zeros_like(w_hh[:hid]), w_hh[2 * hid:],
                           torch.eye(hid, dtype=w_hh.dtype, device=w_hh.device)], dim=0)  # (5H, H)
        d_pre = torch.empty_like(fac)  # (L, N, 5, H)
        carry = torch.zeros_like(h0)  # (N, H)
        grad_out = grad_out.contiguous()
        for t in range(steps - 1, -1, -1):
            dh = grad_out[t] + carry  # (N, H)
            d_t = torch.mul(fac[t], dh.unsqueeze(1), out=d_pre[t])  # (N, 5, H)
            carry = torch.mm(d_t.view(n, 5 * hid), w_ext)  # (N, H)
        d_gi = d_pre[:, :, :3].reshape(steps * n, 3 * hid)  # (L*N, 3H)
        d_gh = d_pre[:, :, [0, 1, 3]].reshape(steps * n, 3 * hid)  # (L*N, 3H)
        d_x = (d_gi @ w_ih).view(steps, n, -1)  # (L, N, C)
        d_w_ih = d_gi.t() @ x.reshape(steps * n, -1)  # (3H, C)
        d_w_hh = d_gh.t() @ h_prev.reshape(steps * n, hid)  # (3H, H)
        return d_x, carry, d_w_ih, d_w_hh, d_gi.sum(0), d_gh.sum(0)


def gru_scan(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hn: torch.Tensor,
             reverse: bool = False) -> torch.Tensor:
    """A GRU recurrence (``nn.GRU`` gate layout [r, z, n]), feature-major.

    gi (L, 3H, N): ``W_ih x + b_ih`` with ``b_hh``'s r and z parts already
    added, any strides whose (3H, N) step slices are matrices BLAS accepts;
    h0 (H, N); w_hh (3H, H); b_hn (H,) the n part of ``b_hh``. ``reverse`` runs
    from the last step to the first (a backward direction). Returns (H, L, N):
    the hidden state after each step, in input order. Fastest when ``gi`` is a
    transposed view of a (3H, L, N) tensor.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (gi, h0, w_hh, b_hn)):
        return _GRUScan.apply(gi, h0, w_hh, b_hn, reverse)
    with torch.no_grad():
        return _gru_scan_forward(gi, h0, w_hh, b_hn, reverse)[0]


def _merged_gru(x: torch.Tensor, h0: torch.Tensor, weights: list[torch.Tensor], batch_first: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's fused GRU (``torch.gru``) on merged weights that no ``nn.GRU`` owns: x (L, N, in)
    (or (N, L, in) when ``batch_first``), h0 (1, N, H) -> (outputs, h_n (1, N, H)).

    On CUDA, cuDNN wants RNN weights in one flat buffer (what ``nn.GRU.flatten_parameters``
    arranges) and otherwise copies them at every call, with a warning per call site. The merged
    weights are a few kilobytes, so the copy costs nothing worth a warning: it is silenced."""
    if not x.is_cuda:
        return torch.gru(x, h0, weights, True, 1, 0.0, False, False, batch_first)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
        return torch.gru(x, h0, weights, True, 1, 0.0, False, False, batch_first)


def _gru_gi_bias(b_ih: torch.Tensor, b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(3H,) biases -> (bias of the input projection incl. b_hh's r and z parts, b_hn (H,))."""
    hid = b_hh.shape[0] // 3
    return b_ih + F.pad(b_hh[:2 * hid], (0, hid)), b_hh[2 * hid:]


class _PReLU(torch.autograd.Function):
    """PReLU with one slope: ``F.prelu`` forward, a cheaper backward than the CPU kernel's."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, slope: torch.Tensor
                ) -> torch.Tensor:
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        x, slope = ctx.saved_tensors
        grad = grad.contiguous()
        x = x.contiguous()
        grad_neg = grad * (x <= 0)  # gradient where the slope applies
        d_x = torch.add(grad, grad_neg, alpha=slope.item() - 1.0)  # grad * (x > 0 ? 1 : slope)
        d_slope = torch.dot(grad_neg.view(-1), x.view(-1)).view(1)  # sum of grad * x over x <= 0
        return d_x, d_slope


def _act(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an activation module, single-slope PReLU through :class:`_PReLU`."""
    if isinstance(act, nn.PReLU) and act.weight.numel() == 1:
        return _PReLU.apply(x, act.weight)
    return act(x)


class _DepthwiseConv(torch.autograd.Function):
    """Depthwise (3, 3) convolution, dilated in time, no time padding, frequency padding 1.

    The forward is ``F.conv2d``. The backward avoids the CPU kernels that are slow
    for dilated depthwise convolutions: the input gradient is itself a forward
    convolution (zero-padded gradient, flipped kernel), and the weight gradient of a
    dilation-``d`` convolution is taken as that of an undilated convolution over the
    ``d`` time phases (time ``t = q d + r`` -> phase ``r`` joins the batch).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
        """x (B, C, T + 2d, F), weight (C, 1, 3, 3), bias (C,) -> (B, C, T, F)."""
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=(0, 1), dilation=(dilation, 1), groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        x, weight = ctx.saved_tensors
        d = ctx.dilation
        b, c, t, f = grad.shape
        grad = grad.contiguous()
        d_x = d_w = d_b = None
        if ctx.needs_input_grad[0]:  # (B, C, T + 2d, F)
            d_x = F.conv2d(grad, weight.flip(2, 3), None, padding=(2 * d, 1), dilation=(d, 1), groups=c)
        if ctx.needs_input_grad[1]:
            if d == 1:
                g_ph, x_ph = grad, x
            else:
                q = -(-t // d)  # frames per phase
                g_ph = F.pad(grad, (0, 0, 0, q * d - t)).view(b, c, q, d, f)  # (B, C, Q, d, F)
                g_ph = g_ph.permute(0, 3, 1, 2, 4).reshape(b * d, c, q, f)  # (B*d, C, Q, F)
                x_ph = F.pad(x, (0, 0, 0, (q + 2) * d - x.shape[2]))  # (B, C, (Q+2) d, F)
                x_ph = x_ph.view(b, c, q + 2, d, f)  # (B, C, Q+2, d, F)
                x_ph = x_ph.permute(0, 3, 1, 2, 4).reshape(b * d, c, q + 2, f)  # (B*d, C, Q+2, F)
            d_w = torch.ops.aten.convolution_backward(
                g_ph, x_ph, weight, None, [1, 1], [0, 1], [1, 1], False, [0, 0], c, [False, True, False])[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_b = grad.sum(dim=(0, 2, 3))
        return d_x, d_w, d_b, None


def _conv_weight(conv: nn.Module) -> torch.Tensor:
    """Weight of an (equivalent) ``Conv2d`` for a stride-1 ``Conv2d`` / ``ConvTranspose2d``.

    A stride-1 transposed convolution is the convolution with the kernel flipped
    and, per group, input and output channels swapped (padding ``k - 1 - p``).
    """
    w = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):
        g = conv.groups
        cin, cout_g, kh, kw = w.shape
        w = w.view(g, cin // g, cout_g, kh, kw).transpose(1, 2).reshape(g * cout_g, cin // g, kh, kw)
        w = w.flip(2, 3)  # (C_out, C_in / groups, kh, kw)
    return w


def _pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """A 1x1 ``Conv2d`` or ``ConvTranspose2d`` (groups 1) as one batched matmul (faster than the
    CPU convolution kernels, forward and backward): (B, C_in, T, F) -> (B, C_out, T, F)."""
    b, c, t, f = x.shape
    w = _conv_weight(conv)  # (C_out, C_in, 1, 1)
    co = w.shape[0]
    bias = conv.bias if conv.bias is not None else x.new_zeros(co)  # (C_out,)
    y = torch.baddbmm(bias.view(1, co, 1), w.view(1, co, c).expand(b, co, c),
                      x.reshape(b, c, t * f))  # (B, C_out, T*F)
    return y.view(b, co, t, f)  # (B, C_out, T, F)


def _sfe_pointwise(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``conv(SFE(3)(x))`` for a 1x1 conv, without materialising SFE: a (1, 3) conv over x.

    SFE channel ``c * 3 + j`` is bin ``f + j - 1`` of channel ``c``, so the 1x1
    weight (C_out, 3 C) is a (C_out, C, 1, 3) kernel with frequency padding 1.
    """
    w = _conv_weight(conv)  # (C_out, 3 C, 1, 1)
    w = w.view(w.shape[0], x.shape[1], 1, 3)  # (C_out, C, 1, 3)
    return F.conv2d(x, w, conv.bias, padding=(0, 1))


def _stride2_phases(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The (1, 5) stride-2 transposed conv kernel ``w`` (..., 5) as its two output phases, each a
    3-tap kernel over input bins (m - 1, m, m + 1), stacked at ``dim``: even output bins take taps
    (4, 2, 0), odd bins (-, 3, 1)."""
    even = w[..., [4, 2, 0]]  # (..., 3)
    odd = F.pad(w[..., [3, 1]], (1, 0))  # (..., 3): no tap at m - 1
    return torch.stack([even, odd], dim=dim)


def _stride2_deconv(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``ConvTranspose2d`` with kernel (1, 5), stride (1, 2), padding (0, 2) as one stride-1 conv.

    Polyphase form: even output bins take kernel taps (4, 2, 0) at input bins
    (m - 1, m, m + 1), odd bins taps (3, 1) at (m, m + 1). One (1, 3) conv gives
    both phases as channel pairs, which are then interleaved along frequency.
    (B, C_in, T, W) -> (B, C_out, T, 2W - 1 + output_padding).
    """
    g = conv.groups
    w = conv.weight  # (C_in, C_out / g, 1, 5)
    cin, cout_g = w.shape[0], w.shape[1]
    w = w.view(g, cin // g, cout_g, 5).transpose(1, 2)  # (g, C_out/g, C_in/g, 5)
    w2 = _stride2_phases(w, dim=2).reshape(g * cout_g * 2, cin // g, 1, 3)  # (2 C_out, C_in/g, 1, 3)
    bias = None if conv.bias is None else conv.bias.repeat_interleave(2)  # (2 C_out,)
    y = F.conv2d(x, w2, bias, padding=(0, 1), groups=g)  # (B, 2 C_out, T, W): (channel, phase)
    b, _, t, width = y.shape
    y = y.view(b, g * cout_g, 2, t, width).permute(0, 1, 3, 4, 2)  # (B, C_out, T, W, phase)
    y = y.reshape(b, g * cout_g, t, 2 * width)  # (B, C_out, T, 2W)
    out_w = 2 * width - 1 + conv.output_padding[1]
    return y[..., :out_w]  # (B, C_out, T, 2W - 1 + output_padding)


def _gates_block_diag(weights: list[torch.Tensor]) -> torch.Tensor:
    """nn.GRU-layout weights (3 h_i, c_i) -> (3 sum h, sum c): per gate [r, z, n] block diagonal."""
    gates = [torch.block_diag(*[w.view(3, w.shape[0] // 3, w.shape[1])[k] for w in weights])
             for k in range(3)]  # 3 x (sum h, sum c)
    return torch.cat(gates, dim=0)  # (3 sum h, sum c)


def _gates_cat(biases: list[torch.Tensor]) -> torch.Tensor:
    """nn.GRU-layout biases (3 h_i,) -> (3 sum h,), gate-major like :func:`_gates_block_diag`."""
    return torch.cat([b.view(3, -1) for b in biases], dim=1).reshape(-1)  # (3, sum h) -> (3 sum h,)


# ---- inference path ------------------------------------------------------------------------------
#
# Without autograd (and not tracing/exporting/compiling), eval-mode blocks run a lean form of the
# same function in the channels-last layout (B, T, F, C): BatchNorm folded into the preceding
# convolution, convolutions along frequency as one unfold + matmul, the depthwise temporal
# convolution as one strided view times its taps, and the GRUs as a five-operation-per-step scan.
# Folded weights are cached per block and rebuilt whenever a parameter or buffer of the block
# changes (in-place updates bump tensor versions; replaced tensors change identity).


def _inference_ok(module: nn.Module, x: torch.Tensor) -> bool:
    """Use the inference path for ``module`` on input ``x``? Eval mode, :func:`_use_inference`,
    and no parameter that autograd would record (when gradients are enabled at all)."""
    if module.training or not _use_inference(x):
        return False
    return not torch.is_grad_enabled() or not any(p.requires_grad for p in module.parameters())


# Bumped whenever any module registers or replaces a parameter, buffer or submodule (global
# nn.Module hooks), so that caches notice replaced tensors without walking the module tree.
_REGISTRATIONS = [0]


def _count_registration(*_args: object) -> None:
    """Global registration hook: invalidate every inference cache (returns None: no change)."""
    _REGISTRATIONS[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)
torch.nn.modules.module.register_module_buffer_registration_hook(_count_registration)
torch.nn.modules.module.register_module_module_registration_hook(_count_registration)


def _versions(tensors: list[torch.Tensor]) -> tuple[tuple[int, int], ...] | None:
    """Version counter and data address of each of ``tensors`` (None if one has no version
    counter, e.g. an inference tensor). The address changes when the storage is swapped without
    re-registration: ``module.to(device)``, ``.double()`` and ``param.data = ...``."""
    try:
        return tuple([(t._version, t.data_ptr()) for t in tensors])
    except RuntimeError:
        return None


def _cached(module: nn.Module, build: Callable[[], T], key: object = None) -> T:
    """``build()`` (run without autograd), cached on ``module`` until one of its parameters or
    buffers changes: in place (version counters), moved or swapped (data addresses) or replaced
    (registration counter), or ``key`` (what else the value depends on, e.g. an input width)
    differs from the cached one's."""
    entry = module.__dict__.get("_inference_cache")
    if entry is not None and entry[0] == _REGISTRATIONS[0] and entry[4] == key:
        versions = _versions(entry[1])
        if versions is not None and versions == entry[2]:
            return entry[3]
    tensors = [*module.parameters(), *module.buffers()]
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    module.__dict__["_inference_cache"] = (_REGISTRATIONS[0], tensors, _versions(tensors), value, key)
    return value


def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift``: (scale (C,), shift (C,))."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _slope(act: nn.Module) -> float | None:
    """The slope of a single-parameter PReLU as a float (for caching), else None."""
    if isinstance(act, nn.PReLU) and act.weight.numel() == 1:
        return float(act.weight)
    return None


def _act_cl(act: nn.Module, y: torch.Tensor, slope: float | None = None) -> torch.Tensor:
    """Apply a PReLU / Tanh activation to channels-last data (channels on the last axis), in
    place where possible (``y`` must be a fresh result). ``slope``: from :func:`_slope`, cached."""
    if slope is not None:
        return F.leaky_relu_(y, slope)  # PReLU with one slope: x if x > 0 else slope * x
    if isinstance(act, nn.PReLU):
        w = act.weight
        if w.numel() == 1:
            return F.prelu(y, w)
        return torch.where(y >= 0, y, y * w)  # per-channel slope broadcast on the last axis
    if isinstance(act, nn.Tanh):
        return y.tanh_()
    return act(y.movedim(-1, 1)).movedim(1, -1)  # other activations: channel-first call


def _dense_conv_weight(conv: nn.Module) -> torch.Tensor:
    """Weight of an equivalent ungrouped ``Conv2d`` (block diagonal over the groups):
    (C_out, C_in, kh, kw). Stride-1 transposed convolutions via :func:`_conv_weight`."""
    w = _conv_weight(conv)  # (C_out, C_in / g, kh, kw)
    g = conv.groups
    if g == 1:
        return w
    return _groups_dense(w.view(g, w.shape[0] // g, *w.shape[1:]))  # (C_out, C_in, kh, kw)


def _groups_dense(blocks: torch.Tensor) -> torch.Tensor:
    """Per-group weights (g, A, B, ...) -> one block-diagonal weight (g A, g B, ...)."""
    g, a, b = blocks.shape[:3]
    dense = blocks.new_zeros(g, a, g, b, *blocks.shape[3:])  # (g, A, g, B, ...)
    for k in range(g):
        dense[k, :, k] = blocks[k]
    return dense.view(g * a, g * b, *blocks.shape[3:])  # (g A, g B, ...)


def _gru_scan_weights(w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                      b_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nn.GRU-layout weights -> the operands of :func:`_gru_scan_infer`:
    w4 (C, 4H) and b4 (4H,) giving the per-step inputs [r, z, b_hn, n] (r and z with both
    biases, the constant b_hn, n with b_in), and w_hh transposed (H, 3H)."""
    hid = w_hh.shape[1]
    w4 = torch.cat([w_ih[:2 * hid], w_ih.new_zeros(hid, w_ih.shape[1]), w_ih[2 * hid:]])  # (4H, C)
    b4 = torch.cat([b_ih[:2 * hid] + b_hh[:2 * hid], b_hh[2 * hid:], b_ih[2 * hid:]])  # (4H,)
    return w4.t().contiguous(), b4, w_hh.t().contiguous()


class _ScanPlan:
    """Buffers and per-step views of one GRU scan shape (see :func:`_gru_scan_infer`).

    ``gi`` (L, N, 4H) is the input the caller fills; ``out`` (L, N, H) receives the states.
    Making the per-step views costs about as much as the steps' arithmetic, so plans for
    small shapes are kept (per thread) and reused: a plan's ``out`` is valid until the next
    scan of the same shape in the same thread.
    """

    def __init__(self, steps: int, n: int, hid: int, dtype: torch.dtype, device: torch.device,
                 gi: torch.Tensor | None = None) -> None:
        if gi is None:
            gi = torch.empty(steps, n, 4 * hid, dtype=dtype, device=device)  # (L, N, 4H)
        self.gi = gi
        self.h0 = torch.zeros(n, hid, dtype=dtype, device=device)  # (N, H)
        gates = torch.empty(steps, n, 3 * hid, dtype=dtype, device=device)  # (L, N, 3H): [r, z, ghn]
        cand = torch.empty(steps, n, hid, dtype=dtype, device=device)  # (L, N, H)
        self.out = torch.empty(steps, n, hid, dtype=dtype, device=device)  # (L, N, H)
        self.steps = list(zip(  # noqa: B905 (all of length L)
            gi[:, :, :3 * hid].unbind(0), gi[:, :, 3 * hid:].unbind(0),  # L x (N, 3H), L x (N, H)
            gates.unbind(0), gates[:, :, :2 * hid].unbind(0),  # L x (N, 3H), L x (N, 2H)
            gates[:, :, :hid].unbind(0), gates[:, :, hid:2 * hid].unbind(0),  # L x (N, H): r, z
            gates[:, :, 2 * hid:].unbind(0), cand.unbind(0), self.out.unbind(0)))  # L x (N, H) each

    def run(self, h: torch.Tensor, w_hh_t: torch.Tensor) -> torch.Tensor:
        """The recurrence over the filled ``gi`` from state h (N, H) -> ``out`` (L, N, H)."""
        for a, gn, g, rz, r, z, ghn, c, o in self.steps:
            torch.addmm(a, h, w_hh_t, out=g)  # [r, z, W_hn h + b_hn] pre-activations
            rz.sigmoid_()
            torch.addcmul(gn, r, ghn, out=c).tanh_()  # candidate n
            h = torch.lerp(c, h, z, out=o)  # (1 - z) n + z h
        return self.out


# Scans longer than this run in the native GRU loop (cheaper per step than making views).
_LONG_SCAN = 48
# Plans are kept for scans of at most this many state elements (L * N * H).
_PLAN_MAX_SIZE = 65536
_PLANS = threading.local()


def _scan_plan(steps: int, n: int, hid: int, like: torch.Tensor) -> _ScanPlan:
    """A (per-thread, reused when small) :class:`_ScanPlan` for this shape, dtype and device."""
    if steps * n * hid > _PLAN_MAX_SIZE:
        return _ScanPlan(steps, n, hid, like.dtype, like.device)
    plans = _PLANS.__dict__.setdefault("plans", {})
    key = (steps, n, hid, like.dtype, like.device, torch.is_inference_mode_enabled())
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _ScanPlan(steps, n, hid, like.dtype, like.device)
    return plan


def _gru_scan_infer(gi: torch.Tensor, h: torch.Tensor, w_hh_t: torch.Tensor) -> torch.Tensor:
    """GRU recurrence without autograd, batch-major states, five operations per step.

    gi (L, N, 4H): per step [W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, b_hn, W_in x + b_in]
    (see :func:`_gru_scan_weights`); h (N, H) the initial state; w_hh_t (H, 3H).
    Returns the states after each step (L, N, H), a new tensor. Same equations as ``nn.GRU``.
    """
    steps, n, h4 = gi.shape
    hid = h4 // 4
    if steps == 1:
        g = torch.addmm(gi[0, :, :3 * hid], h, w_hh_t)  # (N, 3H): [r, z, W_hn h + b_hn]
        rz = g[:, :2 * hid].sigmoid_()  # (N, 2H)
        cand = torch.addcmul(gi[0, :, 3 * hid:], rz[:, :hid], g[:, 2 * hid:]).tanh_()  # (N, H)
        return torch.lerp(cand, h, rz[:, hid:]).unsqueeze(0)  # (1, N, H): (1 - z) n + z h
    return _ScanPlan(steps, n, hid, gi.dtype, gi.device, gi).run(h, w_hh_t)


def _freq_unfold(x: torch.Tensor, size: int, stride: int, pad: int) -> torch.Tensor:
    """Channels-last (B, T, W, C) -> frequency patches (B*T*W_out, C*size), entry
    ``c * size + j`` = bin ``w * stride + j - pad`` of channel ``c`` (zero outside)."""
    xp = F.pad(x, (0, 0, pad, pad))  # (B, T, W + 2 pad, C)
    patches = xp.unfold(2, size, stride)  # (B, T, W_out, C, size)
    return patches.reshape(-1, x.shape[-1] * size)  # (B*T*W_out, C*size)


def _to_cl(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, F) -> channels-last (B, T, F, C) view."""
    return x.permute(0, 2, 3, 1)  # (B, T, F, C)


def _from_cl(x: torch.Tensor) -> torch.Tensor:
    """Channels-last (B, T, F, C) -> (B, C, T, F) view."""
    return x.permute(0, 3, 1, 2)  # (B, C, T, F)


def sfe_cl(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """:class:`SFE` on channels-last data: (B, T, F, C) -> (B, T, F, C * k), contiguous."""
    b, t, f, c = x.shape
    patches = _freq_unfold(x, kernel_size, 1, kernel_size // 2)  # (B*T*F, C*k): channel c * k + j
    return patches.view(b, t, f, c * kernel_size)  # (B, T, F, C*k)


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
        if _inference_ok(self, x):
            y, new_state = self.infer_cl(_to_cl(x), state)  # (B, T, F, C)
            return _from_cl(y), new_state  # (B, C, T, F)
        if _use_fast(x):
            return self._forward_fast(x, state)
        zt = x.pow(2).mean(dim=-1).transpose(1, 2)  # (B, T, C)
        h0 = state[0] if state is not None else None
        at, h = self.att_gru(zt, h0)  # (B, T, 2C), (1, B, 2C)
        at = torch.sigmoid(self.att_fc(at)).transpose(1, 2)  # (B, C, T)
        return x * at.unsqueeze(-1), [h]  # (B, C, T, F)

    def inference_weights(self) -> tuple[torch.Tensor, ...]:
        """Cached (w4, b4, w_hh_t) of the GRU scan and (fc weight transposed, fc bias)."""
        def build() -> tuple[torch.Tensor, ...]:
            g = self.att_gru
            scan = _gru_scan_weights(g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
            return (*scan, self.att_fc.weight.t().contiguous(), self.att_fc.bias)
        return _cached(self, build)

    def infer_cl(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Inference path on channels-last data: x (B, T, F, C) -> (B, T, F, C), state."""
        b, t, f, c = x.shape
        w4, b4, w_hh_t, fc_t, fc_b = self.inference_weights()
        hid = w_hh_t.shape[0]
        energy = torch.linalg.vecdot(x, x, dim=2)  # (B, T, C): sum over F of x^2
        energy = energy.transpose(0, 1).reshape(t * b, c)  # (T*B, C)
        h0 = x.new_zeros(b, hid) if state is None else state[0][0]  # (B, H)
        if t > _LONG_SCAN:
            g = self.att_gru
            y = torch._VF.gru((energy / f).view(t, b, c), h0.unsqueeze(0),
                              [g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0],
                              True, 1, 0.0, False, False, False)[0]  # (T, B, H)
        else:
            gi = torch.addmm(b4, energy, w4, alpha=1.0 / f).view(t, b, 4 * hid)  # (T, B, 4H): mean
            y = _gru_scan_infer(gi, h0, w_hh_t)  # (T, B, H)
        att = torch.addmm(fc_b, y.view(t * b, hid), fc_t).sigmoid_()  # (T*B, C)
        att = att.view(t, b, 1, c).transpose(0, 1)  # (B, T, 1, C)
        return x * att, [y[t - 1].unsqueeze(0)]  # (B, T, F, C), [(1, B, H)]

    def _forward_fast(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Same function; the small-batch GRU runs as one autograd node."""
        gru = self.att_gru
        zt = (torch.linalg.vecdot(x, x, dim=-1) / x.shape[-1]).permute(2, 0, 1).contiguous()  # (T, B, C)
        h0 = x.new_zeros(x.shape[0], gru.hidden_size) if state is None else state[0][0]  # (B, 2C)
        weights = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
        if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights)):
            at = _NativeGRU.apply(zt, h0, *weights)  # (T, B, 2C)
        else:
            at = torch._VF.gru(zt, h0.unsqueeze(0), list(weights), True, 1, 0.0, False, False, False)[0]
        h = at[-1].unsqueeze(0)  # (1, B, 2C)
        at = torch.sigmoid(self.att_fc(at)).permute(1, 2, 0)  # (B, C, T)
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

    def _is_stride2_deconv(self) -> bool:
        conv = self.conv
        return (isinstance(conv, nn.ConvTranspose2d) and conv.kernel_size == (1, 5)
                and conv.stride == (1, 2) and conv.padding == (0, 2) and conv.dilation == (1, 1))

    def _infer_supported(self) -> bool:
        conv = self.conv
        if self._is_stride2_deconv():
            return True
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size[0] == 1 and conv.padding[0] == 0
                and conv.stride[0] == 1 and conv.dilation == (1, 1)
                and isinstance(conv.padding[1], int))

    def inference_weights(self) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Cached (weight (C_in * k, C_out'), bias (C_out',), PReLU slope) of the conv with
        BatchNorm folded in,
        rows ordered (input channel, tap). For the stride-2 transposed conv: the polyphase form,
        taps at input bins (m - 1, m, m + 1), columns (phase, output channel)."""
        def build() -> tuple[torch.Tensor, torch.Tensor, float | None]:
            scale, shift = _bn_affine(self.bn)
            conv = self.conv
            bias = conv.bias if conv.bias is not None else scale.new_zeros(scale.shape)
            if self._is_stride2_deconv():
                g = conv.groups
                w = conv.weight  # (C_in, C_out / g, 1, 5)
                cin, cout_g = w.shape[0], w.shape[1]
                dense = _groups_dense(w.view(g, cin // g, cout_g, 5))  # (C_in, C_out, 5)
                w2 = _stride2_phases(dense, dim=2) * scale.view(1, -1, 1, 1)  # (C_in, C_out, phase, 3)
                w2 = w2.permute(0, 3, 2, 1).reshape(cin * 3, 2 * g * cout_g)  # (C_in*3, phase*C_out)
                b2 = (bias * scale + shift).repeat(2)  # (phase*C_out,)
                return w2.contiguous(), b2, _slope(self.act)
            w = _dense_conv_weight(conv)[:, :, 0] * scale.view(-1, 1, 1)  # (C_out, C_in, k)
            w = w.reshape(w.shape[0], -1).t().contiguous()  # (C_in*k, C_out)
            return w, bias * scale + shift, _slope(self.act)
        return _cached(self, build)

    def infer_cl(self, x: torch.Tensor) -> torch.Tensor:
        """Inference path on channels-last data: (B, T, W, C_in) -> (B, T, W_out, C_out)."""
        if not self._infer_supported():
            return _to_cl(self.act(self.bn(self.conv(_from_cl(x)))))  # (B, T, W_out, C_out)
        b, t, width, _ = x.shape
        w, bias, slope = self.inference_weights()
        conv = self.conv
        if self._is_stride2_deconv():
            y = torch.addmm(bias, _freq_unfold(x, 3, 1, 1), w)  # (B*T*W, phase*C_out)
            y = y.view(b, t, 2 * width, -1)  # (B, T, 2W, C_out): bins interleaved by phase
            y = _act_cl(self.act, y, slope)
            return y[:, :, :2 * width - 1 + conv.output_padding[1]]  # (B, T, 2W - 1 + pad, C_out)
        k, s, p = conv.kernel_size[1], conv.stride[1], conv.padding[1]
        y = torch.addmm(bias, _freq_unfold(x, k, s, p), w)  # (B*T*W_out, C_out)
        return _act_cl(self.act, y.view(b, t, -1, w.shape[1]), slope)  # (B, T, W_out, C_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if _inference_ok(self, x):
            return _from_cl(self.infer_cl(_to_cl(x)))  # (B, C_out, T, W_out)
        if not _use_fast(x):
            return self.act(self.bn(conv(x)))
        if self._is_stride2_deconv():
            return _act(self.act, self.bn(_stride2_deconv(x, conv)))  # (B, C_out, T, 2F - 1 + pad)
        return _act(self.act, self.bn(conv(x)))


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
        if self.depth_conv.kernel_size == (3, 3) and _inference_ok(self, x):
            y, new_state = self.infer_cl(_to_cl(x), state)  # (B, T, F, C)
            return _from_cl(y), new_state  # (B, C, T, F)
        if _use_fast(x) and self.depth_conv.kernel_size == (3, 3):
            return self._forward_fast(x, state)
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

    def inference_weights(self) -> tuple[torch.Tensor, ...]:
        """Cached weights with BatchNorm folded in: point conv 1 over the SFE patches
        (C/2 * 3, H) + bias (H,), depthwise taps (H, 3, 3) + bias (H,), point conv 2 (H, C/2)
        + bias (C/2,), and the two PReLU slopes."""
        def build() -> tuple[torch.Tensor, ...]:
            s1, t1 = _bn_affine(self.point_bn1)
            w1 = _conv_weight(self.point_conv1).flatten(1) * s1.unsqueeze(1)  # (H, C/2 * 3)
            b1 = self.point_conv1.bias * s1 + t1
            sd, td = _bn_affine(self.depth_bn)
            wd = _conv_weight(self.depth_conv)[:, 0] * sd.view(-1, 1, 1)  # (H, 3, 3): (time, freq) taps
            bd = self.depth_conv.bias * sd + td
            s2, t2 = _bn_affine(self.point_bn2)
            w2 = _conv_weight(self.point_conv2).flatten(1) * s2.unsqueeze(1)  # (C/2, H)
            b2 = self.point_conv2.bias * s2 + t2
            return (w1.t().contiguous(), b1, wd.contiguous(), bd,
                    w2.t().contiguous(), b2, _slope(self.point_act), _slope(self.depth_act))
        return _cached(self, build)

    def infer_cl(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Inference path on channels-last data: x (B, T, F, C) -> (B, T, F, C), state (the
        state's layout is the same as :meth:`forward`'s)."""
        b, t, f, c = x.shape
        half = c // 2
        w1, b1, wd, bd, w2, b2, slope1, slope_d = self.inference_weights()
        hch = w1.shape[1]
        x1, x2 = x[..., :half], x[..., half:]  # 2 x (B, T, F, C/2)
        h = torch.addmm(b1, _freq_unfold(x1, 3, 1, 1), w1)  # (B*T*F, H): SFE + point conv 1
        h = _act_cl(self.point_act, h, slope1).view(b, t, f, hch)  # (B, T, F, H)
        pad = self.pad_size
        if state is None:
            h = F.pad(h, (0, 0, 1, 1, pad, 0))  # (B, pad + T, F + 2, H)
        else:
            h = torch.cat([state[0].permute(0, 2, 3, 1), h], dim=1)  # (B, pad + T, F, H)
            h = F.pad(h, (0, 0, 1, 1))  # (B, pad + T, F + 2, H)
        cache = h[:, t:, 1:f + 1].permute(0, 3, 1, 2)  # (B, H, pad, F)
        st_f = hch
        st_t = (f + 2) * hch
        d = self.depth_conv.dilation[0]
        if t > _LONG_SCAN:  # many frames: the native convolution
            h = F.conv2d(_from_cl(h), wd.unsqueeze(1), bd, dilation=(d, 1), groups=hch)  # (B, H, T, F)
            h = _act_cl(self.depth_act, _to_cl(h), slope_d).reshape(-1, hch)  # (B*T*F, H)
        else:
            win = h.as_strided((b, t, f, hch, 3, 3), (h.shape[1] * st_t, st_t, st_f, 1, d * st_t, st_f))
            # win (B, T, F, H, 3, 3): taps (time t + i d, bin f + j - 1); reduced over the inner axes
            h = torch.mul(win, wd).sum((4, 5)).add_(bd)  # (B, T, F, H)
            h = _act_cl(self.depth_act, h, slope_d).view(-1, hch)  # (B*T*F, H)
        h = torch.addmm(b2, h, w2).view(b, t, f, half)  # (B, T, F, C/2)
        h, tra_state = self.tra.infer_cl(h, None if state is None else state[1:])
        return torch.stack([h, x2], dim=-1).view(b, t, f, c), [cache, *tra_state]  # (B, T, F, C/2, 2)

    def _forward_fast(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Same function: SFE folded into the first point conv, transposed convs as convs, and the
        depthwise conv with a fast backward."""
        x1, x2 = torch.chunk(x, 2, dim=1)  # 2 x (B, C/2, T, F)
        h = _act(self.point_act, self.point_bn1(_sfe_pointwise(x1, self.point_conv1)))  # (B, H, T, F)
        if state is None:
            h = F.pad(h, (0, 0, self.pad_size, 0))  # (B, H, pad + T, F)
        else:
            h = torch.cat([state[0], h], dim=2)  # (B, H, pad + T, F)
        cache = h[:, :, h.shape[2] - self.pad_size:]  # (B, H, pad, F)
        dilation = self.depth_conv.dilation[0]
        h = _DepthwiseConv.apply(h, _conv_weight(self.depth_conv), self.depth_conv.bias,
                                 dilation)  # (B, H, T, F)
        h = _act(self.depth_act, self.depth_bn(h))  # (B, H, T, F)
        h = self.point_bn2(_pointwise(h, self.point_conv2))  # (B, C/2, T, F)
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
        if _inference_ok(self, x):
            return self.forward_fused(x, state)
        if _use_fast(x):
            y, new_state = self.forward_time_major(x.transpose(0, 1), state)  # (L, B, dirs * hidden)
            return y.transpose(0, 1), new_state  # (B, L, dirs * hidden)
        x1, x2 = torch.chunk(x, 2, dim=-1)  # 2 x (B, L, in/2)
        if state is None:
            h1 = h2 = None
        else:
            h1, h2 = (h.contiguous() for h in torch.chunk(state[0], 2, dim=-1))  # 2 x (dirs, B, hidden/2)
        y1, h1 = self.rnn1(x1, h1)  # (B, L, dirs * hidden/2), (dirs, B, hidden/2)
        y2, h2 = self.rnn2(x2, h2)
        return torch.cat([y1, y2], dim=-1), [torch.cat([h1, h2], dim=-1)]

    def fused_weights(self) -> list[torch.Tensor]:
        """Both groups and both directions as one unidirectional ``nn.GRU`` (weights list
        [w_ih, w_hh, b_ih, b_hh]) over the input ``[x[t], x[L-1-t]]``: hidden units ordered
        (direction, group, unit), block diagonal per gate. Cached until a parameter changes."""
        def build() -> list[torch.Tensor]:
            dirs = ["_l0", "_l0_reverse"] if self.bidirectional else ["_l0"]
            rnns = (self.rnn1, self.rnn2)
            per_dir = {name: [_gates_block_diag([getattr(r, name + d) for r in rnns]) for d in dirs]
                       for name in ("weight_ih", "weight_hh")}  # dirs x (3 hidden, in) / (3 hidden, hidden)
            bias = {name: [_gates_cat([getattr(r, name + d) for r in rnns]) for d in dirs]
                    for name in ("bias_ih", "bias_hh")}  # dirs x (3 hidden,)
            weights = [_gates_block_diag(per_dir["weight_ih"]), _gates_block_diag(per_dir["weight_hh"]),
                       _gates_cat(bias["bias_ih"]), _gates_cat(bias["bias_hh"])]
            return [w.contiguous() for w in weights]
        return _cached(self, build)

    def forward_fused(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Inference form of :meth:`forward` (same function, no autograd): one native GRU call
        for both groups and both directions. The backward direction reads the input reversed,
        so one left-to-right recurrence computes both."""
        b, steps, _ = x.shape
        dirs = 2 if self.bidirectional else 1
        hg = self.hidden_size // 2  # units per group and direction
        if self.bidirectional:
            x = torch.cat([x, x.flip(1)], dim=-1)  # (B, L, 2 input): [x[t], x[L-1-t]]
        if state is None:
            h0 = x.new_zeros(1, b, dirs * self.hidden_size)  # (1, B, dirs * hidden)
        else:
            h0 = state[0].transpose(0, 1).reshape(1, b, dirs * self.hidden_size)  # (1, B, dirs * hidden)
        y, h_n = _merged_gru(x, h0, self.fused_weights(), batch_first=True)
        # y (B, L, dirs * hidden), h_n (1, B, dirs * hidden): units (direction, group, unit)
        h_n = h_n.view(b, dirs, self.hidden_size).transpose(0, 1)  # (dirs, B, hidden)
        if not self.bidirectional:
            return y, [h_n]
        y = y.view(b, steps, 2, 2, hg)  # (B, L, direction, group, unit)
        y = torch.stack([y[:, :, 0], y[:, :, 1].flip(1)], dim=3)  # (B, L, group, direction, unit)
        return y.reshape(b, steps, 4 * hg), [h_n]  # (B, L, group * direction * unit)

    def direction_weights(self, reverse: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One direction of both groups as a single GRU with block-diagonal weights.

        Returns (w_ih (3 * hidden, input), w_hh (3 * hidden, hidden), input bias
        incl. b_hh's r and z parts (3 * hidden,), b_hn (hidden,)), hidden units
        ordered [group 1, group 2]. Rebuilt at every call from the groups'
        parameters, so gradients flow back to them.
        """
        sfx = "_l0_reverse" if reverse else "_l0"
        rnns = (self.rnn1, self.rnn2)
        w_ih = _gates_block_diag([getattr(r, "weight_ih" + sfx) for r in rnns])  # (3 hidden, input)
        w_hh = _gates_block_diag([getattr(r, "weight_hh" + sfx) for r in rnns])  # (3 hidden, hidden)
        b_ih = _gates_cat([getattr(r, "bias_ih" + sfx) for r in rnns])  # (3 hidden,)
        b_hh = _gates_cat([getattr(r, "bias_hh" + sfx) for r in rnns])  # (3 hidden,)
        b_gi, b_hn = _gru_gi_bias(b_ih, b_hh)
        return w_ih, w_hh, b_gi, b_hn

    def scan_channel_major(self, x: torch.Tensor, state: State | None = None
                           ) -> tuple[list[torch.Tensor], State]:
        """Fast path core: x (input_size, L, N) channel-major -> per direction (hidden, L, N)
        with units [group 1, group 2], and the state [(dirs, N, hidden)]."""
        c, steps, n = x.shape
        flat = x.reshape(c, steps * n)  # (C, L*N)
        ys, h_n = [], []
        for d in range(2 if self.bidirectional else 1):
            w_ih, w_hh, b_gi, b_hn = self.direction_weights(reverse=d == 1)
            gi = torch.addmm(b_gi.unsqueeze(1), w_ih, flat).view(-1, steps, n)  # (3 hidden, L, N)
            h0 = x.new_zeros(self.hidden_size, n) if state is None else state[0][d].t()  # (hidden, N)
            y = gru_scan(gi.transpose(0, 1), h0, w_hh, b_hn, reverse=d == 1)  # (hidden, L, N)
            ys.append(y)
            h_n.append((y[:, 0] if d == 1 else y[:, -1]).t())  # (N, hidden)
        return ys, [torch.stack(h_n)]  # [(dirs, N, hidden)]

    def forward_time_major(self, x: torch.Tensor, state: State | None = None
                           ) -> tuple[torch.Tensor, State]:
        """Fast path on time-major data: x (L, N, input_size) -> y (L, N, dirs * hidden), state."""
        ys, new_state = self.scan_channel_major(x.permute(2, 0, 1), state)  # dirs x (hidden, L, N)
        hg = self.hidden_size // 2
        steps, n = x.shape[0], x.shape[1]
        y = torch.stack([v.view(2, hg, steps, n) for v in ys], dim=1)  # (group, dir, hg, L, N)
        return y.view(-1, steps, n).permute(1, 2, 0), new_state  # (L, N, dirs * hidden)


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

    def inference_weights(self) -> tuple[torch.Tensor, ...]:
        """Cached operands: intra scan (w4 (2C, 4H), b4, w_hh_t) over [x[f], x[F-1-f]], intra fc
        split by direction (forward rows, backward rows: (H, C) each, scan unit order) + bias,
        inter scan (w4 (C, 4C), b4, w_hh_t), inter fc transposed (C, C) + bias."""
        def build() -> tuple[torch.Tensor, ...]:
            intra = _gru_scan_weights(*self.intra_rnn.fused_weights())
            hg = self.intra_rnn.hidden_size // 2  # units per group and direction
            c = self.channels
            w_fc = self.intra_fc.weight.view(c, 2, 2, hg)  # (C_out, group, direction, unit)
            w_fc = w_fc.permute(2, 1, 3, 0).reshape(2, 2 * hg, c)  # (direction, group * unit, C_out)
            zeros = w_fc.new_zeros(2 * hg, c)
            fc_fwd = torch.cat([w_fc[0], zeros])  # (H, C): scan units (direction, group, unit)
            fc_bwd = torch.cat([zeros, w_fc[1]])  # (H, C)
            inter = _gru_scan_weights(*self.inter_rnn.fused_weights())
            return (*intra, fc_fwd, fc_bwd, self.intra_fc.bias, *inter,
                    self.inter_fc.weight.t().contiguous(), self.inter_fc.bias)
        return _cached(self, build)

    def infer_cl(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Inference path on channels-last data: x (B, T, F, C) -> (B, T, F, C), state.

        Intra: both directions and both groups as one scan over frequency whose backward
        half reads the bins in reverse; inter: both groups as one scan over time."""
        (w4, b4, whh, fc_fwd, fc_bwd, fc_b, w4_t, b4_t, whh_t, fc_t, fc_tb) = self.inference_weights()
        b, t, f, c = x.shape
        n = b * t
        hid = whh.shape[0]
        xs = x.reshape(n, f, c).transpose(0, 1)  # (F, N, C)
        xx = torch.cat([xs, xs.flip(0)], dim=-1)  # (F, N, 2C): [x[f], x[F-1-f]]
        plan = _scan_plan(f, n, hid, x)  # the outputs are consumed below, before any other scan
        torch.addmm(b4, xx.view(f * n, 2 * c), w4, out=plan.gi.view(f * n, 4 * hid))  # (F*N, 4H)
        y = plan.run(plan.h0, whh).view(f * n, hid)  # (F*N, H)
        back = torch.addmm(fc_b, y, fc_bwd).view(f, n, c).flip(0)  # (F, N, C): backward half + bias
        intra = torch.addmm(back.view(f * n, c), y, fc_fwd).view(f, n, c)  # (F, N, C)
        intra = F.layer_norm(intra.transpose(0, 1), (f, c), self.intra_ln.weight, self.intra_ln.bias,
                             self.intra_ln.eps)  # (N, F, C)
        x = x + intra.view(b, t, f, c)  # (B, T, F, C)
        hid_t = whh_t.shape[0]
        xt = x.transpose(0, 1).reshape(t * b * f, c)  # (T*B*F, C)
        h0 = x.new_zeros(b * f, hid_t) if state is None else state[0][0]  # (B*F, H)
        if t > _LONG_SCAN:
            y = _merged_gru(xt.view(t, b * f, c), h0.unsqueeze(0), self.inter_rnn.fused_weights(),
                            batch_first=False)[0]  # (T, B*F, H)
        else:
            gi = torch.addmm(b4_t, xt, w4_t).view(t, b * f, 4 * hid_t)  # (T, B*F, 4H)
            y = _gru_scan_infer(gi, h0, whh_t)  # (T, B*F, H)
        inter = torch.addmm(fc_tb, y.view(-1, hid_t), fc_t).view(t, b, f, c)  # (T, B, F, C)
        inter = F.layer_norm(inter.transpose(0, 1), (f, c), self.inter_ln.weight, self.inter_ln.bias,
                             self.inter_ln.eps)  # (B, T, F, C)
        return x + inter, [y[t - 1].unsqueeze(0)]  # (B, T, F, C), [(1, B*F, H)]

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if _inference_ok(self, x):
            y, new_state = self.infer_cl(_to_cl(x), state)  # (B, T, F, C)
            return _from_cl(y), new_state  # (B, C, T, F)
        if _use_fast(x) and not _use_inference(x):
            return self._forward_fast(x, state)
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

    def _forward_fast(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Same function in layouts that suit each step: the scans run channel-major
        ((C, L, N): their inputs and outputs feed the Linear layers as plain matmuls),
        LayerNorm runs on (..., C, F) data."""
        b, c, t, f = x.shape
        xi = x.permute(1, 3, 0, 2).contiguous()  # (C, F, B, T)
        ys, _ = self.intra_rnn.scan_channel_major(xi.view(c, f, b * t))  # 2 x (C/2, F, B*T)
        hg = c // 4  # units per group and direction
        w_fc = self.intra_fc.weight.view(c, 2, 2, hg)  # (C_out, group, dir, hg)
        intra = torch.addmm(self.intra_fc.bias.unsqueeze(1), w_fc[:, :, 0].reshape(c, 2 * hg),
                            ys[0].view(2 * hg, -1))  # (C, F*B*T): forward units
        intra = intra.addmm_(w_fc[:, :, 1].reshape(c, 2 * hg), ys[1].view(2 * hg, -1))  # + backward units
        intra = intra.view(c * f, b * t).t().reshape(b, t, c, f)  # (B, T, C, F)
        intra = F.layer_norm(intra, (c, f), self.intra_ln.weight.t(), self.intra_ln.bias.t(),
                             self.intra_ln.eps)  # (B, T, C, F)
        x1 = intra + x.permute(0, 2, 1, 3)  # (B, T, C, F)
        xt = x1.permute(2, 1, 0, 3).contiguous()  # (C, T, B, F)
        ys, new_state = self.inter_rnn.scan_channel_major(xt.view(c, t, b * f), state)  # (C, T, B*F)
        inter = torch.addmm(self.inter_fc.bias.unsqueeze(1), self.inter_fc.weight,
                            ys[0].view(c, -1)).view(c, t, b, f)  # (C, T, B, F)
        inter = F.layer_norm(inter.permute(1, 2, 0, 3), (c, f), self.inter_ln.weight.t(),
                             self.inter_ln.bias.t(), self.inter_ln.eps)  # (T, B, C, F)
        out = inter + x1.transpose(0, 1)  # (T, B, C, F)
        return out.permute(1, 2, 0, 3).contiguous(), new_state  # (B, C, T, F)


def _band_taps(width: int, like: torch.Tensor) -> torch.Tensor:
    """A (1, 3) conv inside a band of ``width`` bins (zero outside the band) as shift matrices
    (3, W_out, W_in): entry (j, o, i) is 1 where input bin i = o + j - 1 (``like``'s dtype/device)."""
    pos = torch.arange(width, device=like.device)  # (W,)
    tap = torch.arange(3, device=like.device).view(3, 1, 1) - 1  # (3, 1, 1)
    return (pos.view(1, 1, width) == pos.view(1, width, 1) + tap).to(like.dtype)  # (3, W_out, W_in)


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

    def inference_weights(self, width: int) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Cached per-group dense maps with BatchNorm folded in: (G, k W C_in, k W C_out) over
        channels-last band data (band, bin, channel) of ``width`` bins per band, the bias
        (G, 1, k W C_out), PReLU slope."""
        def build() -> tuple[torch.Tensor, torch.Tensor, float | None]:
            w, g, n, co = self.conv.weight, self.conv.groups, self.bands, self.out_channels
            k = n // g  # bands per group
            ci = w.shape[1] // k
            scale, shift = _bn_affine(self.bn)  # (N C_out,): channel = band * C_out + out
            kern = w.view(g, k, co, k, ci, 3) * scale.view(g, k, co, 1, 1, 1)  # (G, k_o, C_out, k_i, C_in, 3)
            shift_m = _band_taps(width, w)  # (3, W_out, W_in)
            # (G, k_i, W_in, C_in, k_o, W_out, C_out)
            mat = torch.einsum("gaobcj,jvw->gbwcavo", kern, shift_m)
            mat = mat.reshape(g, k * width * ci, k * width * co)  # (G, k W C_in, k W C_out)
            bias = self.conv.bias * scale + shift  # (N C_out,)
            bias = bias.view(g, k, 1, co).expand(g, k, width, co).reshape(g, 1, k * width * co)
            return mat.contiguous(), bias, _slope(self.act)  # bias (G, 1, k W C_out)
        return _cached(self, build, key=width)

    def infer_cl(self, x: torch.Tensor) -> torch.Tensor:
        """Inference path on channels-last data: (B, T, F, C_in) -> (B, T, F, C_out)."""
        b, t, f, c = x.shape
        g = self.conv.groups
        mat, bias, slope = self.inference_weights(f // self.bands)
        xg = x.reshape(b * t, g, f * c // g).transpose(0, 1)  # (G, B*T, k W C_in)
        y = torch.baddbmm(bias, xg, mat)  # (G, B*T, k W C_out)
        y = y.transpose(0, 1).reshape(b, t, f, self.out_channels)  # (B, T, F, C_out)
        return _act_cl(self.act, y, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inference_ok(self, x):
            return _from_cl(self.infer_cl(_to_cl(x)))  # (B, C_out, T, F)
        if _use_fast(x):
            return self._forward_fast(x)
        b, c, t, f = x.shape
        n = self.bands
        w = f // n
        xb = x.reshape(b, c, t, n, w).permute(0, 3, 1, 2, 4).reshape(b, n * c, t, w)  # (B, N*C, T, W)
        y = self.act(self.bn(self.conv(xb)))  # (B, N*C_out, T, W)
        y = y.reshape(b, n, self.out_channels, t, w).permute(0, 2, 3, 1, 4)  # (B, C_out, T, N, W)
        return y.reshape(b, self.out_channels, t, f)  # (B, C_out, T, F)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Same function as one batched matmul per group.

        Inside a group the (1, 3) conv over a band's W bins is a dense banded
        (Toeplitz) map from (bands/group, C_in, W) to (bands/group, C_out, W);
        BatchNorm then runs on the (channel, W * B * T) layout the matmul yields.
        """
        b, c, t, f = x.shape
        n, g = self.bands, self.conv.groups
        k, w = n // g, f // n  # bands per group, bins per band
        co = self.out_channels
        xg = x.view(b, c, t, g, k, w).permute(3, 4, 1, 5, 0, 2)  # (G, k, C, W, B, T)
        xg = xg.reshape(g, k * c * w, b * t)  # (G, k C W, B T)
        shift = _band_taps(w, x)  # (3, W_out, W_in)
        kern = self.conv.weight.view(g, k * co, k * c, 3)  # (G, k C_out, k C_in, 3)
        mat = torch.einsum("goij,jab->goaib", kern, shift)  # (G, k C_out, W_out, k C_in, W_in)
        mat = mat.reshape(g, k * co * w, k * c * w)  # (G, k C_out W, k C_in W)
        bias = self.conv.bias.view(g, k * co, 1).expand(g, k * co, w)  # (G, k C_out, W)
        bias = bias.reshape(g, k * co * w, 1)  # (G, k C_out W, 1)
        y = torch.baddbmm(bias, mat, xg)  # (G, k C_out W, B T)
        y = self.bn(y.view(1, n * co, w, b * t))  # (1, N C_out, W, B T): BN channel = band * C_out + out
        y = y.view(n, co, w, b, t).permute(3, 1, 4, 0, 2).reshape(b, co, t, f)  # (B, C_out, T, F)
        return _act(self.act, y)  # elementwise: applied in the output layout, contiguous both ways


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

    def inference_weights(self, width: int) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Cached (weight (C + W C_f, C), bias (C,), PReLU slope) with BatchNorm folded in, acting
        on [deep channels, front (bin in band, channel)]: the band mean folded into the weight."""
        def build() -> tuple[torch.Tensor, torch.Tensor, float | None]:
            scale, shift = _bn_affine(self.bn)
            w = self.conv.weight.flatten(1) * scale.unsqueeze(1)  # (C, C + C_f)
            c = w.shape[0]
            front = (w[:, c:] / width).unsqueeze(1).expand(c, width, w.shape[1] - c)  # (C, W, C_f)
            w_all = torch.cat([w[:, :c], front.reshape(c, -1)], dim=1)  # (C, C + W C_f)
            return w_all.t().contiguous(), self.conv.bias * scale + shift, _slope(self.act)
        return _cached(self, build, key=width)

    def infer_cl(self, deep: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
        """Inference path on channels-last data: deep (B, T, N, C), front (B, T, F, C_f)
        -> (B, T, N, C)."""
        b, t, n, c = deep.shape
        width = front.shape[2] // n
        w, bias, slope = self.inference_weights(width)
        both = torch.cat([deep, front.reshape(b, t, n, -1)], dim=-1)  # (B, T, N, C + W C_f)
        y = torch.addmm(bias, both.view(-1, both.shape[-1]), w)  # (B*T*N, C)
        return _act_cl(self.act, y.view(b, t, n, c), slope)  # (B, T, N, C)

    def forward(self, deep: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
        if _inference_ok(self, deep):
            return _from_cl(self.infer_cl(_to_cl(deep), _to_cl(front)))  # (B, C, T, N)
        b, c, t, f = front.shape
        n = deep.shape[-1]
        pooled = front.reshape(b, c, t, n, f // n).mean(dim=-1)  # (B, C_f, T, N)
        if _use_fast(deep):
            both = torch.cat([deep, pooled], dim=1)  # (B, C + C_f, T, N)
            return _act(self.act, self.bn(_pointwise(both, self.conv)))  # (B, C, T, N)
        return self.act(self.bn(self.conv(torch.cat([deep, pooled], dim=1))))  # (B, C, T, N)


class ComplexMask(nn.Module):
    """Complex ratio mask: S = M * X with complex multiplication, on (B, 2, T, F) tensors."""

    def forward(self, mask: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        s_real = spec[:, 0] * mask[:, 0] - spec[:, 1] * mask[:, 1]  # (B, T, F)
        s_imag = spec[:, 1] * mask[:, 0] + spec[:, 0] * mask[:, 1]  # (B, T, F)
        return torch.stack([s_real, s_imag], dim=1)  # (B, 2, T, F)
