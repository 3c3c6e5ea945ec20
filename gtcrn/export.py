"""ONNX exports. The generic graphs (one streaming step or a chunk, the whole state packed into one
vector) live in :mod:`gtcrn.deploy.onnx` and are re-exported here for existing imports.

This module adds the **sherpa-onnx** format (k2-fsa's ``OfflineSpeechDenoiser`` and
``OnlineSpeechDenoiser`` load it as a GTCRN model): the same deploy step, ``torch.onnx.export``-ed
with the state as sherpa-onnx's three named caches, in this order::

    mix (1, 257, 1, 2), conv_cache, tra_cache, inter_cache
        -> enh (1, 257, 1, 2), conv_cache_out, tra_cache_out, inter_cache_out

plus the string metadata sherpa-onnx reads (``model_type=gtcrn``, the STFT, the three cache shapes)
and our own (``gtcrn.*``: model, preset, training record, licence and credit). Zero caches are the
state before the first frame. The caches group the model's named state by the block that owns each
tensor (:func:`cache_layout`; H hidden channels, W bins, ``dilations`` of the config)::

    conv_cache  (2, 1, H, P, W)  the GTConvBlocks' depthwise-conv caches, P = 2 * sum(dilations):
                                 row 0 the encoder's, concatenated on the frame axis in encoder
                                 order; row 1 the decoder's in reverse order (each block in the slot
                                 of its mirror encoder block, as in the official streaming model)
    tra_cache   (2, K, 1, 1, H)  the GTConvBlocks' TRA GRU states, rows and order as conv_cache
    inter_cache (R, 1, W, H)     the inter-frame GRU state of each of the R DPGRNNs

``gtcrn-official`` gets the official ``gtcrn.onnx`` shapes, (2, 1, 16, 16, 33), (2, 3, 1, 1, 16),
(2, 1, 33, 16); ``gtcrn-g32`` the same with W = 32.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .deploy.onnx import (
    DEFAULT_OPSET,
    ExportError,
    add_metadata,
    build_onnx,
    export_onnx,
    finish_proto,
    pack_state,
    save_verified,
    state_layout,
    state_names,
    unpack_state,
    verify_onnx,
)
from .nn.blocks import DPGRNN, GTConvBlock, State
from .nn.model import GTCRN
from .stft import HOP, N_FFT, N_FREQS, SAMPLE_RATE, WIN_LENGTH

SHERPA_INPUTS = ("mix", "conv_cache", "tra_cache", "inter_cache")
SHERPA_OUTPUTS = ("enh", "conv_cache_out", "tra_cache_out", "inter_cache_out")


@dataclass(frozen=True)
class CacheLayout:
    """Which state tensor lives where in the three caches (see the module docstring): ``conv`` and
    ``tra`` have one tuple of state names per row (encoder, decoder), ``inter`` one name per DPGRNN;
    ``shapes`` maps every state name to its batch-1 shape."""

    conv: tuple[tuple[str, ...], ...]
    tra: tuple[tuple[str, ...], ...]
    inter: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]

    def cache_shapes(self) -> dict[str, list[int]]:
        """``{"conv_cache": [...], "tra_cache": [...], "inter_cache": [...]}``."""
        conv, tra, inter = self.conv[0], self.tra[0], self.inter
        frames = sum(self.shapes[n][2] for n in conv)
        return {"conv_cache": [len(self.conv), *self.shapes[conv[0]][:2], frames, self.shapes[conv[0]][3]],
                "tra_cache": [len(self.tra), len(tra), *self.shapes[tra[0]]],
                "inter_cache": [len(inter), *self.shapes[inter[0]]]}

    def to_dict(self) -> dict[str, Any]:
        return {"conv_cache": [list(r) for r in self.conv], "tra_cache": [list(r) for r in self.tra],
                "inter_cache": list(self.inter)}


def _owner(model: GTCRN, name: str) -> tuple[str, nn.Module | None, str]:
    """(owner path, owning GTConvBlock or DPGRNN, the rest of the name) of a state tensor's name."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = ".".join(parts[:cut])
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, (GTConvBlock, DPGRNN)):
            return path, module, ".".join(parts[cut:])
    return "", None, name


