"""ONNX export (``torch.onnx.export`` of the deploy module), batch 1, the whole state packed into
one float32 vector (zeros: before the first frame; layout in the file's metadata, see README)::

    step : frame (1, 257, 1, 2), state (S,) -> enhanced_frame (1, 257, 1, 2), state_out (S,)
    chunk: spec  (1, 257, T, 2), state (S,) -> enhanced       (1, 257, T, 2), state_out (S,)
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn.blocks import State
from ..stft import HOP, N_FFT, N_FREQS, SAMPLE_RATE
from .model import DeployGTCRN, to_deploy

DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-4
FRAME_INPUT, STATE_INPUT = "frame", "state"
FRAME_OUTPUT, STATE_OUTPUT = "enhanced_frame", "state_out"


class ExportError(RuntimeError):
    """The export failed or the exported graph does not reproduce the torch model."""


def state_layout(model: nn.Module) -> list[dict[str, Any]]:
    """Where each tensor of ``model.init_state(1)`` lives in the packed state, in order:
    ``{"name", "shape", "offset", "size"}`` (C order, no gaps; the last offset + size is S)."""
    layout, offset = [], 0
    for name, t in model.init_state(1, device="cpu").items():
        layout.append({"name": name, "shape": list(t.shape), "offset": offset, "size": t.numel()})
        offset += t.numel()
    return layout


def state_names(model: nn.Module) -> list[str]:
    """The names of the model's state tensors, in packing order."""
    return [entry["name"] for entry in state_layout(model)]


def pack_state(state: State | list[torch.Tensor]) -> np.ndarray:
    """A model state (a dict or the tensors in order) as the packed (S,) float32 vector."""
    parts = state.values() if isinstance(state, dict) else state
    return np.concatenate([np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                                      np.float32).reshape(-1) for t in parts])  # (S,)


