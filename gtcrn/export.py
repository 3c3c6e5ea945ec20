"""ONNX export of the streaming step (one STFT frame in, one enhanced frame out, plus the state).

Graph interface (batch 1, float32)::

    inputs : frame (1, 257, 1, 2)          one STFT frame, real/imag (gtcrn.stft framing)
             <state names> ...             the model state, shapes of ``model.init_state(1)``
    outputs: enhanced_frame (1, 257, 1, 2)
             <state name>_out ...          the new state: feed it back as the next inputs

State names follow the model's layout: ``enc{i}_conv_cache``/``enc{i}_tra_h`` for the
encoder's GTConvBlocks, ``dpgrnn{i}_inter_h``, ``dec{i}_conv_cache``/``dec{i}_tra_h``
(``state_{i}`` if the layout is not recognised). Zeros are the state before the first
frame, exactly as ``model.init_state``. The model's metadata (``metadata_props``) records
the STFT parameters and the state names in order.

Two graph builders:

* ``optimize=True`` (default) builds a streaming-specialised graph directly from the
  model's weights (the torch model stays the single source; nothing is trained or
  converted persistently): BatchNorm folded into the (transposed) convolutions; the
  fixed ERB analysis matrix, its identity bins and the front SFE merged into one Gemm;
  each GTConvBlock's SFE folded into its first 1x1 conv; the stride-1 transposed convs
  of the decoder rewritten as convolutions; the dilated causal conv reading only its
  taps; each grouped GRU pair (GRNN) merged into one GRU with block-diagonal weights,
  the bidirectional intra-frame GRNN into ONE forward GRU (the backward half reads the
  bins reversed); PReLU with one slope as LeakyRelu (fused into the Conv by
  onnxruntime); the band stem/head as one batched MatMul; band re-layouts as a single
  Gather; no shape arithmetic at run time. About 170 nodes after onnxruntime's own
  optimisations, against about 375 for the generic export and 434 for the official
  streaming model; 2-3x faster per frame than the latter (``gtcrn benchmark``).
* ``optimize=False`` traces ``model.step`` with ``torch.onnx.export`` (any architecture).

The optimised graph supports the GTCRN family as built by :class:`gtcrn.GTCRN` (both
encoder flavours); for anything else it falls back to the generic export. When
onnxruntime is installed, :func:`export_onnx` checks the exported graph against
``model.step`` on random frames (``verify=True``) and raises :class:`ExportError` on a
mismatch larger than ``1e-4``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .modules import DPGRNN, SFE, TRA, BandStem, ConvBlock, GTConvBlock, SkipFusion
from .stft import HOP, N_FFT, N_FREQS, SAMPLE_RATE

DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The export failed or the exported graph does not reproduce the torch model."""


class _Unsupported(Exception):
    """The optimised builder does not know this architecture (use the generic export)."""


# ---- state naming -------------------------------------------------------------------------------

def state_names(model: nn.Module) -> list[str]:
    """Meaningful names for ``model.init_state(1)``'s tensors, in order."""
    n_state = len(model.init_state(1))
    names: list[str] = []
    try:
        enc = [b for b in model.encoder.en_convs if isinstance(b, GTConvBlock)]
        dec = [b for b in model.decoder.de_convs if isinstance(b, GTConvBlock)]
        for i in range(len(enc)):
            names += [f"enc{i}_conv_cache", f"enc{i}_tra_h"]
        names += [f"dpgrnn{i}_inter_h" for i in range(len(model.dpgrnn))]
        for i in range(len(dec)):
            names += [f"dec{i}_conv_cache", f"dec{i}_tra_h"]
    except AttributeError:
        names = []
    if len(names) != n_state:
        names = [f"state_{i}" for i in range(n_state)]
    return names


# ---- generic export (torch.onnx tracing of model.step) -----------------------------------------