def cache_layout(model: GTCRN) -> CacheLayout:
    """The sherpa-onnx cache layout of ``model``'s state, derived from ``model.init_state(1)``;
    :class:`ExportError` if a state tensor has no place in the three caches or the encoder's and
    decoder's rows differ in shape."""
    state = model.init_state(1, device="cpu")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    conv: dict[str, list[str]] = {"encoder": [], "decoder": []}
    tra: dict[str, list[str]] = {"encoder": [], "decoder": []}
    inter: list[str] = []
    for name in state:
        path, block, rest = _owner(model, name)
        row = path.split(".")[0]
        if isinstance(block, GTConvBlock) and row in conv and rest in ("cache", "tra.h"):
            (conv if rest == "cache" else tra)[row].append(name)
        elif isinstance(block, DPGRNN) and rest == "inter_rnn.h":
            inter.append(name)
        else:
            raise ExportError(f"state {name} {list(shapes[name])} has no place in sherpa-onnx's three "
                              f"GTCRN caches (conv, tra, inter)")
    conv_rows = (tuple(conv["encoder"]), tuple(reversed(conv["decoder"])))  # decoder: mirror order
    tra_rows = (tuple(tra["encoder"]), tuple(reversed(tra["decoder"])))
    for group, rows in (("conv_cache", conv_rows), ("tra_cache", tra_rows), ("inter_cache", (inter,))):
        on_frames = group == "conv_cache"  # conv caches are concatenated on the frame axis, others stacked
        kinds = {shapes[n][:2] + shapes[n][3:] if on_frames else shapes[n] for r in rows for n in r}
        sizes = {sum(shapes[n][2] for n in r) if on_frames else len(r) for r in rows}
        if len(kinds) != 1 or len(sizes) != 1:  # each cache is one tensor: rows of equal shape
            raise ExportError(f"{group}: the model's states do not stack into one tensor "
                              f"({[[list(shapes[n]) for n in r] for r in rows]})")
    return CacheLayout(conv_rows, tra_rows, tuple(inter), shapes)


def split_caches(caches: Sequence[torch.Tensor], layout: CacheLayout) -> State:
    """(conv_cache, tra_cache, inter_cache) -> the model's named state (views, batch 1)."""
    conv, tra, inter = caches
    state: State = {}
    for r, row in enumerate(layout.conv):
        parts = conv[r].split([layout.shapes[n][2] for n in row], dim=2)  # each (1, H, P_i, W)
        state.update(zip(row, parts, strict=True))
    for r, row in enumerate(layout.tra):
        state.update((name, tra[r, i]) for i, name in enumerate(row))  # each (1, 1, H)
    state.update((name, inter[i]) for i, name in enumerate(layout.inter))  # each (1, W, H)
    return state


def join_caches(state: State, layout: CacheLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's named state (batch 1) -> (conv_cache, tra_cache, inter_cache)."""
    conv = torch.stack([torch.cat([state[n] for n in row], dim=2) for row in layout.conv])  # (2, 1, H, P, W)
    tra = torch.stack([torch.stack([state[n] for n in row]) for row in layout.tra])  # (2, K, 1, 1, H)
    inter = torch.stack([state[n] for n in layout.inter])  # (R, 1, W, H)
    return conv, tra, inter


class SherpaStep(nn.Module):
    """``(mix, conv_cache, tra_cache, inter_cache) -> (enh, *caches_out)`` around a deploy model."""

    def __init__(self, deploy: nn.Module, layout: CacheLayout) -> None:
        super().__init__()
        self.deploy, self.layout = deploy, layout

    def forward(self, mix: torch.Tensor, conv_cache: torch.Tensor, tra_cache: torch.Tensor,
                inter_cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = split_caches((conv_cache, tra_cache, inter_cache), self.layout)
        enh, new = self.deploy.forward_stateful(mix, state)  # (1, 257, 1, 2)
        return (enh, *join_caches(new, self.layout))


def sherpa_onnx_bytes(model: GTCRN, opset: int = DEFAULT_OPSET) -> bytes:
    """The sherpa-onnx step graph of ``model`` (plain, float32, CPU), serialised, no metadata."""
    from .deploy import to_deploy

    layout = cache_layout(model)
    wrapper = SherpaStep(to_deploy(model.cpu().float()), layout).eval()
    caches = [torch.zeros(s) for s in layout.cache_shapes().values()]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(1, N_FREQS, 1, 2), *caches), buffer, dynamo=False,
                          opset_version=opset, do_constant_folding=True, input_names=list(SHERPA_INPUTS),
                          output_names=list(SHERPA_OUTPUTS))
    return buffer.getvalue()


# ---- metadata --------------------------------------------------------------------------------