def unpack_state(packed: np.ndarray, layout: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The packed state (S,) as ``{name: array of its shape}`` by ``layout``."""
    flat = np.asarray(packed).reshape(-1)  # (S,)
    return {e["name"]: flat[e["offset"]:e["offset"] + e["size"]].reshape(e["shape"]) for e in layout}


class PackedState(nn.Module):
    """``(spec, state (S,)) -> (enhanced, state_out (S,))`` around a deploy model. The vector is split
    as (1, S / d, d), d the GRU states' hidden size if it divides all, so only caches are reshaped."""

    def __init__(self, deploy: DeployGTCRN) -> None:
        super().__init__()
        self.deploy = deploy
        self.shapes = {k: shape for k, (shape, _) in deploy.state_shapes.items()}
        sizes = [int(np.prod(s)) for s in self.shapes.values()]
        lasts = {s[-1] for s in self.shapes.values() if len(s) == 3 and s[0] == 1}
        d = lasts.pop() if len(lasts) == 1 else 1
        self.d = d if all(n % d == 0 for n in sizes) else 1
        self.rows = [n // self.d for n in sizes]

    def forward(self, spec: torch.Tensor, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = packed.view(1, -1, self.d).split(self.rows, dim=1)  # each (1, size / d, d)
        state = {k: p if list(p.shape) == s else p.reshape(s)
                 for (k, s), p in zip(self.shapes.items(), parts, strict=True)}
        out, new = self.deploy.forward_stateful(spec, state)
        flat = [v if list(v.shape) == [1, n, self.d] else v.reshape(1, n, self.d)
                for v, n in zip(new.values(), self.rows, strict=True)]
        return out, torch.cat(flat, dim=1).view(-1)  # (S,)


def onnx_bytes(model: nn.Module, chunk: bool = False, opset: int = DEFAULT_OPSET) -> bytes:
    """The step graph (or, with ``chunk``, the chunk graph) of a plain or deploy model, serialised."""
    deploy = model if isinstance(model, DeployGTCRN) else to_deploy(model.cpu().float())
    wrapper = PackedState(deploy.cpu().float()).eval()
    size = sum(int(np.prod(s)) for s in wrapper.shapes.values())
    out_name = "enhanced" if chunk else FRAME_OUTPUT
    names = (["spec" if chunk else FRAME_INPUT, STATE_INPUT], [out_name, STATE_OUTPUT])
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(1, N_FREQS, 3 if chunk else 1, 2), torch.zeros(size)),
                          buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=names[0], output_names=names[1],
                          dynamic_axes={names[0][0]: {2: "T"}, out_name: {2: "T"}} if chunk else None)
    return buffer.getvalue()


def _metadata(model: nn.Module, chunk: bool) -> dict[str, str]:
    layout = state_layout(model)
    return {
        "gtcrn.sample_rate": str(SAMPLE_RATE), "gtcrn.n_fft": str(N_FFT), "gtcrn.hop": str(HOP),
        "gtcrn.window": "sqrt(periodic hann(512)), analysis and synthesis",
        "gtcrn.latency_samples": str(N_FFT),
        "gtcrn.state_size": str(sum(e["size"] for e in layout)),
        "gtcrn.state_layout": json.dumps(layout),
        "gtcrn.state_names": json.dumps([e["name"] for e in layout]),
        "gtcrn.config": json.dumps(model.config.to_dict()),
        "gtcrn.graph": "chunk" if chunk else "step",
    }


def build_onnx(model: nn.Module, chunk: bool = False, opset: int = DEFAULT_OPSET) -> Any:
    """The graph as an ``onnx.ModelProto`` with its metadata."""
    return finish_proto(onnx_bytes(model, chunk, opset), _metadata(model, chunk))


def add_metadata(proto: Any, metadata: dict[str, str]) -> Any:
    """Set string metadata on an ``onnx.ModelProto`` (replacing keys it has); returns it."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def finish_proto(graph: bytes, metadata: dict[str, str]) -> Any:
    """A serialised graph as a checked ``onnx.ModelProto`` with ``metadata``."""
    import onnx
    from onnx import helper

    proto = add_metadata(onnx.load_from_string(graph), metadata)
    # The oldest IR version the opsets allow: newer onnx stamps versions older runtimes refuse.
    proto.ir_version = min(proto.ir_version, helper.find_min_ir_version_for(list(proto.opset_import),
                                                                            ignore_unknown=True))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def verify_onnx(model: nn.Module, graph: str | Path | bytes, frames: int = 40, seed: int = 0) -> float:
    """Max abs difference between onnxruntime and the torch model on ``frames`` random frames, enhanced
    frames and final state (the step graph frame by frame, the chunk graph in two chunks)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph),
                                providers=["CPUExecutionProvider"])
    chunk = sess.get_inputs()[0].name != FRAME_INPUT
    spec = torch.randn(1, N_FREQS, frames, 2, generator=torch.Generator().manual_seed(seed)) * 2.0
    with torch.inference_mode():
        ref, ref_state = model.forward_stateful(spec, model.init_state(1, device="cpu"))
    state = np.zeros(sum(t.numel() for t in ref_state.values()), np.float32)  # (S,)
    cuts = [0, frames // 3, frames] if chunk else list(range(frames + 1))
    outs = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        out, state = sess.run(None, {sess.get_inputs()[0].name: spec[:, :, a:b].numpy(), STATE_INPUT: state})
        outs.append(out)
    worst = float(np.abs(np.concatenate(outs, axis=2) - ref.numpy()).max())
    return max(worst, float(np.abs(state - pack_state(ref_state)).max()))


def save_verified(proto: Any, path: str | Path, verify: Callable[[bytes], float] | None) -> Path:
    """Write ``proto`` to ``path`` atomically after ``verify`` (its max abs difference from the torch
    model; skipped without onnxruntime) is within :data:`VERIFY_TOLERANCE`, else :class:`ExportError`."""
    import onnx

    path = Path(path)
    try:
        err = verify(proto.SerializeToString()) if verify is not None else 0.0
    except ImportError:
        err = 0.0  # no onnxruntime: nothing to check with
    if not err <= VERIFY_TOLERANCE:
        raise ExportError(f"{path}: the exported graph differs from the torch model by {err:.2e} "
                          f"(> {VERIFY_TOLERANCE:g})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    try:
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, verify: bool = True,
                chunk: bool = False) -> Path:
    """Export ``model``'s streaming step (or, with ``chunk``, the chunk graph) to ``path``; ``verify``:
    with onnxruntime installed, raise :class:`ExportError` unless :func:`verify_onnx` is within 1e-4."""
    model = model.cpu().eval()
    return save_verified(build_onnx(model, chunk, opset), path,
                         (lambda graph: verify_onnx(model, graph)) if verify else None)
