"""ONNX export of the streaming step (one STFT frame in, one enhanced frame out, plus the state).

Graph interface (batch 1, float32), two inputs and two outputs::

    inputs : frame (1, 257, 1, 2)          one STFT frame, real/imag (gtcrn.stft framing)
             state (S,)                    the whole model state, packed (zeros before frame 0)
    outputs: enhanced_frame (1, 257, 1, 2)
             state_out (S,)                the new packed state: feed it back as the next ``state``

The packed state holds every tensor of ``model.init_state(1)`` flattened (C order) and
concatenated in that order; the graph splits it once, reshapes each part to its shape,
and concatenates the new states at the end (one tensor in and out of ``session.run``
instead of one per state: onnxruntime's per-input/output overhead is paid twice, not
~30 times). The parts are named after the model's layout: ``enc{i}_conv_cache``/``enc{i}_tra_h``
for the encoder's GTConvBlocks, ``dpgrnn{i}_inter_h``, ``dec{i}_conv_cache``/``dec{i}_tra_h``
(``state_{i}`` if the layout is not recognised). Zeros of length S are the state before the
first frame, exactly as ``model.init_state``. The model's metadata (``metadata_props``)
records the STFT parameters, ``gtcrn.state_size`` (S) and ``gtcrn.state_layout``, a JSON
list of ``{"name", "shape", "offset", "size"}`` (offsets into the packed vector), so a
deployment needs neither torch nor this package (see ``scripts/onnx_stream_example.py``;
:func:`unpack_state` does the unpacking here).

Two graph builders:

* ``optimize=True`` (default) builds a streaming-specialised graph directly from the
  model's weights (the torch model stays the single source; nothing is trained or
  converted persistently): BatchNorm folded into the (transposed) convolutions; the
  fixed ERB analysis matrix, its identity bins and the front SFE merged into one Gemm
  (official flavour); for the band stem (g32) one Gemm gives the ERB features, a zero,
  a one and SkipFusion's band-pooled SFE features, one Gather cuts each band's window
  (with the SFE neighbours) and one batched MatMul applies SFE + band conv + BN + bias;
  each GTConvBlock's SFE folded into its first 1x1 conv; the stride-1 transposed convs
  of the decoder rewritten as convolutions; the dilated causal conv as one depthwise
  conv dilated in time over [cache, frame] (feature maps are (1, C, 1, W), so the cache
  joins them without a reshape); the decoder's last strided transposed conv as its
  polyphase Conv (the head's Gather or the ERB synthesis matrix re-orders its bins);
  each grouped GRU pair (GRNN) merged into one GRU with block-diagonal weights, the
  bidirectional intra-frame GRNN into ONE forward GRU (the backward half reads the
  bins reversed); PReLU with one slope as LeakyRelu (fused into the Conv by
  onnxruntime); the band head as one batched MatMul; band re-layouts as a single
  Gather; the complex mask as [fr, fi, -fi, fr] * [mr, mr, mi, mi] summed in pairs
  (no broadcasting Mul); no shape arithmetic at run time; the packed state cut by one
  Split of its (1, S / 16, 16) view (only the conv caches reshaped). About 165-195 nodes after
  onnxruntime's own optimisations (including its NCHWc re-layouts), against about 375
  for the generic export and 434 for the official streaming model; about 2.5-3.5x
  faster per frame than the latter (``gtcrn benchmark``).
* ``optimize=False`` traces ``model.step`` with ``torch.onnx.export`` (any architecture),
  wrapped so that it has the same packed interface (``state`` in, ``state_out`` out).

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

from .extras import require
from .modules import DPGRNN, SFE, TRA, BandStem, ConvBlock, GTConvBlock, SkipFusion
from .stft import HOP, N_FFT, N_FREQS, SAMPLE_RATE

DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-4
FRAME_INPUT, STATE_INPUT = "frame", "state"
FRAME_OUTPUT, STATE_OUTPUT = "enhanced_frame", "state_out"


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


def state_layout(model: nn.Module) -> list[dict[str, Any]]:
    """Where each tensor of ``model.init_state(1)`` lives in the packed state vector, in order:
    ``{"name", "shape", "offset", "size"}`` (C-order flattening, no gaps; the last offset +
    size is the packed length S). Stored as JSON in the graph's ``gtcrn.state_layout``."""
    layout: list[dict[str, Any]] = []
    offset = 0
    for name, t in zip(state_names(model), model.init_state(1, device="cpu"), strict=True):
        size = int(t.numel())
        layout.append({"name": name, "shape": [int(d) for d in t.shape], "offset": offset, "size": size})
        offset += size
    return layout


def pack_state(state: list[torch.Tensor] | list[np.ndarray]) -> np.ndarray:
    """A model state (``model.init_state(1)``'s tensors, in order) as the packed (S,) float32 vector."""
    parts = [np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, np.float32).reshape(-1)
             for t in state]  # each (size,)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)  # (S,)