class _StepWrapper(nn.Module):
    """``(frame, *state) -> (enhanced_frame, *new_state)`` around ``model.step``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, new_state = self.model.step(frame, list(state))  # (1, 257, 1, 2)
        return (out, *new_state)


def _export_generic(model: nn.Module, path: Path, opset: int, names: list[str]) -> None:
    frame = torch.zeros(1, N_FREQS, 1, 2)
    state = model.init_state(1, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _StepWrapper(model).eval(), (frame, *state), str(path), dynamo=False, opset_version=opset,
            do_constant_folding=True, input_names=["frame", *names],
            output_names=["enhanced_frame", *[n + "_out" for n in names]],
        )


# ---- optimised builder ----------------------------------------------------------------------------

def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class _Graph:
    """A tiny ONNX graph builder: float32 initialisers, auto-named nodes."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value: np.ndarray | list, hint: str = "c", dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, value: list[int] | np.ndarray, hint: str = "i") -> str:
        return self.const(np.asarray(value), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           **attrs: Any) -> Any:
        from onnx import helper

        names = outputs if isinstance(outputs, list) else [self._name(hint or op_type.lower())
                                                           for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self._name("n_" + op_type),
                                           **attrs))
        return names[0] if len(names) == 1 else names

    # -- helpers ---------------------------------------------------------------------------------

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape, "shape")])

    def reduce_sum_square(self, x: str, axis: int) -> str:
        if self.opset >= 18:
            return self.op("ReduceSumSquare", [x, self.ints([axis], "axes")], keepdims=1)
        return self.op("ReduceSumSquare", [x], axes=[axis], keepdims=1)

    def act(self, x: str, module: nn.Module) -> str:
        if isinstance(module, nn.Tanh):
            return self.op("Tanh", [x])
        if isinstance(module, nn.PReLU):
            slope = _np(module.weight)
            if slope.size == 1:
                return self.op("LeakyRelu", [x], alpha=float(slope.reshape(-1)[0]))
            return self.op("PRelu", [x, self.const(slope.reshape(-1, 1))])
        if isinstance(module, nn.Identity):
            return x
        raise _Unsupported(f"activation {type(module).__name__}")