def _upstream_credit(file: str) -> dict[str, str]:
    from .checkpoint import UPSTREAM_CREDIT

    return {"file": file, **UPSTREAM_CREDIT}


def load_with_record(spec: str | Path) -> tuple[GTCRN, dict[str, Any]]:
    """The model a spec names (:func:`gtcrn.checkpoint.model_from_spec`) and its checkpoint's
    record (``meta``: steps, hours, dev figures, warm start); for official weights, their credit."""
    from .checkpoint import CheckpointError, model_from_spec, pretrained_path, read_checkpoint, split_spec
    from .config import PRESETS

    model = model_from_spec(spec)
    kind, body = split_spec(str(spec))
    if kind == "upstream":
        return model, {"upstream": _upstream_credit(Path(body).name)}
    if kind == "untrained":
        return model, {"untrained": body}
    path = pretrained_path(body) if body in PRESETS and (kind == "preset" or not Path(body).exists()) \
        else Path(body)
    try:
        return model, dict(read_checkpoint(path).get("meta") or {})
    except CheckpointError:  # loaded, but not ours: an official checkpoint recognised by its content
        return model, {"upstream": _upstream_credit(path.name)}


def record_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint record a deployed file keeps: steps, hours, best dev figures."""
    best = record.get("dev_metrics_best") or {}
    out = {k: record[k] for k in ("steps_total", "hours_of_audio_seen", "best_step") if k in record}
    dev = {k[4:]: round(float(v), 4) for k, v in best.items() if k.startswith("dev_") and k != "dev_loss"}
    if dev:
        out["dev_best"] = dev
    if "upstream" in record:
        out["official_checkpoint"] = record["upstream"]["file"]
    init = record.get("init_from") or {}
    if init:
        out["init_from"] = {k: init[k] for k in ("source", "steps", "hours_seen") if k in init}
    return out


def licence_and_credit(record: dict[str, Any]) -> tuple[str, str]:
    """(licence, credit) of the weights a record describes (official weights or a warm start from them)."""
    upstream = record.get("upstream") or (record.get("init_from") or {}).get("upstream")
    if "upstream" in record:
        return upstream["licence"], f"weights: {upstream['weights']}"
    if "untrained" in record:
        return "MIT", "random initialisation (untrained)"
    credit = "trained with the gtcrn package (training data and its licences: its docs/MODEL_CARD.md)"
    if upstream:
        credit += f"; warm-started from the {upstream['weights']}, licence {upstream['licence']}"
    return "MIT", credit


def sherpa_keys(cache_shapes: dict[str, list[int]]) -> dict[str, str]:
    """sherpa-onnx's own metadata for a GTCRN model with these cache shapes."""
    return {"model_type": "gtcrn", "version": "1", "sample_rate": str(SAMPLE_RATE), "n_fft": str(N_FFT),
            "hop_length": str(HOP), "window_length": str(WIN_LENGTH), "window_type": "hann_sqrt",
            **{f"{k}_shape": ",".join(str(d) for d in v) for k, v in cache_shapes.items()}}


def sherpa_metadata(model: GTCRN, layout: CacheLayout, record: dict[str, Any] | None = None,
                    name: str | None = None) -> dict[str, str]:
    """The metadata of a sherpa-onnx export: sherpa-onnx's keys, then ours (``gtcrn.*``)."""
    from . import __version__

    record = record or {}
    licence, credit = licence_and_credit(record)
    name = name or model.config.name
    return {**sherpa_keys(layout.cache_shapes()),
            "comment": f"{name} ({model.config.name}), exported by gtcrn {__version__}",
            "gtcrn.model": name, "gtcrn.preset": model.config.name, "gtcrn.package": f"gtcrn {__version__}",
            "gtcrn.licence": licence, "gtcrn.credit": credit,
            "gtcrn.record": json.dumps(record_summary(record)),
            "gtcrn.config": json.dumps(model.config.to_dict()),
            "gtcrn.cache_layout": json.dumps(layout.to_dict()),
            "gtcrn.latency_samples": str(N_FFT), "gtcrn.graph": "sherpa-onnx step"}


def build_sherpa_onnx(model: GTCRN, record: dict[str, Any] | None = None, name: str | None = None,
                      opset: int = DEFAULT_OPSET) -> Any:
    """The sherpa-onnx graph as an ``onnx.ModelProto`` with its metadata."""
    metadata = sherpa_metadata(model, cache_layout(model), record, name)
    return finish_proto(sherpa_onnx_bytes(model, opset), metadata)