def unpack_state(packed: np.ndarray, layout: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The packed state (S,) (or (1, S)) as ``{name: array of its shape}`` by ``layout``
    (:func:`state_layout` or the JSON of the graph's ``gtcrn.state_layout``)."""
    flat = np.asarray(packed).reshape(-1)  # (S,)
    return {e["name"]: flat[e["offset"]:e["offset"] + e["size"]].reshape(e["shape"])  # (*shape)
            for e in layout}


# ---- generic export (torch.onnx tracing of model.step) -----------------------------------------

class _StepWrapper(nn.Module):
    """``(frame, state (S,)) -> (enhanced_frame, state_out (S,))`` around ``model.step``: the
    packed state is split and reshaped to ``shapes`` and the new state flattened and
    concatenated (the same interface as the optimised graph)."""

    def __init__(self, model: nn.Module, shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.model = model
        self.shapes = shapes
        self.sizes = [int(np.prod(sh)) for sh in shapes]

    def forward(self, frame: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = torch.split(state, self.sizes)  # each (size,)
        unpacked = [p.reshape(sh) for p, sh in zip(parts, self.shapes, strict=True)]  # each (*shape)
        out, new_state = self.model.step(frame, unpacked)  # (1, 257, 1, 2)
        return out, torch.cat([t.reshape(-1) for t in new_state])  # (S,)


def _export_generic(model: nn.Module, path: Path, opset: int) -> None:
    frame = torch.zeros(1, N_FREQS, 1, 2)
    shapes = [tuple(t.shape) for t in model.init_state(1, device="cpu")]
    state = torch.zeros(sum(int(np.prod(sh)) for sh in shapes))  # (S,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _StepWrapper(model, shapes).eval(), (frame, state), str(path), dynamo=False,
            opset_version=opset, do_constant_folding=True, input_names=[FRAME_INPUT, STATE_INPUT],
            output_names=[FRAME_OUTPUT, STATE_OUTPUT],
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

    Feature maps are kept as (1, C, 1, W) (frequency-only convolutions as (1, k) Conv, so
    that the conv cache joins them without a reshape), the dual-path RNNs work on (W, C);
    the band stem/head on the band-major (bands, 1, C w).
    """

    def __init__(self, model: nn.Module, opset: int) -> None:
        if opset < 17:
            raise _Unsupported("the optimised graph needs opset >= 17 (LayerNormalization)")
        self.m = model
        self.g = _Graph(opset)
        self.shapes = [tuple(t.shape) for t in model.init_state(1, device="cpu")]

    def state_row(self, sizes: list[int]) -> int:
        """Row length d of the packed state's (1, S / d, d) view: the hidden size shared by the
        3-D (GRU) states when it divides every state's size, else 1."""
        lasts = {sh[-1] for sh in self.shapes if len(sh) == 3 and sh[0] == 1}
        if len(lasts) == 1 and all(size % next(iter(lasts)) == 0 for size in sizes):
            return int(next(iter(lasts)))
        return 1

    # -- blocks ----------------------------------------------------------------------------------

    def conv1d(self, x: str, conv: nn.Module, bn: nn.Module | None) -> str:
        """A (1, k) Conv2d (any stride) or ConvTranspose2d, BN folded, on (1, C, 1, W)."""
        g = self.g
        if conv.kernel_size[0] != 1 or conv.stride[0] != 1 or conv.padding[0] != 0:
            raise _Unsupported("conv with a time extent")
        w = _np(conv.weight)  # (out, in/g, 1, k) or (in, out/g, 1, k) if transposed
        b = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
        attrs = dict(kernel_shape=[1, conv.kernel_size[1]], strides=[1, conv.stride[1]],
                     pads=[0, conv.padding[1], 0, conv.padding[1]], dilations=[1, conv.dilation[1]],
                     group=conv.groups)
        if isinstance(conv, nn.ConvTranspose2d):
            scale, shift = _bn_scale_shift(bn) if bn is not None else (np.ones_like(b), np.zeros_like(b))
            cin, cout_g = w.shape[:2]
            out_idx = (np.arange(cin) // (cin // conv.groups))[:, None] * cout_g + np.arange(cout_g)[None]
            w = w * scale[out_idx][:, :, None, None]  # (in, out/groups, 1, k)
            return g.op("ConvTranspose", [x, g.const(w, "w"), g.const(b * scale + shift, "b")],
                        output_padding=[0, conv.output_padding[1]], **attrs)
        if not isinstance(conv, nn.Conv2d):
            raise _Unsupported(type(conv).__name__)
        if bn is not None:
            w, b = _fold_bn(w, b, bn)
        return g.op("Conv", [x, g.const(w, "w"), g.const(b, "b")], **attrs)

    def conv_block(self, block: ConvBlock, x: str) -> str:
        """ConvBlock: (transposed) conv + folded BN + activation."""
        return self.g.act(self.conv1d(x, block.conv, block.bn), block.act)

    def poly_conv_block(self, block: ConvBlock, x: str, w_in: int) -> tuple[str, int, int]:
        """ConvBlock with a strided (1, K) ConvTranspose2d as its polyphase components: one Conv on
        the input (no zero stuffing) with output channel ``c * s + p`` holding output bin
        ``m * s + p``; returns (y (1, C_out * s, 1, M), s, M) (bins from ``L_out`` on are spare).

        Output o = i s - P + k of the transposed conv, o = m s + p, reads input i = m + d with
        k = p + P - s d, a conv tap at offset d."""
        conv = block.conv
        if not isinstance(conv, nn.ConvTranspose2d) or conv.kernel_size[0] != 1 or conv.stride[0] != 1 \
                or conv.padding[0] != 0 or conv.dilation[1] != 1 or conv.stride[1] < 2:
            raise _Unsupported("polyphase transposed conv")
        st, kk, pp = conv.stride[1], conv.kernel_size[1], conv.padding[1]
        l_out = (w_in - 1) * st - 2 * pp + kk + conv.output_padding[1]
        m_out = -(-l_out // st)
        w = _np(conv.weight)[:, :, 0, :]  # (in, out/groups, K)
        b = _np(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels)
        scale, shift = _bn_scale_shift(block.bn)
        grp = conv.groups
        cin_g, cout_g = w.shape[0] // grp, w.shape[1]
        offsets = [(p + pp - k) // st for p in range(st) for k in range(kk) if (p + pp - k) % st == 0]
        d_min, d_max = min(offsets), max(offsets)
        kc = d_max - d_min + 1
        extra = max(0, m_out - w_in)
        wc = np.zeros((conv.out_channels * st, cin_g, kc))  # (C_out s, C_in / groups, kc)
        for gi in range(grp):
            for co_l in range(cout_g):
                co = gi * cout_g + co_l
                for p in range(st):
                    for t in range(kc):
                        k = p + pp - st * (t + d_min)
                        if 0 <= k < kk:
                            wc[co * st + p, :, t] = w[gi * cin_g:(gi + 1) * cin_g, co_l, k] * scale[co]
        bc = np.repeat(b * scale + shift, st)
        y = self.g.op("Conv", [x, self.g.const(wc[:, :, None, :]), self.g.const(bc)], kernel_shape=[1, kc],
                      pads=[0, -d_min, 0, d_max + extra], group=grp)  # (1, C_out s, 1, M)
        return self.g.act(y, block.act), st, w_in + extra

    def tra(self, tra: TRA, x: str, h_in: str, width: int) -> tuple[str, str]:
        """Temporal recurrent attention on x (1, C, 1, W); the 1/W of the mean goes into the GRU."""
        g = self.g
        c = tra.att_fc.out_features
        energy = g.reshape(g.reduce_sum_square(x, 3), [1, 1, c])  # (seq 1, batch 1, C)
        w, r, b = _gru_onnx(tra.att_gru)
        hidden = tra.att_gru.hidden_size
        y, h_out = g.op("GRU", [energy, g.const(w[None] / width, "W"), g.const(r[None], "R"),
                                g.const(b[None], "B"), "", h_in],
                        outputs=[g._name("tra_y"), g._name("tra_h")], hidden_size=hidden,
                        linear_before_reset=1)  # y (1, 1, 1, hidden): the new state as 4-D
        # att_fc as a Conv whose kernel spans the hidden state (1, 1, 1, 2C) -> (1, C, 1, 1): no reshape.
        fc = tra.att_fc
        att = g.op("Conv", [y, g.const(_np(fc.weight)[:, None, None, :]), g.const(_np(fc.bias))],
                   kernel_shape=[1, hidden])  # (1, C, 1, 1)
        return g.op("Mul", [x, g.op("Sigmoid", [att])]), h_out

    def gtconv(self, block: GTConvBlock, x: str, channels: int, width: int, cache_in: str, h_in: str
               ) -> tuple[str, str, str]:
        """GTConvBlock on x (1, C, 1, W) with its conv cache (1, H, pad, W) and TRA state."""
        g = self.g
        half = channels // 2
        if not isinstance(block.sfe, SFE) or block.sfe.kernel_size != 3:
            raise _Unsupported("GTConvBlock SFE")
        # SFE(3) + point conv 1 (1x1) + BN -> one (1, 3) conv over the first half (zero weights elsewhere).
        w1, b1 = _conv_as_conv_weight(block.point_conv1)  # (H, 3 * half, 1, 1)
        w1, b1 = _fold_bn(w1[:, :, 0, 0], b1, block.point_bn1)  # (H, 3 * half)
        hidden = w1.shape[0]
        wf = np.zeros((hidden, channels, 1, 3))
        wf[:, :half, 0, :] = w1.reshape(hidden, half, 3)
        h = g.op("Conv", [x, g.const(wf, "w"), g.const(b1, "b")], kernel_shape=[1, 3], pads=[0, 1, 0, 1])
        h = g.act(h, block.point_act)  # (1, H, 1, W)
        # Causal dilated depthwise conv over [cache, current frame].
        full = g.op("Concat", [cache_in, h], axis=2)  # (1, H, pad + 1, W)
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
        # The window holds exactly (kt - 1) d + 1 frames: a depthwise 2-D conv dilated in time with
        # no time padding reads frames 0, d, .., (kt - 1) d and yields the current frame only.
        h = g.op("Conv", [full, g.const(wd), g.const(bd)], kernel_shape=[kt, kf], dilations=[dil, 1],
                 pads=[0, pad_conv[1], 0, pad_conv[1]], group=hidden)  # (1, H, 1, W)
        h = g.act(h, block.depth_act)  # (1, H, 1, W)
        w2, b2 = _conv_as_conv_weight(block.point_conv2)  # (half, H, 1, 1)
        w2, b2 = _fold_bn(w2, b2, block.point_bn2)
        h = g.op("Conv", [h, g.const(w2), g.const(b2)], kernel_shape=[1, 1])  # (1, half, 1, W)
        h, h_out = self.tra(block.tra, h, h_in, width)
        # Channel shuffle: out[2i] = h[i], out[2i + 1] = x[half + i].
        both = g.op("Concat", [h, x], axis=1)  # (1, half + C, 1, W)
        order = np.stack([np.arange(half), 2 * half + np.arange(half)], axis=1).reshape(-1)
        return g.op("Gather", [both, g.ints(order)], axis=1), cache_out, h_out

    def dpgrnn(self, block: DPGRNN, xr: str, x3: str | None, width: int, h_in: str) -> tuple[str, str]:
        """DPGRNN on xr (1, W, C) (``x3``: the same as (W, 1, C) if at hand); returns (1, W, C), state.

        (1, W, C) is the inter-frame GRU's (seq 1, batch W, C) input; (W, C) results broadcast to it."""
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
        x3 = x3 if x3 is not None else g.reshape(xr, [width, 1, c])  # (W, 1, C)
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
        xr = g.op("Add", [xr, self.layer_norm(block.intra_ln, y)])  # (1, W, C)
        # Inter-frame: causal grouped GRU across time (batch = W bins, one step), block-diagonal.
        grus = [inter.rnn1, inter.rnn2]
        w, r, b = _block_diag_gru(grus, 0)
        hid = sum(gr.hidden_size for gr in grus)
        _, h_out = g.op("GRU", [xr, g.const(w[None], "W"), g.const(r[None], "R"),
                                g.const(b[None], "B"), "", h_in],
                        outputs=[g._name("inter_y"), g._name("inter_h")], hidden_size=hid,
                        linear_before_reset=1)
        y = g.op("Gemm", [g.reshape(h_out, [width, hid]), g.const(_np(block.inter_fc.weight).T),
                          g.const(_np(block.inter_fc.bias))])  # (W, C)
        return g.op("Add", [xr, self.layer_norm(block.inter_ln, y)]), h_out  # (1, W, C)

    def layer_norm(self, ln: nn.LayerNorm, x: str) -> str:
        return self.g.op("LayerNormalization", [x, self.g.const(_np(ln.weight)), self.g.const(_np(ln.bias))],
                         axis=0, epsilon=float(ln.eps))

    @staticmethod
    def band_matrix(stem: BandStem, width: int) -> tuple[np.ndarray, np.ndarray] | None:
        """BandStem's conv + BN as one matrix per band: (bands, C_in w, C_out w) and bias
        (bands, 1, C_out w), rows ``c_in * w + j``, columns ``c_out * w + j`` (w = width / bands).

        With one band per group the (1, 3) conv inside a band (zero padded at its edges) is a
        banded map of the band's C_in x w values. None for other layouts.
        """
        conv, n = stem.conv, stem.bands
        if conv.groups != n or tuple(conv.kernel_size) != (1, 3) or tuple(conv.padding) != (0, 1) \
                or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or width % n:
            return None
        w, b = _fold_bn(_np(conv.weight)[:, :, 0, :], _np(conv.bias), stem.bn)  # (n C_out, C_in, 3)
        cout, cin, wb = conv.out_channels // n, conv.in_channels // n, width // n
        mat = np.zeros((n, cin, wb, cout, wb))
        w = w.reshape(n, cout, cin, 3)  # (n, C_out, C_in, 3)
        for k in range(3):
            for j in range(wb):
                jj = j + k - 1
                if 0 <= jj < wb:
                    mat[:, :, jj, :, j] += w[:, :, :, k].transpose(0, 2, 1)  # (n, C_in, C_out)
        bias = np.repeat(b.reshape(n, cout, 1), wb, axis=2).reshape(n, 1, cout * wb)  # (n, 1, C_out w)
        return mat.reshape(n, cin * wb, cout * wb), bias  # (n, C_in w, C_out w)

    def band_conv(self, xb: str, stem: BandStem, width: int, mat: np.ndarray | None = None) -> str:
        """BandStem's conv + BN + activation on the band-major layout (bands, 1, C_in w) -> (bands, 1,
        C_out w): one batched MatMul over the bands (cheaper than a 32-group Conv in onnxruntime).

        ``mat``: a replacement for the band matrix (a linear map folded in front of it) whose
        last row is the bias (xb's last entry is then 1 in every band)."""
        g = self.g
        folded = self.band_matrix(stem, width)
        if folded is None:
            raise _Unsupported("band stem layout")
        if mat is not None:
            return g.act(g.op("MatMul", [xb, g.const(mat)]), stem.act)  # (n, 1, C_out w)
        y = g.op("MatMul", [xb, g.const(folded[0])])  # (n, 1, C_out w)
        return g.act(g.op("Add", [y, g.const(folded[1])]), stem.act)  # (n, 1, C_out w)

    def band_apply(self, xb: str, stem: BandStem, width: int) -> str:
        """BandStem (conv + BN + act) on the band layout (bands, 1, C_in w) -> (bands, 1, C_out w),
        as a batched MatMul when possible, else as its grouped conv."""
        if self.band_matrix(stem, width) is not None:
            return self.band_conv(xb, stem, width)
        g, n = self.g, stem.bands
        wb = width // n
        cin, cout = stem.conv.in_channels // n, stem.conv.out_channels // n
        y = self.conv1d(g.reshape(xb, [1, n * cin, 1, wb]), stem.conv, stem.bn)  # (1, n C_out, 1, w)
        return g.reshape(g.act(y, stem.act), [n, 1, cout * wb])  # (n, 1, C_out w)

    def band_gather(self, x: str, channels: int, bands: int, width: int, to_bands: bool,
                    src: np.ndarray | None = None) -> str:
        """Re-layout (1, C, 1, F) <-> band-major (bands, 1, C * F / bands) (BandStem's band view; the
        flat data of (bands, 1, C w) equals that of (1, bands * C, w)). ``src`` (with ``to_bands``):
        the flat position of x's (channel, bin) when x is not plainly (1, C, F).
        """
        g = self.g
        w = width // bands
        flat = g.reshape(x, [-1])  # (C F,)
        if to_bands:  # out[n, 0, c * w + j] = x[c, n * w + j]
            n, c, j = np.meshgrid(np.arange(bands), np.arange(channels), np.arange(w), indexing="ij")
            pos = src if src is not None else np.arange(channels * width).reshape(channels, width)
            idx = pos[c, n * w + j].reshape(bands, 1, channels * w)
        else:  # out[0, c, 0, n * w + j] = x[n, 0, c * w + j]
            c, n, j = np.meshgrid(np.arange(channels), np.arange(bands), np.arange(w), indexing="ij")
            idx = ((n * channels + c) * w + j).reshape(1, channels, 1, width)
        return g.op("Gather", [flat, g.ints(idx)], axis=0)

    def stem_front(self, feat: str, bm: np.ndarray, stem: BandStem, pool_width: int | None
                   ) -> tuple[str, str | None]:
        """ERB analysis + SFE(3) + BandStem from the per-bin features ``feat`` (257, 3) (columns
        mag, real, imag): returns the stem output in band layout (bands, 1, C_s w) and, when
        ``pool_width`` is given, SkipFusion's band-pooled SFE features (1, 9, 1, pool_width).

        One Gemm gives E = ERB(features) (3, F) plus a zero column, a column of ones and the
        pooled features; band n reads the window E[:, n w - 1 .. n w + w] (SFE's neighbours, zero
        outside the spectrum) and a one (for the bias) through one Gather, and the SFE and the
        bias are folded into the band matrices.
        """
        g = self.g
        n_bins = bm.shape[1]
        n, wb = stem.bands, n_bins // stem.bands
        folded = self.band_matrix(stem, n_bins)
        if folded is None or stem.conv.in_channels != 9 * n:
            raise _Unsupported("band stem layout")
        cols = [bm, np.zeros((N_FREQS, 2))]  # E (F), a zero column at F, ones (the Gemm bias) at F + 1
        if pool_width is not None:  # pooled[3c + j, m] = mean_u E_c[m k + u + j - 1], k = F / N
            k = n_bins // pool_width
            pool = np.zeros((N_FREQS, 3, pool_width))
            for j in range(3):
                for m in range(pool_width):
                    for u in range(k):
                        f = m * k + u + j - 1
                        if 0 <= f < n_bins:
                            pool[:, j, m] += bm[:, f] / k
            cols.append(pool.reshape(N_FREQS, 3 * pool_width))
        wgemm = np.concatenate(cols, axis=1)  # (257, F + 2 [+ 3 N])
        ncol = wgemm.shape[1]
        ones = np.zeros(ncol)
        ones[n_bins + 1] = 1.0
        flat = g.reshape(g.op("Gemm", [feat, g.const(wgemm), g.const(ones)], transA=1), [-1])  # (3 ncol,)
        # Window of band n: position p <-> ERB bin n w - 1 + p (zero column outside).
        ww = wb + 2
        nn_, c, pp = np.meshgrid(np.arange(n), np.arange(3), np.arange(ww), indexing="ij")
        f = nn_ * wb - 1 + pp
        f = np.where((f >= 0) & (f < n_bins), f, n_bins)
        idx = np.concatenate([(c * ncol + f).reshape(n, 3 * ww), np.full((n, 1), n_bins + 1)], axis=1)
        xw = g.op("Gather", [flat, g.ints(idx.reshape(n, 1, 3 * ww + 1))], axis=0)  # (n, 1, 3 ww + 1)
        # SFE folded: front[3c + j, n w + jj] = window[c, jj + j] feeds mat row (3c + j) w + jj.
        mat, bias = folded
        cout_w = mat.shape[2]
        mat = mat.reshape(n, 3, 3, wb, cout_w)  # (n, c, j, jj, C_out w)
        mw = np.zeros((n, 3, ww, cout_w))
        for j in range(3):
            mw[:, :, j:j + wb, :] += mat[:, :, j]
        mw = np.concatenate([mw.reshape(n, 3 * ww, cout_w), bias], axis=1)  # (n, 3 ww + 1, C_s w)
        y = self.band_conv(xw, stem, n_bins, mw)  # (n, 1, C_s w)
        pooled = None
        if pool_width is not None:
            cc, j, m = np.meshgrid(np.arange(3), np.arange(3), np.arange(pool_width), indexing="ij")
            idx = cc * ncol + n_bins + 2 + j * pool_width + m
            pooled = g.op("Gather", [flat, g.ints(idx.reshape(1, 9, 1, pool_width))], axis=0)  # (1, 9, 1, N)
        return y, pooled

    # -- whole model -----------------------------------------------------------------------------

    def build(self) -> Any:
        from onnx import TensorProto, helper

        m, g = self.m, self.g
        cfg = m.config
        enc, dec = m.encoder, m.decoder
        erb = enc.erb
        if not isinstance(enc.sfe, SFE) or enc.sfe.kernel_size != 3:
            raise _Unsupported("encoder SFE")
        # The packed state (S,) viewed as (1, S / d, d) (d: the GRU states' hidden size) and split
        # once along axis 1: the GRU states, (1, n, d), are then used as they come; only the
        # other parts (the conv caches) need a Reshape (fewer nodes than reshaping every part).
        if not self.shapes:
            raise _Unsupported("a model without state")
        sizes = [int(np.prod(sh)) for sh in self.shapes]
        d = self.state_row(sizes)
        rows = [size // d for size in sizes]
        view = g.reshape(STATE_INPUT, [1, sum(rows), d])  # (1, S / d, d)
        parts = g.op("Split", [view, g.ints(rows, "rows")], hint="state_part",
                     outputs=len(rows), axis=1)  # each (1, size / d, d)
        parts = parts if isinstance(parts, list) else [parts]
        state_in = [part if tuple(sh) == (1, n, d) else g.reshape(part, list(sh))  # (*state shape)
                    for part, sh, n in zip(parts, self.shapes, rows, strict=True)]
        state_out: list[str] = []
        s = iter(state_in)

        # Front end: (1, 257, 1, 2) -> [mag, real, imag] per bin (257, 3) -> ERB + SFE(3).
        mag = g.op("Sqrt", [g.op("Add", [g.reduce_sum_square(FRAME_INPUT, 3), g.const(np.float32(1e-12))])])
        feat = g.reshape(g.op("Concat", [mag, FRAME_INPUT], axis=3), [N_FREQS, 3])  # (257, 3)
        n_bins = erb.num_bins
        bm = _np(enc.analysis_matrix()).T  # (257, F)

        skips: list[str] = []
        width = n_bins
        stem_bands: str | None = None  # the stem's output in band layout (bands, 1, C_s w)
        front: str | None = None  # (1, 9, 1, F)
        pooled: str | None = None  # SkipFusion's pooled front features (1, 9, 1, N)
        stem: BandStem | None = enc.stem
        if stem is not None and self.band_matrix(stem, n_bins) is not None:
            # ERB, SFE and the band stem from one Gemm + Gather + batched MatMul.
            pool_width = enc.width if enc.fusion is not None else None
            stem_bands, pooled = self.stem_front(feat, bm, stem, pool_width)
        else:
            # One matrix product: front[3c + j, f] = ERB(feature c)[f + j - 1] (zero outside).
            bm_sfe = np.zeros((N_FREQS, 3, n_bins))  # (257, j, F)
            for j in range(3):
                lo, hi = max(0, 1 - j), min(n_bins, n_bins + 1 - j)  # f with 0 <= f + j - 1 < F
                bm_sfe[:, j, lo:hi] = bm[:, lo + j - 1:hi + j - 1]
            front = g.op("Gemm", [feat, g.const(bm_sfe.reshape(N_FREQS, 3 * n_bins))], transA=1)  # (3, 3F)
            front = g.reshape(front, [1, 9, 1, n_bins])  # (1, 9, 1, F): channel 3c + j
            if stem is not None:
                xb = self.band_gather(front, 9, stem.bands, n_bins, to_bands=True)  # (32, 1, 9 w)
                stem_bands = self.band_apply(xb, stem, n_bins)  # (32, 1, C_s w)
        if stem is not None:
            x = self.band_gather(stem_bands, stem.out_channels, stem.bands, n_bins, to_bands=False)
            skips.append(x)  # (1, C_s, 1, F)
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
            if pooled is None:
                pooled = g.op("AveragePool", [front], kernel_shape=[1, n_bins // width],
                              strides=[1, n_bins // width])  # (1, 9, 1, N)
            both = g.op("Concat", [x, pooled], axis=1)  # (1, C + 9, 1, N)
            x = g.act(self.conv1d(both, fusion.conv, fusion.bn), fusion.act)
            skips[-1] = x

        # Dual-path RNNs in the frequency-major layouts (W, 1, C) and (1, W, C).
        x = g.reshape(x, [1, channels, width])  # (1, C, W)
        x3: str | None = g.op("Transpose", [x], perm=[2, 0, 1])  # (W, 1, C)
        xr = g.op("Transpose", [x], perm=[0, 2, 1])  # (1, W, C)
        for rnn in m.dpgrnn:
            xr, h = self.dpgrnn(rnn, xr, x3, width, next(s))
            x3 = None
            state_out.append(h)
        x = g.reshape(g.op("Transpose", [xr], perm=[0, 2, 1]), [1, channels, 1, width])  # (1, C, 1, W)

        # Decoder; a last strided transposed conv runs polyphase (its consumer re-orders the bins).
        phases: tuple[int, int] | None = None  # (s, M): x is (1, C s, 1, M), bin m s + p in channel c s + p
        for i, block in enumerate(dec.de_convs):
            x = g.op("Add", [skips[-1 - i], x])  # (1, C, 1, W)
            if isinstance(block, GTConvBlock):
                x, cache, h = self.gtconv(block, x, channels, width, next(s), next(s))
                state_out += [cache, h]
            elif isinstance(block, ConvBlock):
                conv = block.conv
                if i == len(dec.de_convs) - 1 and isinstance(conv, nn.ConvTranspose2d) and conv.stride[1] > 1:
                    x, st, m_len = self.poly_conv_block(block, x, width)  # (1, C s, 1, M)
                    phases = (st, m_len)
                else:
                    x = self.conv_block(block, x)
                    if isinstance(conv, nn.ConvTranspose2d):
                        width = (width - 1) * conv.stride[1] - 2 * conv.padding[1] + conv.kernel_size[1] \
                            + conv.output_padding[1]
            else:
                raise _Unsupported(type(block).__name__)
        # Complex ratio mask (1, 2, 1, F).
        if dec.head is not None:
            head: BandStem = dec.head
            if stem_bands is None or head.out_channels != 2 or head.bands != enc.stem.bands:
                raise _Unsupported("decoder head")
            c_head = head.conv.in_channels // head.bands
            src = None
            if phases is not None:  # bin f of channel c at (c s + f % s) M + f // s
                c, f = np.meshgrid(np.arange(c_head), np.arange(n_bins), indexing="ij")
                src = (c * phases[0] + f % phases[0]) * phases[1] + f // phases[0]  # (C_s, F)
            xb = self.band_gather(x, c_head, head.bands, n_bins, to_bands=True, src=src)  # (32, 1, C_s w)
            mb = self.band_apply(g.op("Add", [xb, stem_bands]), head, n_bins)  # (32, 1, 2 w)
            mask = self.band_gather(mb, 2, head.bands, n_bins, to_bands=False)  # (1, 2, 1, F)
        elif phases is not None:  # (1, 2 s, 1, M) -> (1, 2, 1, s M): column p M + m holds bin m s + p
            st, m_len = phases
            mask = g.reshape(x, [1, 2, 1, st * m_len])  # (1, 2, 1, s M)
        else:
            mask = x  # (1, 2, 1, F)
        # ERB synthesis, then the mask applied in the frame's own layout as
        # [re, im] = [fr, fi, -fi, fr] * [mr, mr, mi, mi] summed in pairs (no broadcasting Mul).
        bs = _np(m.synthesis_matrix()).T  # (F, 257)
        if phases is not None and dec.head is None:  # rows in the polyphase order p M + m
            st, m_len = phases
            p_, m_ = np.meshgrid(np.arange(st), np.arange(m_len), indexing="ij")
            f = (m_ * st + p_).reshape(-1)  # (s M,)
            bs = np.where((f < n_bins)[:, None], bs[np.minimum(f, n_bins - 1)], 0.0)  # (s M, 257)
        mask = g.op("Transpose", [g.op("MatMul", [mask, g.const(bs)])], perm=[0, 3, 2, 1])  # (1, 257, 1, 2)
        mask4 = g.op("MatMul", [mask, g.const(np.array([[1.0, 1.0, 0.0, 0.0],
                                                         [0.0, 0.0, 1.0, 1.0]]))])  # (1, 257, 1, 4)
        spread = g.op("MatMul", [FRAME_INPUT, g.const(np.array([[1.0, 0.0, 0.0, 1.0],
                                                            [0.0, 1.0, -1.0, 0.0]]))])  # (1, 257, 1, 4)
        pairs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        out = g.op("MatMul", [g.op("Mul", [spread, mask4]), g.const(pairs)])  # (1, 257, 1, 2)
        g.nodes.append(helper.make_node("Identity", [out], [FRAME_OUTPUT], name="n_output"))
        if len(state_out) != len(state_in):
            raise _Unsupported("state layout")
        flat = [t if tuple(sh) == (1, n, d) else g.reshape(t, [1, n, d])  # (1, size / d, d)
                for t, sh, n in zip(state_out, self.shapes, rows, strict=True)]
        packed = g.op("Concat", flat, axis=1)  # (1, S / d, d), in the input's order
        g.op("Reshape", [packed, g.ints([sum(sizes)], "shape")], outputs=[STATE_OUTPUT])  # (S,)

        def vi(name: str, shape: tuple[int, ...]) -> Any:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

        frame_shape = (1, N_FREQS, 1, 2)
        graph = helper.make_graph(
            g.nodes, "gtcrn_step",
            [vi(FRAME_INPUT, frame_shape), vi(STATE_INPUT, (sum(sizes),))],
            [vi(FRAME_OUTPUT, frame_shape), vi(STATE_OUTPUT, (sum(sizes),))],
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

def _metadata(model: nn.Module, optimized: bool) -> dict[str, str]:
    config = getattr(model, "config", None)
    layout = state_layout(model)
    return {
        "gtcrn.sample_rate": str(SAMPLE_RATE),
        "gtcrn.n_fft": str(N_FFT),
        "gtcrn.hop": str(HOP),
        "gtcrn.window": "sqrt(periodic hann(512)), analysis and synthesis",
        "gtcrn.latency_samples": str(N_FFT),
        "gtcrn.state_size": str(sum(e["size"] for e in layout)),
        "gtcrn.state_layout": json.dumps(layout),
        "gtcrn.state_names": json.dumps([e["name"] for e in layout]),
        "gtcrn.config": json.dumps(config.to_dict() if config is not None else {}),
        "gtcrn.graph": "optimized" if optimized else "generic",
    }


def build_onnx(model: nn.Module, opset: int = DEFAULT_OPSET, optimize: bool = True) -> Any:
    """The streaming-step graph as an in-memory ``onnx.ModelProto`` (see the module docstring)."""
    import tempfile

    onnx = require("onnx", "onnx", "ONNX export")
    model = model.eval()
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
            _export_generic(model, path, opset)
            onnx_model = onnx.load(str(path))
    for key, value in _metadata(model, optimized).items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.ir_version = min(onnx_model.ir_version, min_ir_version(onnx_model))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def min_ir_version(onnx_model: Any) -> int:
    """The oldest ONNX IR version that can hold ``onnx_model``: the one its opsets need, and at
    least 8 if it defines functions. The ``onnx`` package stamps the newest IR version it knows
    (14 for onnx 1.23), which older onnxruntime releases refuse to load (1.30 reads up to 13);
    the graph itself needs nothing newer than its opsets."""
    from onnx import helper

    ir = helper.find_min_ir_version_for(list(onnx_model.opset_import), ignore_unknown=True)
    return max(ir, 8) if len(onnx_model.functions) else ir


def verify_onnx(model: nn.Module, onnx_path: str | Path, frames: int = 50, seed: int = 0) -> float:
    """Max abs difference between onnxruntime, run frame by frame with its packed state fed back,
    and the torch model on the same ``frames`` random frames (every enhanced frame, and the final
    state unpacked by the graph's ``gtcrn.state_layout``; ``model.forward_stateful`` over all
    frames at once equals ``model.step`` frame by frame)."""
    ort = require("onnxruntime", "onnx", "checking the ONNX export (skip it with --no-verify)")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    layout = json.loads(meta["gtcrn.state_layout"])
    gen = torch.Generator().manual_seed(seed)
    spec = torch.randn(1, N_FREQS, frames, 2, generator=gen) * 2.0  # (1, 257, T, 2)
    with torch.inference_mode():
        ref, ref_state = model.forward_stateful(spec, model.init_state(1, device="cpu"))
    if len(layout) != len(ref_state):
        return float("inf")
    state = np.zeros(int(meta["gtcrn.state_size"]), np.float32)  # (S,)
    worst = 0.0
    for t in range(frames):
        out, state = sess.run(None, {FRAME_INPUT: spec[:, :, t:t + 1].numpy(), STATE_INPUT: state})
        worst = max(worst, float(np.abs(out - ref[:, :, t:t + 1].numpy()).max()))
    got = unpack_state(state, layout)
    for entry, s in zip(layout, ref_state, strict=True):
        if tuple(entry["shape"]) != tuple(s.shape):
            return float("inf")
        worst = max(worst, float(np.abs(got[entry["name"]] - s.numpy()).max()))
    return worst


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, optimize: bool = True,
                verify: bool = True) -> Path:
    """Export ``model``'s streaming step to ``path`` (ONNX); returns the path.

    ``verify``: compare the graph, run by onnxruntime, with ``model.step`` on random frames
    and raise :class:`ExportError` if they differ by more than 1e-4. ``onnx`` (and for the
    check ``onnxruntime``) come with the ``onnx`` extra; without them
    :class:`gtcrn.extras.MissingExtraError` says what to install.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    if verify:
        require("onnxruntime", "onnx", "checking the ONNX export (skip it with --no-verify)")
    path = Path(path)
    model = model.cpu().eval()
    onnx_model = build_onnx(model, opset, optimize)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    onnx.save(onnx_model, str(tmp))
    try:
        if verify:
            err = verify_onnx(model, tmp)
            if not err <= VERIFY_TOLERANCE:
                raise ExportError(f"{path}: exported graph differs from model.step by {err:.2e} "
                                  f"(> {VERIFY_TOLERANCE:g})")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