def _bn_scale_shift(bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = x * scale + shift (per channel)."""
    if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats or bn.running_var is None:
        raise _Unsupported("BatchNorm without running statistics")
    scale = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps) if bn.affine else \
        1.0 / np.sqrt(_np(bn.running_var) + bn.eps)
    shift = (_np(bn.bias) if bn.affine else 0.0) - _np(bn.running_mean) * scale
    return scale, shift


def _conv_as_conv_weight(conv: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """A stride-1 Conv2d or ConvTranspose2d as a Conv2d weight (out, in/groups, kh, kw) and bias."""
    w = _np(conv.weight)
    b = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
    if isinstance(conv, nn.ConvTranspose2d):
        if tuple(conv.stride) != (1, 1) or any(conv.output_padding):
            raise _Unsupported("strided transposed conv")
        g = conv.groups
        cin, cout_g, kh, kw = w.shape
        w = w.reshape(g, cin // g, cout_g, kh, kw).transpose(0, 2, 1, 3, 4)  # (g, out/g, in/g, kh, kw)
        w = w.reshape(g * cout_g, cin // g, kh, kw)[:, :, ::-1, ::-1]  # flipped kernel (out, in/g, kh, kw)
    elif not isinstance(conv, nn.Conv2d):
        raise _Unsupported(type(conv).__name__)
    return np.ascontiguousarray(w), b


def _transposed_padding_as_conv(conv: nn.ConvTranspose2d) -> tuple[int, int]:
    """Padding of the Conv equivalent to a stride-1 ConvTranspose2d: dilation * (k - 1) - padding."""
    pairs = zip(conv.dilation, conv.kernel_size, conv.padding, strict=True)
    return tuple(d * (k - 1) - p for d, k, p in pairs)


def _fold_bn(w: np.ndarray, b: np.ndarray, bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight (out, ...) + bias followed by BatchNorm -> one weight and bias."""
    scale, shift = _bn_scale_shift(bn)
    return w * scale.reshape(-1, *([1] * (w.ndim - 1))), b * scale + shift


def _gru_onnx(gru: nn.GRU, suffix: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction of a torch GRU as ONNX (W (3H, I), R (3H, H), B (6H,)) in z, r, h gate order."""
    if gru.num_layers != 1 or not gru.bias:
        raise _Unsupported("GRU layout")

    def reorder(a: np.ndarray) -> np.ndarray:
        r, z, n = np.split(a, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)

    w = reorder(_np(getattr(gru, "weight_ih_l0" + suffix)))
    r = reorder(_np(getattr(gru, "weight_hh_l0" + suffix)))
    b = np.concatenate([reorder(_np(getattr(gru, "bias_ih_l0" + suffix))),
                        reorder(_np(getattr(gru, "bias_hh_l0" + suffix)))])
    return w, r, b


def _block_diag(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent ONNX GRUs (W, R, B) on consecutive input slices as one GRU.

    Per gate the weights are block diagonal and the hidden state is the GRUs' hidden
    states concatenated; exact, because every gate of one part sees only its own
    inputs and hidden units.
    """
    hs = [r.shape[1] for _, r, _ in parts]
    ins = [w.shape[1] for w, _, _ in parts]
    h_tot, i_tot = sum(hs), sum(ins)
    w = np.zeros((3, h_tot, i_tot))
    r = np.zeros((3, h_tot, h_tot))
    b = np.zeros((2, 3, h_tot))
    ho = io = 0
    for (wi, ri, bi), h, i in zip(parts, hs, ins, strict=True):
        w[:, ho:ho + h, io:io + i] = wi.reshape(3, h, i)
        r[:, ho:ho + h, ho:ho + h] = ri.reshape(3, h, h)
        b[:, :, ho:ho + h] = bi.reshape(2, 3, h)
        ho, io = ho + h, io + i
    return w.reshape(3 * h_tot, i_tot), r.reshape(3 * h_tot, h_tot), b.reshape(6 * h_tot)


def _block_diag_gru(grus: list[nn.GRU], direction: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction of GRUs on consecutive input slices (a GRNN's groups) as one GRU."""
    return _block_diag([_gru_onnx(g, "_reverse" if direction else "") for g in grus])


class _Builder:
    """Builds the single-frame streaming graph of a GTCRN model from its modules' weights.

    Feature maps are kept as (1, C, W) (frequency-only convolutions as 1-D Conv), the
    dual-path RNNs work on (W, C); only the dilated time convolutions see (1, C, T, W).
    """

    def __init__(self, model: nn.Module, opset: int) -> None:
        if opset < 17:
            raise _Unsupported("the optimised graph needs opset >= 17 (LayerNormalization)")
        self.m = model
        self.g = _Graph(opset)
        self.names = state_names(model)
        self.shapes = [tuple(t.shape) for t in model.init_state(1, device="cpu")]

    # -- blocks ----------------------------------------------------------------------------------

    def conv1d(self, x: str, conv: nn.Module, bn: nn.Module | None) -> str:
        """A (1, k) Conv2d (any stride) or ConvTranspose2d, BN folded, on (1, C, W)."""
        g = self.g
        if conv.kernel_size[0] != 1 or conv.stride[0] != 1 or conv.padding[0] != 0:
            raise _Unsupported("conv with a time extent")
        w = _np(conv.weight)[:, :, 0, :]  # (out, in/g, k) or (in, out/g, k) if transposed
        b = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
        attrs = dict(kernel_shape=[conv.kernel_size[1]], strides=[conv.stride[1]],
                     pads=[conv.padding[1]] * 2, dilations=[conv.dilation[1]], group=conv.groups)
        if isinstance(conv, nn.ConvTranspose2d):
            scale, shift = _bn_scale_shift(bn) if bn is not None else (np.ones_like(b), np.zeros_like(b))
            cin, cout_g = w.shape[:2]
            out_idx = (np.arange(cin) // (cin // conv.groups))[:, None] * cout_g + np.arange(cout_g)[None]
            w = w * scale[out_idx][:, :, None]  # (in, out/groups, k)
            return g.op("ConvTranspose", [x, g.const(w, "w"), g.const(b * scale + shift, "b")],
                        output_padding=[conv.output_padding[1]], **attrs)
        if not isinstance(conv, nn.Conv2d):
            raise _Unsupported(type(conv).__name__)
        if bn is not None:
            w, b = _fold_bn(w, b, bn)
        return g.op("Conv", [x, g.const(w, "w"), g.const(b, "b")], **attrs)

    def conv_block(self, block: ConvBlock, x: str) -> str:
        """ConvBlock: (transposed) conv + folded BN + activation."""
        return self.g.act(self.conv1d(x, block.conv, block.bn), block.act)

    def tra(self, tra: TRA, x: str, h_in: str, width: int) -> tuple[str, str]:
        """Temporal recurrent attention on x (1, C, W); the 1/W of the mean goes into the GRU."""
        g = self.g
        c = tra.att_fc.out_features
        energy = g.reshape(g.reduce_sum_square(x, 2), [1, 1, c])  # (seq 1, batch 1, C)
        w, r, b = _gru_onnx(tra.att_gru)
        hidden = tra.att_gru.hidden_size
        _, h_out = g.op("GRU", [energy, g.const(w[None] / width, "W"), g.const(r[None], "R"),
                                g.const(b[None], "B"), "", h_in],
                        outputs=[g._name("tra_y"), g._name("tra_h")], hidden_size=hidden,
                        linear_before_reset=1)
        # att_fc as a Conv whose kernel spans the hidden state (1, 1, 2C) -> (1, C, 1): no reshape.
        fc = tra.att_fc
        att = g.op("Conv", [h_out, g.const(_np(fc.weight)[:, None, :]), g.const(_np(fc.bias))],
                   kernel_shape=[hidden])  # (1, C, 1)
        return g.op("Mul", [x, g.op("Sigmoid", [att])]), h_out

    def gtconv(self, block: GTConvBlock, x: str, channels: int, width: int, cache_in: str, h_in: str
               ) -> tuple[str, str, str]:
        """GTConvBlock on x (1, C, W) with its conv cache (1, H, pad, W) and TRA state."""
        g = self.g
        half = channels // 2
        if not isinstance(block.sfe, SFE) or block.sfe.kernel_size != 3:
            raise _Unsupported("GTConvBlock SFE")
        # SFE(3) + point conv 1 (1x1) + BN -> one (1, 3) conv over the first half (zero weights elsewhere).
        w1, b1 = _conv_as_conv_weight(block.point_conv1)  # (H, 3 * half, 1, 1)
        w1, b1 = _fold_bn(w1[:, :, 0, 0], b1, block.point_bn1)  # (H, 3 * half)
        hidden = w1.shape[0]
        wf = np.zeros((hidden, channels, 3))
        wf[:, :half, :] = w1.reshape(hidden, half, 3)
        h = g.op("Conv", [x, g.const(wf, "w"), g.const(b1, "b")], kernel_shape=[3], pads=[1, 1])
        h = g.act(h, block.point_act)  # (1, H, W)
        # Causal dilated depthwise conv over [cache, current frame].
        full = g.op("Concat", [cache_in, g.reshape(h, [1, hidden, 1, width])], axis=2)  # (1, H, pad + 1, W)
        pad = block.pad_size
        cache_out = g.op("Slice", [full, g.ints([1]), g.ints([pad + 1]), g.ints([2])])  # (1, H, pad, W)
        dconv = block.depth_conv
        wd, bd = _fold_bn(*_conv_as_conv_weight(dconv), block.depth_bn)  # (H, 1, kt, kf)
        pad_conv = _transposed_padding_as_conv(dconv) if isinstance(dconv, nn.ConvTranspose2d) \
            else tuple(dconv.padding)
        dil = dconv.dilation[0]
        kt, kf = wd.shape[2:]
        if pad_conv[0] != 0 or dconv.groups != hidden or (kt - 1) * dil != pad or dconv.dilation[1] != 1:
            raise _Unsupported("depthwise conv layout")
        # Only frames 0, d, .., (kt - 1) d of the window are used: gather them into channels
        # (h * kt + tap) and run a grouped 1-D conv over frequency.
        taps = g.op("Gather", [full, g.ints(np.arange(kt) * dil)], axis=2)  # (1, H, kt, W)
        h = g.op("Conv", [g.reshape(taps, [1, hidden * kt, width]), g.const(wd.reshape(hidden, kt, kf)),
                          g.const(bd)], kernel_shape=[kf], pads=[pad_conv[1]] * 2, group=hidden)
        h = g.act(h, block.depth_act)  # (1, H, W)
        w2, b2 = _conv_as_conv_weight(block.point_conv2)  # (half, H, 1, 1)
        w2, b2 = _fold_bn(w2[:, :, 0, :], b2, block.point_bn2)
        h = g.op("Conv", [h, g.const(w2), g.const(b2)], kernel_shape=[1])  # (1, half, W)
        h, h_out = self.tra(block.tra, h, h_in, width)
        # Channel shuffle: out[2i] = h[i], out[2i + 1] = x[half + i].
        both = g.op("Concat", [h, x], axis=1)  # (1, half + C, W)
        order = np.stack([np.arange(half), 2 * half + np.arange(half)], axis=1).reshape(-1)
        return g.op("Gather", [both, g.ints(order)], axis=1), cache_out, h_out

    def dpgrnn(self, block: DPGRNN, x2: str, x3: str | None, width: int, h_in: str) -> tuple[str, str]:
        """DPGRNN on x2 (W, C) (``x3``: the same as (W, 1, C) if at hand); returns (W, C), state."""
        g = self.g
        c = block.channels
        intra, inter = block.intra_rnn, block.inter_rnn
        if not intra.bidirectional or inter.bidirectional:
            raise _Unsupported("DPGRNN directions")
        # Intra-frame: bidirectional grouped GRU across frequency as ONE forward GRU: both groups
        # and both directions block-diagonal, the backward half reading the bins in reverse.
        grus = [intra.rnn1, intra.rnn2]
        fw, bw = _block_diag_gru(grus, 0), _block_diag_gru(grus, 1)
        w, r, b = _block_diag([fw, bw])  # hidden [fwd (group 1, 2), bwd (group 1, 2)]
        hid = w.shape[0] // 3
        rev = g.ints(np.arange(width)[::-1].copy())
        x3 = x3 if x3 is not None else g.reshape(x2, [width, 1, c])
        both = g.op("Concat", [x3, g.op("Gather", [x3, rev], axis=0)], axis=2)  # (W, 1, 2C)
        y, _ = g.op("GRU", [both, g.const(w[None], "W"), g.const(r[None], "R"), g.const(b[None], "B")],
                    outputs=2, hidden_size=hid, linear_before_reset=1)  # (W, 1, 1, hid)
        y = g.reshape(y, [width, hid])  # row t: [fwd_t, bwd_(W-1-t)]
        y = g.op("Concat", [y, g.op("Gather", [y, rev], axis=0)], axis=1)  # (W, 2 hid)
        # intra_fc reads [fwd_t (rows of y), bwd_t (rows of the reversed copy)]; torch's feature
        # order is [group, dir, unit].
        h_g = grus[0].hidden_size
        wfc_t = _np(block.intra_fc.weight).T  # (2 * 2 * h_g, C) in torch order
        wfc = np.zeros((2 * hid, c))
        for d, offset in ((0, 0), (1, hid)):  # fwd units from y, bwd units from the reversed copy
            for grp in range(2):
                src = grp * 2 * h_g + d * h_g
                dst = offset + d * 2 * h_g + grp * h_g
                wfc[dst:dst + h_g] = wfc_t[src:src + h_g]
        y = g.op("Gemm", [y, g.const(wfc), g.const(_np(block.intra_fc.bias))])  # (W, C)
        x2 = g.op("Add", [x2, self.layer_norm(block.intra_ln, y)])  # (W, C)
        # Inter-frame: causal grouped GRU across time (batch = W bins, one step), block-diagonal.
        grus = [inter.rnn1, inter.rnn2]
        w, r, b = _block_diag_gru(grus, 0)
        hid = sum(gr.hidden_size for gr in grus)
        _, h_out = g.op("GRU", [g.reshape(x2, [1, width, c]), g.const(w[None], "W"), g.const(r[None], "R"),
                                g.const(b[None], "B"), "", h_in],
                        outputs=[g._name("inter_y"), g._name("inter_h")], hidden_size=hid,
                        linear_before_reset=1)
        y = g.op("Gemm", [g.reshape(h_out, [width, hid]), g.const(_np(block.inter_fc.weight).T),
                          g.const(_np(block.inter_fc.bias))])  # (W, C)
        return g.op("Add", [x2, self.layer_norm(block.inter_ln, y)]), h_out

    def layer_norm(self, ln: nn.LayerNorm, x: str) -> str:
        return self.g.op("LayerNormalization", [x, self.g.const(_np(ln.weight)), self.g.const(_np(ln.bias))],
                         axis=0, epsilon=float(ln.eps))

    def band_conv(self, xb: str, stem: BandStem, width: int) -> str:
        """BandStem's conv + BN + activation on the band-major layout (1, bands * C_in, w).

        With one band per group this is, per band, a (C_in w) x (C_out w) matrix: one
        batched MatMul over the bands (cheaper than a 32-group Conv in onnxruntime).
        """
        g, conv = self.g, stem.conv
        n = stem.bands
        if conv.groups != n or tuple(conv.kernel_size) != (1, 3) or tuple(conv.padding) != (0, 1) \
                or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
            return g.act(self.conv1d(xb, conv, stem.bn), stem.act)
        w, b = _fold_bn(_np(conv.weight)[:, :, 0, :], _np(conv.bias), stem.bn)  # (n C_out, C_in, 3)
        cout, cin, wb = conv.out_channels // n, conv.in_channels // n, width // n
        mat = np.zeros((n, cin, wb, cout, wb))
        w = w.reshape(n, cout, cin, 3)
        for k in range(3):
            for j in range(wb):
                jj = j + k - 1
                if 0 <= jj < wb:
                    mat[:, :, jj, :, j] += w[:, :, :, k].transpose(0, 2, 1)  # (n, C_in, C_out)
        bias = np.repeat(b.reshape(n, cout, 1), wb, axis=2).reshape(n, 1, cout * wb)
        y = g.op("MatMul", [g.reshape(xb, [n, 1, cin * wb]), g.const(mat.reshape(n, cin * wb, cout * wb))])
        y = g.act(g.op("Add", [y, g.const(bias)]), stem.act)  # (n, 1, C_out w)
        return g.reshape(y, [1, n * cout, wb])

    def band_gather(self, x: str, channels: int, bands: int, width: int, to_bands: bool,
                    bins_first: bool = False) -> str:
        """Re-layout (1, C, F) <-> (1, bands * C, F / bands) (BandStem's band-major view).

        ``bins_first`` (with ``to_bands=False``): produce (F, C) instead of (1, C, F).
        """
        g = self.g
        w = width // bands
        flat = g.reshape(x, [-1])
        if to_bands:  # out[n * C + c, j] = x[c, n * w + j]
            n, c, j = np.meshgrid(np.arange(bands), np.arange(channels), np.arange(w), indexing="ij")
            idx = (c * width + n * w + j).reshape(1, bands * channels, w)
        elif bins_first:  # out[n * w + j, c] = x[n * C + c, j]
            n, j, c = np.meshgrid(np.arange(bands), np.arange(w), np.arange(channels), indexing="ij")
            idx = ((n * channels + c) * w + j).reshape(width, channels)
        else:  # out[c, n * w + j] = x[n * C + c, j]
            c, n, j = np.meshgrid(np.arange(channels), np.arange(bands), np.arange(w), indexing="ij")
            idx = ((n * channels + c) * w + j).reshape(1, channels, width)
        return g.op("Gather", [flat, g.ints(idx)], axis=0)

    # -- whole model -----------------------------------------------------------------------------

    def build(self) -> Any:
        from onnx import TensorProto, helper

        m, g = self.m, self.g
        cfg = m.config
        enc, dec = m.encoder, m.decoder
        erb = enc.erb
        if not isinstance(enc.sfe, SFE) or enc.sfe.kernel_size != 3:
            raise _Unsupported("encoder SFE")
        state_in = list(self.names)
        state_out: list[str] = []
        s = iter(state_in)

        # Front end: (1, 257, 1, 2) -> [mag, real, imag] per bin (257, 3) -> ERB + SFE(3) in one
        # matrix product: front[3c + j, f] = ERB(feature c)[f + j - 1] (zero outside), (1, 9, F).
        mag = g.op("Sqrt", [g.op("Add", [g.reduce_sum_square("frame", 3), g.const(np.float32(1e-12))])])
        feat = g.reshape(g.op("Concat", [mag, "frame"], axis=3), [N_FREQS, 3])  # (257, 3)
        low, n_bins = erb.low, erb.num_bins
        bm = np.zeros((N_FREQS, n_bins))
        bm[:low, :low] = np.eye(low)
        bm[low:, low:] = _np(erb.erb_fc.weight).T
        bm_sfe = np.zeros((N_FREQS, 3, n_bins))  # (257, j, F)
        for j in range(3):
            lo, hi = max(0, 1 - j), min(n_bins, n_bins + 1 - j)  # f with 0 <= f + j - 1 < F
            bm_sfe[:, j, lo:hi] = bm[:, lo + j - 1:hi + j - 1]
        front = g.op("Gemm", [feat, g.const(bm_sfe.reshape(N_FREQS, 3 * n_bins))], transA=1)  # (3, 3F)
        front = g.reshape(front, [1, 9, n_bins])  # (1, 9, F): channel 3c + j

        skips: list[str] = []
        width = n_bins
        stem_bands: str | None = None
        if enc.stem is not None:
            stem: BandStem = enc.stem
            xb = self.band_gather(front, 9, stem.bands, n_bins, to_bands=True)  # (1, 32 * 9, 4)
            stem_bands = self.band_conv(xb, stem, n_bins)  # (1, 32 * C_s, 4)
            x = self.band_gather(stem_bands, stem.out_channels, stem.bands, n_bins, to_bands=False)
            skips.append(x)  # (1, C_s, F)
        else:
            x = front
        channels = cfg.channels
        for block in enc.en_convs:
            if isinstance(block, GTConvBlock):
                x, cache, h = self.gtconv(block, x, channels, width, next(s), next(s))
                state_out += [cache, h]
            elif isinstance(block, ConvBlock):
                x = self.conv_block(block, x)
                width = (width + 2 * block.conv.padding[1] - block.conv.kernel_size[1]) \
                    // block.conv.stride[1] + 1
            else:
                raise _Unsupported(type(block).__name__)
            skips.append(x)
        if width != enc.width:
            raise _Unsupported("encoder width")
        if enc.fusion is not None:
            fusion: SkipFusion = enc.fusion
            pooled = g.op("AveragePool", [front], kernel_shape=[n_bins // width],
                          strides=[n_bins // width])  # (1, 9, N)
            both = g.op("Concat", [x, pooled], axis=1)  # (1, C + 9, N)
            x = g.act(self.conv1d(both, fusion.conv, fusion.bn), fusion.act)
            skips[-1] = x

        # Dual-path RNNs in the frequency-major (W, C) layout.
        x3: str | None = g.op("Transpose", [x], perm=[2, 0, 1])  # (W, 1, C)
        x2 = g.reshape(x3, [width, channels])  # (W, C)
        for rnn in m.dpgrnn:
            x2, h = self.dpgrnn(rnn, x2, x3, width, next(s))
            x3 = None
            state_out.append(h)
        x = g.op("Transpose", [x2], perm=[1, 0])  # (C, W); the next Add broadcasts it to (1, C, W)

        # Decoder.
        for i, block in enumerate(dec.de_convs):
            x = g.op("Add", [skips[-1 - i], x])  # (1, C, W)
            if isinstance(block, GTConvBlock):
                x, cache, h = self.gtconv(block, x, channels, width, next(s), next(s))
                state_out += [cache, h]
            elif isinstance(block, ConvBlock):
                x = self.conv_block(block, x)
            else:
                raise _Unsupported(type(block).__name__)
        if dec.head is not None:
            head: BandStem = dec.head
            if stem_bands is None or head.out_channels != 2:
                raise _Unsupported("decoder head")
            xb = self.band_gather(x, head.conv.in_channels // head.bands, head.bands, n_bins, to_bands=True)
            mb = self.band_conv(g.op("Add", [xb, stem_bands]), head, n_bins)  # (1, 32 * 2, 4)
            mask = self.band_gather(mb, 2, head.bands, n_bins, to_bands=False)  # (1, 2, F)
        else:
            mask = x  # (1, 2, F)
        # ERB synthesis; complex ratio mask in the frame's own layout (1, 257, 1, 2).
        bs = np.zeros((n_bins, N_FREQS))
        bs[:low, :low] = np.eye(low)
        bs[low:, low:] = _np(erb.ierb_fc.weight).T
        mask = g.op("Transpose", [g.op("MatMul", [mask, g.const(bs)])], perm=[2, 0, 1])  # (257, 1, 2)
        m_re, m_im = g.op("Split", [mask, g.ints([1, 1])], axis=2, outputs=2)  # 2 x (257, 1, 1)
        swapped = g.op("MatMul", ["frame", g.const(np.array([[0.0, 1.0], [-1.0, 0.0]]))])  # [-imag, real]
        out = g.op("Add", [g.op("Mul", ["frame", m_re]), g.op("Mul", [swapped, m_im])])  # (1, 257, 1, 2)
        g.nodes.append(helper.make_node("Identity", [out], ["enhanced_frame"], name="n_output"))
        if len(state_out) != len(state_in):
            raise _Unsupported("state layout")
        for name, produced in zip(state_in, state_out, strict=True):
            g.nodes.append(helper.make_node("Identity", [produced], [name + "_out"],
                                            name=f"n_{name}_out"))

        def vi(name: str, shape: tuple[int, ...]) -> Any:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

        frame_shape = (1, N_FREQS, 1, 2)
        shapes = list(zip(state_in, self.shapes, strict=True))
        graph = helper.make_graph(
            g.nodes, "gtcrn_step",
            [vi("frame", frame_shape)] + [vi(n, sh) for n, sh in shapes],
            [vi("enhanced_frame", frame_shape)] + [vi(n + "_out", sh) for n, sh in shapes],
            initializer=g.inits,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)],
                                 producer_name="gtcrn")


def _drop_identity_outputs(model: Any) -> Any:
    """Let the producers of the graph outputs write them directly (no trailing Identity nodes)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        src = node.input[0] if node.input else ""
        if node.op_type == "Identity" and node.output[0] in outputs and src not in inputs \
                and src not in outputs and src not in rename:
            rename[src] = node.output[0]
        else:
            keep.append(node)
    for node in keep:
        node.output[:] = [rename.get(n, n) for n in node.output]
        node.input[:] = [rename.get(n, n) for n in node.input]
    del graph.node[:]
    graph.node.extend(keep)
    return model


# ---- public API ----------------------------------------------------------------------------------

def _metadata(model: nn.Module, names: list[str], optimized: bool) -> dict[str, str]:
    config = getattr(model, "config", None)
    return {
        "gtcrn.sample_rate": str(SAMPLE_RATE),
        "gtcrn.n_fft": str(N_FFT),
        "gtcrn.hop": str(HOP),
        "gtcrn.window": "sqrt(periodic hann(512)), analysis and synthesis",
        "gtcrn.latency_samples": str(N_FFT),
        "gtcrn.state_names": json.dumps(names),
        "gtcrn.config": json.dumps(config.to_dict() if config is not None else {}),
        "gtcrn.graph": "optimized" if optimized else "generic",
    }


def build_onnx(model: nn.Module, opset: int = DEFAULT_OPSET, optimize: bool = True) -> Any:
    """The streaming-step graph as an in-memory ``onnx.ModelProto`` (see the module docstring)."""
    import tempfile

    import onnx

    model = model.eval()
    names = state_names(model)
    onnx_model = None
    optimized = False
    if optimize:
        try:
            with torch.no_grad():
                onnx_model = _drop_identity_outputs(_Builder(model, opset).build())
            optimized = True
        except (_Unsupported, AttributeError, TypeError, ValueError) as exc:
            warnings.warn(f"optimised ONNX graph not available ({exc}); using the generic export",
                          stacklevel=2)
    if onnx_model is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "step.onnx"
            _export_generic(model, path, opset, names)
            onnx_model = onnx.load(str(path))
    for key, value in _metadata(model, names, optimized).items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def verify_onnx(model: nn.Module, onnx_path: str | Path, frames: int = 50, seed: int = 0) -> float:
    """Max abs difference between onnxruntime, run frame by frame with its states fed back, and
    the torch model on the same ``frames`` random frames (every enhanced frame and the final state;
    ``model.forward_stateful`` over all frames at once equals ``model.step`` frame by frame)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()[1:]]
    gen = torch.Generator().manual_seed(seed)
    spec = torch.randn(1, N_FREQS, frames, 2, generator=gen) * 2.0  # (1, 257, T, 2)
    with torch.inference_mode():
        ref, ref_state = model.forward_stateful(spec, model.init_state(1, device="cpu"))
    feeds = {n: np.zeros(i.shape, np.float32) for n, i in zip(names, sess.get_inputs()[1:], strict=True)}
    worst = 0.0
    for t in range(frames):
        got = sess.run(None, {"frame": spec[:, :, t:t + 1].numpy(), **feeds})
        worst = max(worst, float(np.abs(got[0] - ref[:, :, t:t + 1].numpy()).max()))
        feeds = dict(zip(names, got[1:], strict=True))
    for name, s in zip(names, ref_state, strict=True):
        worst = max(worst, float(np.abs(feeds[name] - s.numpy()).max()))
    return worst


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, optimize: bool = True,
                verify: bool = True) -> Path:
    """Export ``model``'s streaming step to ``path`` (ONNX); returns the path.

    ``verify``: when onnxruntime is installed, compare the graph with ``model.step``
    on random frames and raise :class:`ExportError` if they differ by more than 1e-4.
    """
    import onnx

    path = Path(path)
    model = model.cpu().eval()
    onnx_model = build_onnx(model, opset, optimize)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    onnx.save(onnx_model, str(tmp))
    try:
        if verify:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                verify = False
        if verify:
            err = verify_onnx(model, tmp)
            if not err <= VERIFY_TOLERANCE:
                raise ExportError(f"{path}: exported graph differs from model.step by {err:.2e} "
                                  f"(> {VERIFY_TOLERANCE:g})")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