def verify_sherpa_onnx(model: GTCRN, graph: str | Path | bytes, frames: int = 40, seed: int = 0) -> float:
    """Max abs difference between onnxruntime on the sherpa-onnx graph (frame by frame from zero
    caches) and the torch model from its initial state: every enhanced frame and the final caches."""
    import onnxruntime as ort

    sess = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph),
                                providers=["CPUExecutionProvider"])
    layout = cache_layout(model)
    spec = torch.randn(1, N_FREQS, frames, 2, generator=torch.Generator().manual_seed(seed)) * 2.0
    with torch.inference_mode():
        ref, ref_state = model.forward_stateful(spec, model.init_state(1, device="cpu"))
    caches = [np.zeros(s, np.float32) for s in layout.cache_shapes().values()]
    worst = 0.0
    for t in range(frames):
        enh, *caches = sess.run(None, {"mix": spec[:, :, t:t + 1].numpy(),
                                       **dict(zip(SHERPA_INPUTS[1:], caches, strict=True))})
        worst = max(worst, float(np.abs(enh - ref[:, :, t:t + 1].numpy()).max()))
    for got, want in zip(caches, join_caches(ref_state, layout), strict=True):
        worst = max(worst, float(np.abs(got - want.numpy()).max()))
    return worst


def export_sherpa_onnx(model: GTCRN | str | Path, path: str | Path, record: dict[str, Any] | None = None,
                       opset: int = DEFAULT_OPSET, verify: bool = True) -> Path:
    """Write ``model`` (a GTCRN, or a model spec such as ``"gtcrn-g32"`` or ``"upstream:PATH"``,
    whose checkpoint record then goes into the metadata) as a sherpa-onnx GTCRN model at ``path``,
    atomically. ``verify``: with onnxruntime installed, raise :class:`ExportError` unless
    :func:`verify_sherpa_onnx` is within 1e-4."""
    name = None
    if not isinstance(model, nn.Module):
        name = str(model)
        model, found = load_with_record(model)
        record = found if record is None else record
    model = model.cpu().eval()
    return save_verified(build_sherpa_onnx(model, record, name, opset), path,
                         (lambda graph: verify_sherpa_onnx(model, graph)) if verify else None)


def official_with_metadata(src: str | Path, dst: str | Path) -> Path:
    """The official streaming ``gtcrn.onnx`` (the frame and three caches in, as sherpa-onnx wants)
    copied to ``dst`` with sherpa-onnx's metadata added; the cache shapes are read from its inputs."""
    import onnx

    proto = onnx.load(str(src))
    inputs = list(proto.graph.input)
    if [i.name for i in inputs] != list(SHERPA_INPUTS):
        raise ExportError(f"{src}: inputs {[i.name for i in inputs]}, expected {list(SHERPA_INPUTS)}")
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs[1:]}
    meta = {**sherpa_keys(shapes),
            "comment": "the official GTCRN streaming model (github.com/Xiaobin-Rong/gtcrn), MIT"}
    onnx.save(add_metadata(proto, meta), str(dst))
    return Path(dst)


def sherpa_denoiser(path: str | Path, online: bool = False, threads: int = 1) -> Any:
    """sherpa-onnx's ``OfflineSpeechDenoiser`` (or, with ``online``, ``OnlineSpeechDenoiser``) on
    the GTCRN model at ``path``; needs the ``sherpa`` extra."""
    from .extras import require

    so = require("sherpa_onnx", "sherpa", "running a sherpa-onnx model")
    gtcrn = so.OfflineSpeechDenoiserGtcrnModelConfig(model=str(path))
    model = so.OfflineSpeechDenoiserModelConfig(gtcrn=gtcrn, num_threads=threads)
    if online:
        return so.OnlineSpeechDenoiser(so.OnlineSpeechDenoiserConfig(model=model))
    return so.OfflineSpeechDenoiser(so.OfflineSpeechDenoiserConfig(model=model))


__all__ = ["DEFAULT_OPSET", "CacheLayout", "ExportError", "SherpaStep", "add_metadata", "build_onnx",
           "build_sherpa_onnx", "cache_layout", "export_onnx", "export_sherpa_onnx", "join_caches",
           "licence_and_credit", "load_with_record", "official_with_metadata", "pack_state", "record_summary",
           "sherpa_denoiser", "sherpa_keys", "sherpa_metadata", "split_caches", "state_layout", "state_names",
           "unpack_state", "verify_onnx", "verify_sherpa_onnx"]
